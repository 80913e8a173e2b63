"""VCR-style multiple choice (Q->A, QA->R) over shapes-world scenes, in the VCR annotation format.

Texts are token lists whose elements are words or object tags (a list of object indices), e.g.
``["what", "color", "is", [0], "?"]``. Each question has 4 answers and 4 rationales; the right rationale is a true
statement about the tagged objects and the wrong ones are false (by at least ``TIE_PX`` where spatial).

>>> import numpy as np
>>> from vle.shapes.world import make_scene
>>> annotation, metadata = make_vcr(make_scene(3), np.random.default_rng(0), "shapes_3.png")
>>> len(annotation["answer_choices"]), len(metadata["boxes"]) == len(annotation["objects"])
(4, True)
"""

from __future__ import annotations

from itertools import permutations
from pathlib import PurePosixPath
from typing import NamedTuple

import numpy as np

from .tasks_common import TIE_PX, choice, distance, relation_margin, shuffled, with_article
from .world import COLORS, SHAPES, SIZES, Scene

VCR_OBJECT_CLASS = "object"
VCR_FAMILIES: tuple[str, ...] = ("color", "shape", "extreme", "nearer")
# superlative -> the relation its winner has to every other object
EXTREMES: dict[str, str] = {"leftmost": "left of", "rightmost": "right of", "topmost": "above", "bottommost": "below"}

# A fact is a tuple: ("desc", i, size, color, shape) | ("rel", i, relation, j) | ("near", i, j, k).


class _Item(NamedTuple):
    question: list
    answers: list[list]  # the right answer first
    truth: tuple  # the fact the right rationale states
    lies: list[tuple]  # three false facts about the tagged objects
    involved: list  # the objects the item is about (its evidence)


def fact_tokens(fact: tuple) -> list:
    """The statement as VCR tokens, without 'because' or the final '.'."""
    kind, i = fact[0], [fact[1]]
    if kind == "desc":
        _, _, size, color, shape = fact
        return [i, "is", *with_article(f"{size} {color} {shape}").split()]
    if kind == "rel":
        return [i, "is", *fact[2].split(), [fact[3]]]
    return [i, "is", "nearer", "to", [fact[2]], "than", "to", [fact[3]]]


def fact_truth(scene: Scene, fact: tuple) -> float:
    """Signed confidence: > 0 true, < 0 false; spatial facts measure their margin in pixels."""
    objs = scene.objects
    if fact[0] == "desc":
        o = objs[fact[1]]
        return 1.0 if (o.size, o.color, o.shape) == fact[2:] else -1.0
    if fact[0] == "rel":
        return relation_margin(objs[fact[1]], fact[2], objs[fact[3]])
    a, j, k = objs[fact[1]], objs[fact[2]], objs[fact[3]]
    return distance(a, k) - distance(a, j)


def _because(fact: tuple) -> list:
    return ["because", *fact_tokens(fact), "."]


def _flipped_descriptions(obj, wrong_color: str, rng: np.random.Generator) -> list[tuple]:
    """Three false descriptions of ``obj``, each with one attribute changed."""
    other_size = next(s for s in SIZES if s != obj.size)
    other_shape = choice(rng, [s for s in SHAPES if s != obj.shape])
    return [("desc", obj.index, obj.size, wrong_color, obj.shape),
            ("desc", obj.index, obj.size, obj.color, other_shape),
            ("desc", obj.index, other_size, obj.color, obj.shape)]


def _color_item(scene: Scene, rng: np.random.Generator) -> _Item:
    obj = choice(rng, scene.objects)
    # Colours of other objects in the scene are the most plausible wrong answers.
    others = shuffled(rng, [o.color for o in scene.objects if o.index != obj.index])
    absent = shuffled(rng, [c for c in COLORS if c not in {o.color for o in scene.objects}])
    wrong = (others + absent)[:3]
    answers = [[[obj.index], "is", c, "."] for c in [obj.color, *wrong]]
    truth = ("desc", obj.index, obj.size, obj.color, obj.shape)
    lies = _flipped_descriptions(obj, wrong[0], rng)
    return _Item(["what", "color", "is", [obj.index], "?"], answers, truth, lies, [obj])


def _shape_item(scene: Scene, rng: np.random.Generator) -> _Item:
    obj = choice(rng, scene.objects)
    other_size = next(s for s in SIZES if s != obj.size)
    options = [(obj.size, obj.shape)] + [(obj.size, s) for s in SHAPES if s != obj.shape] + [(other_size, obj.shape)]
    answers = [[[obj.index], "is", *with_article(f"{size} {shape}").split(), "."] for size, shape in options]
    truth = ("desc", obj.index, obj.size, obj.color, obj.shape)
    wrong_color = choice(rng, [c for c in COLORS if c != obj.color])
    lies = _flipped_descriptions(obj, wrong_color, rng)
    return _Item(["what", "shape", "is", [obj.index], "?"], answers, truth, lies, [obj])


