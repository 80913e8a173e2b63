"""Shared scene-graph helpers for the shapes-world language tasks: geometry with tie margins, and phrasing.

Language convention everywhere: lower case, words separated by single spaces, "?" / "." / "," as separate tokens.

>>> from vle.shapes.world import make_scene
>>> scene = make_scene(3)
>>> phrase(scene.objects[0], ("color", "shape"))
'the purple circle'
>>> is_unique(scene, scene.objects[0], ("color",))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .world import Scene, ShapeObject

TIE_PX = 4.0  # spatial comparisons closer than this are ambiguous, so tasks never ask about them

# Descriptions of one object, by the attributes they name. Colours are unique per scene, so any set with "color"
# names exactly one object; the others may or may not, see ``is_unique``.
DESCRIPTIONS: tuple[tuple[str, ...], ...] = (
    ("color",), ("shape",), ("color", "shape"), ("size", "color"), ("size", "shape"), ("size", "color", "shape"),
)

# relation words -> (axis, sign): "a <rel> b" holds when sign * (a[axis] - b[axis]) > 0. Image y grows downwards.
RELATIONS: dict[str, tuple[int, int]] = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def distance(a: ShapeObject, b: ShapeObject) -> float:
    return math.dist(a.center, b.center)


def relation_margin(a: ShapeObject, rel: str, b: ShapeObject) -> float:
    """Signed pixels by which "a <rel> b" holds (negative: it is false)."""
    axis, sign = RELATIONS[rel]
    return sign * (a.center[axis] - b.center[axis])


def clear_relations(a: ShapeObject, b: ShapeObject) -> list[str]:
    """Relations that hold for (a, b) by at least ``TIE_PX``."""
    return [rel for rel in RELATIONS if relation_margin(a, rel, b) >= TIE_PX]


def ranked_by_distance(scene: Scene, ref: ShapeObject) -> list[ShapeObject]:
    """Other objects, nearest first."""
    return sorted((o for o in scene.objects if o.index != ref.index), key=lambda o: distance(ref, o))


def clear_extreme(ranked: Sequence[ShapeObject], ref: ShapeObject, last: bool) -> ShapeObject | None:
    """The first (or last) of ``ranked``, or None when the runner-up is within ``TIE_PX`` of it."""
    order = list(reversed(ranked)) if last else list(ranked)
    if len(order) >= 2 and abs(distance(ref, order[0]) - distance(ref, order[1])) < TIE_PX:
        return None
    return order[0] if order else None


def matches(obj: ShapeObject, **attrs: str | None) -> bool:
    """Whether ``obj`` has every given attribute (``None`` values are ignored)."""
    return all(value is None or getattr(obj, name) == value for name, value in attrs.items())


def is_unique(scene: Scene, obj: ShapeObject, attrs: Sequence[str]) -> bool:
    values = {a: getattr(obj, a) for a in attrs}
    return sum(matches(o, **values) for o in scene.objects) == 1


def unique_descriptions(scene: Scene, obj: ShapeObject, avoid: str | None = None) -> list[tuple[str, ...]]:
    """Attribute sets from ``DESCRIPTIONS`` that single out ``obj`` and do not name ``avoid``."""
    return [d for d in DESCRIPTIONS if avoid not in d and is_unique(scene, obj, d)]


def words(obj: ShapeObject, attrs: Sequence[str]) -> str:
    """'large red circle', 'blue object' ... in canonical size-colour-shape order."""
    parts = [getattr(obj, a) for a in ("size", "color", "shape") if a in attrs]
    return " ".join(parts + ([] if "shape" in attrs else ["object"]))


def phrase(obj: ShapeObject, attrs: Sequence[str]) -> str:
    return f"the {words(obj, attrs)}"


def with_article(text: str) -> str:
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def plural(shape: str) -> str:
    return f"{shape}s"


def choice(rng: np.random.Generator, items: Sequence):
    """One element of a non-empty sequence (``rng.choice`` would turn tuples into arrays)."""
    return items[int(rng.integers(len(items)))]


def shuffled(rng: np.random.Generator, items: Sequence) -> list:
    return [items[i] for i in rng.permutation(len(items))]
