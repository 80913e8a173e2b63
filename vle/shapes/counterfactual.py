"""Counterfactual scenes: the scene graph edited (an object removed, moved or recoloured) and the scene re-rendered,
and a VQA question re-answered on the edited scene.

An edited scene keeps its seed, so ``world._render`` draws the same clutter and pixel noise: every other object keeps
its pixels exactly, and a removed object reveals the background and clutter that were under it. Objects are
numbered by position (``scene.objects[i].index == i``), after a removal too.

>>> from vle.shapes.world import make_scene
>>> from vle.shapes.tasks import make_vqa
>>> import numpy as np
>>> scene = make_scene(3)
>>> question = make_vqa(scene, np.random.default_rng(0), family="shape")
>>> question.question, question.answer, reanswer(scene, question) == question
('what shape is the yellow object ?', 'square', True)
>>> print(reanswer(remove_object(scene, question.subject), question))  # the yellow object is gone
None
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import InputError, check_int, check_number
from .tasks_common import OPPOSITE, clear_extreme, clear_relations, ranked_by_distance
from .tasks_vqa import VQA_FAMILIES, VQAExample
from .world import (COLORS, GAP_PX, MARGIN_PX, SHAPES, SIZE_PX, SIZES, Scene, ShapeObject, _apart, _shape_mask,
                    _tight_box)

BOX_SLACK_PX = 2  # object_at: a click this close outside an object's box still picks it


# --- edits ------------------------------------------------------------------------------------------------------

def _check_index(scene: Scene, index) -> int:
    count = len(scene.objects)
    if count == 0:
        raise InputError("the scene has no objects to edit")
    return check_int(index, f"object index (the scene has {count} objects, 0..{count - 1})", low=0, high=count - 1)


def _renumbered(scene: Scene, objects) -> Scene:
    return replace(scene, objects=tuple(replace(o, index=i) for i, o in enumerate(objects)))


def remove_object(scene: Scene, index: int) -> Scene:
    """The scene without object ``index``; the others keep their pixels and are renumbered by position."""
    index = _check_index(scene, index)
    return _renumbered(scene, [o for o in scene.objects if o.index != index])


def move_object(scene: Scene, index: int, center: tuple[int, int]) -> Scene:
    """The scene with object ``index`` centred at ``center`` (x, y) in pixels; refused where its footprint would
    leave the image margin or come closer than ``GAP_PX`` to another object."""
    index = _check_index(scene, index)
    if not isinstance(center, (tuple, list)) or len(center) != 2:
        raise InputError(f"center must be (x, y) in pixels, got {center!r}")
    center = (check_int(center[0], "center x"), check_int(center[1], "center y"))
    obj = scene.objects[index]
    extent = SIZE_PX[obj.size]
    low, high = MARGIN_PX + extent // 2, scene.image_size - MARGIN_PX - (extent - extent // 2)
    if not (low <= center[0] <= high and low <= center[1] <= high):
        raise InputError(f"the {obj.size} {obj.color} {obj.shape} centred at {center} would leave the image: its "
                         f"centre must lie within {low}..{high} on both axes")
    for other in scene.objects:
        if other.index != index and not _apart(center, extent, other.center, SIZE_PX[other.size]):
            raise InputError(f"the {obj.color} {obj.shape} centred at {center} would touch the {other.color} "
                             f"{other.shape} (object {other.index}): objects keep {GAP_PX} px apart; choose a "
                             "free spot")
    mask = _shape_mask(obj.shape, center, extent, scene.image_size)
    moved = replace(obj, center=center, box=_tight_box(mask), mask=mask)
    return replace(scene, objects=tuple(moved if o.index == index else o for o in scene.objects))


def recolor_object(scene: Scene, index: int, color: str) -> Scene:
    """The scene with object ``index`` painted ``color``; colours stay unique within a scene."""
    index = _check_index(scene, index)
    if color not in COLORS:
        raise InputError(f"unknown colour {color!r}: choose one of {', '.join(COLORS)}")
    taken = {o.color: o.index for o in scene.objects if o.index != index}
    if color in taken:
        free = [c for c in COLORS if c not in taken]
        raise InputError(f"object {taken[color]} is already {color} and colours are unique within a scene: choose "
                         f"one of {', '.join(free)}")
    recolored = replace(scene.objects[index], color=color)
    return replace(scene, objects=tuple(recolored if o.index == index else o for o in scene.objects))


def object_at(scene: Scene, x: float, y: float) -> int | None:
    """The object whose mask holds pixel (x, y); else the one whose box, grown by ``BOX_SLACK_PX``, holds it (the
    nearest centre if several do); else None."""
    x, y = check_number(x, "x"), check_number(y, "y")
    col, row = int(x // 1), int(y // 1)
    if 0 <= row < scene.image_size and 0 <= col < scene.image_size:
        for o in scene.objects:
            if o.mask[row, col]:
                return o.index
    near = [o for o in scene.objects if o.box[0] - BOX_SLACK_PX <= x < o.box[2] + BOX_SLACK_PX
            and o.box[1] - BOX_SLACK_PX <= y < o.box[3] + BOX_SLACK_PX]
    if not near:
        return None
    return min(near, key=lambda o: (o.center[0] - x) ** 2 + (o.center[1] - y) ** 2).index


# --- questions re-asked of an edited scene ------------------------------------------------------------------------

_DESCRIPTION = r"the (?:(?:small|large) )?(?:(?:{colors}) )?(?:{shapes}|object)".format(
    colors="|".join(COLORS), shapes="|".join(SHAPES))
_EXTREME = re.compile(rf"^what (shape|color) is the object (nearest to|farthest from) ({_DESCRIPTION}) \?$")
_EXTREME_FAMILY = {("shape", "nearest to"): "nearest", ("shape", "farthest from"): "farthest",
                   ("color", "nearest to"): "nearest_color", ("color", "farthest from"): "farthest_color"}
_TEMPLATES: dict[str, re.Pattern] = {
    "color": re.compile(rf"^what color is ({_DESCRIPTION}) \?$"),
    "shape": re.compile(rf"^what shape is ({_DESCRIPTION}) \?$"),
    "size": re.compile(rf"^what size is ({_DESCRIPTION}) \?$"),
    "exists": re.compile(rf"^is there an? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) \?$"),
    "count": re.compile(rf"^how many (?:({'|'.join(SHAPES)})s|({'|'.join(SIZES)}) objects) are there \?$"),
    "left_of": re.compile(rf"^is ({_DESCRIPTION}) (left of) ({_DESCRIPTION}) \?$"),
    "above": re.compile(rf"^is ({_DESCRIPTION}) (above) ({_DESCRIPTION}) \?$"),
    "nearest": _EXTREME, "farthest": _EXTREME, "nearest_color": _EXTREME,
    "same_shape": re.compile(rf"^how many other objects have the same shape as ({_DESCRIPTION}) \?$"),
}


def _attributes(description: str) -> dict[str, str]:
    """'the large red circle' -> {'size': 'large', 'color': 'red', 'shape': 'circle'} ('object' names no shape)."""
    attrs = {}
    for word in description.split()[1:]:
        for name, values in (("size", SIZES), ("color", COLORS), ("shape", SHAPES)):
            if word in values:
                attrs[name] = word
    return attrs


def _the_one(scene: Scene, description: str) -> ShapeObject | None:
    """The one object a description names, or None when none or several match."""
    attrs = _attributes(description)
    found = [o for o in scene.objects if all(getattr(o, a) == v for a, v in attrs.items())]
    return found[0] if len(found) == 1 else None


def reanswer(scene: Scene, example: VQAExample) -> VQAExample | None:
    """``example``'s question asked of ``scene``: answer, evidence and subject recomputed from its scene graph. None
    when the question no longer applies (an object it names is gone or no longer unique, or a relation or extreme is
    now within the tie margin)."""
    if example.family not in _TEMPLATES:
        raise InputError(f"unknown VQA family {example.family!r}: one of {', '.join(VQA_FAMILIES)}")
    match = _TEMPLATES[example.family].match(example.question)
    if match is None:
        raise InputError(f"{example.question!r} is not a {example.family} question of the shapes-world templates")
    parts = match.groups()
    if match.re is _EXTREME and _EXTREME_FAMILY[parts[:2]] != example.family:
        raise InputError(f"{example.question!r} is a {_EXTREME_FAMILY[parts[:2]]} question, not {example.family}")
    answered = _ANSWERERS[example.family](scene, *parts)
    if answered is None:
        return None
    answer, evidence, subject = answered
    return replace(example, answer=answer, evidence=tuple(sorted(evidence)), subject=subject)


def _attribute_of(attribute: str):
    def answer(scene, description):
        obj = _the_one(scene, description)
        return None if obj is None else (getattr(obj, attribute), [obj.index], obj.index)
    return answer


def _exists(scene, color, shape):
    for o in scene.objects:
        if o.color == color and o.shape == shape:
            return "yes", [o.index], None
    return "no", [o.index for o in scene.objects if o.color == color or o.shape == shape], None


def _count(scene, shape, size):
    counted = [o.index for o in scene.objects if (o.shape == shape if shape else o.size == size)]
    return str(len(counted)), counted, None


def _relation(scene, first, rel, second):
    a, b = _the_one(scene, first), _the_one(scene, second)
    if a is None or b is None:
        return None
    clear = clear_relations(a, b)
    if rel in clear:
        return "yes", [a.index, b.index], None
    if OPPOSITE[rel] in clear:
        return "no", [a.index, b.index], None
    return None  # within the tie margin: the question is never asked of such a pair


def _extreme(scene, asked, which, description):
    ref = _the_one(scene, description)
    if ref is None:
        return None
    target = clear_extreme(ranked_by_distance(scene, ref), ref, last=which == "farthest from")
    return None if target is None else (getattr(target, asked), [ref.index, target.index], target.index)


def _same_shape(scene, description):
    ref = _the_one(scene, description)
    if ref is None:
        return None
    same = [o.index for o in scene.objects if o.shape == ref.shape and o.index != ref.index]
    return str(len(same)), [ref.index, *same], None


_ANSWERERS = {"color": _attribute_of("color"), "shape": _attribute_of("shape"), "size": _attribute_of("size"),
              "exists": _exists, "count": _count, "left_of": _relation, "above": _relation, "nearest": _extreme,
              "farthest": _extreme, "nearest_color": _extreme, "same_shape": _same_shape}