def _extreme_item(scene: Scene, rng: np.random.Generator) -> _Item | None:
    if len(scene.objects) < 4:
        return None
    options = []
    for word, rel in EXTREMES.items():
        for x in scene.objects:
            if all(relation_margin(x, rel, o) >= TIE_PX for o in scene.objects if o.index != x.index):
                options.append((word, rel, x))
    if not options:
        return None
    word, rel, x = choice(rng, options)
    rivals = shuffled(rng, [o for o in scene.objects if o.index != x.index])[:3]
    answers = [[[o.index], "is", "the", word, "object", "."] for o in [x, *rivals]]
    runner_up = min(rivals, key=lambda o: relation_margin(x, rel, o))
    truth = ("rel", x.index, rel, runner_up.index)
    lies = [("rel", o.index, rel, x.index) for o in rivals]  # x beats every rival, so these are all false
    return _Item(["which", "object", "is", "the", word, "?"], answers, truth, lies, [x, *rivals])


def _nearer_item(scene: Scene, rng: np.random.Generator) -> _Item | None:
    if len(scene.objects) < 4:
        return None
    triples = [(a, b, c) for a, b, c in permutations(scene.objects, 3)
               if b.index < c.index and abs(distance(a, b) - distance(a, c)) >= TIE_PX]
    if not triples:
        return None
    a, b, c = choice(rng, triples)
    near, far = (b, c) if distance(a, b) < distance(a, c) else (c, b)
    d = choice(rng, [o for o in scene.objects if o.index not in (a.index, b.index, c.index)])
    answers = [[[a.index], "is", "nearer", "to", [o.index], "."] for o in (near, far, d)]
    answers.append([[a.index], "is", "equally", "near", "to", [b.index], "and", [c.index], "."])
    truth = ("near", a.index, near.index, far.index)
    tagged = [a, b, c, d]
    lies = [("near", *(o.index for o in p)) for p in permutations(tagged, 3)]
    lies = [f for f in lies if fact_truth(scene, f) <= -TIE_PX]
    if len(lies) < 3:
        return None
    lies = sorted(shuffled(rng, lies), key=lambda f: f[1] != a.index)[:3]  # false claims about [a] tempt most
    question = ["is", [a.index], "nearer", "to", [b.index], "or", "to", [c.index], "?"]
    return _Item(question, answers, truth, lies, tagged)


_BUILDERS = {"color": _color_item, "shape": _shape_item, "extreme": _extreme_item, "nearer": _nearer_item}


def make_vcr(scene: Scene, rng: np.random.Generator, img_fn: str, metadata_fn: str | None = None,
             question_family: str | None = None) -> tuple[dict, dict]:
    """(annotation, metadata) for one VCR item; the right answer/rationale are at ``answer_label`` /
    ``rationale_label``. ``metadata_fn`` defaults to ``img_fn`` with a ``.json`` suffix, as in VCR.

    A named ``question_family`` that does not apply (extreme and nearer need 4 objects and no near-ties)
    raises ValueError; with None, a uniformly drawn applicable family is used.
    """
    names = [question_family] if question_family else shuffled(rng, list(VCR_FAMILIES))
    for family in names:
        item = _BUILDERS[family](scene, rng)
        if item is not None:
            break
    else:
        raise ValueError(f"question family {question_family!r} does not apply to scene {scene.seed}")
    question, answers, truth, lies, involved = item
    answer_order, rationale_order = rng.permutation(4), rng.permutation(4)
    rationales = [_because(f) for f in [truth, *lies]]
    annotation = {
        "img_fn": img_fn,
        "metadata_fn": metadata_fn or str(PurePosixPath(img_fn).with_suffix(".json")),
        # every object has one class name, as a VCR "person" would: the tag's box token, not the word, says which
        # object is meant (naming objects by shape would leak the answer to "what shape is [i] ?")
        "objects": [VCR_OBJECT_CLASS] * len(scene.objects),
        "question": question,
        "answer_choices": [answers[i] for i in answer_order],
        "rationale_choices": [rationales[i] for i in rationale_order],
        "answer_label": int(np.flatnonzero(answer_order == 0)[0]),
        "rationale_label": int(np.flatnonzero(rationale_order == 0)[0]),
        "question_family": family,
        "evidence": sorted(o.index for o in involved),
    }
    return annotation, vcr_metadata(scene)


def draw_vcr(scene: Scene, rng: np.random.Generator, img_fn: str, families: tuple[str, ...] | None = None
             ) -> tuple[dict, dict]:
    """``make_vcr`` of a family drawn uniformly from ``families`` (repeat one to draw it more often) where it applies
    to the scene, else of any applicable family (all of them with ``families`` None)."""
    family = None if families is None else families[int(rng.integers(len(families)))]
    try:
        return make_vcr(scene, rng, img_fn, question_family=family)
    except ValueError:  # the family does not apply to this scene
        return make_vcr(scene, rng, img_fn)


def tagged_objects(tokens: list) -> list[int]:
    """The object indices of a VCR token list's tags, in reading order: ``["is", [0], "left", "of", [2]]`` -> [0, 2]."""
    return [i for token in tokens if isinstance(token, list) for i in token]


def vcr_metadata(scene: Scene) -> dict:
    """VCR metadata: boxes as [x1, y1, x2, y2, score] in pixels, image size, object class names."""
    return {"boxes": [[*map(float, o.box), 1.0] for o in scene.objects], "width": scene.image_size,
            "height": scene.image_size, "names": [VCR_OBJECT_CLASS] * len(scene.objects)}


def render_tokens(tokens: list, names: list[str]) -> str:
    """Plain text with each tag replaced by its objects' names: ``[[0], "is", "red"]`` -> 'object is red'."""
    return " ".join(" and ".join(names[i] for i in t) if isinstance(t, list) else t for t in tokens)

