"""Closed-vocabulary VQA over shapes-world scenes, Sort-of-CLEVR style (non-relational and relational families).

Each family is ``(scene, rng) -> VQAExample | None`` (None: the family does not apply to this scene). Answers are
single words from ``ANSWERS``; ``evidence`` lists the object indices the answer depends on, and ``subject`` is the one
object whose colour, shape or size the answer is (None for yes / no and counting questions).

>>> import numpy as np
>>> from vle.shapes.world import make_scene
>>> ex = make_vqa(make_scene(3), np.random.default_rng(0), family="shape")
>>> ex.question, ex.answer in ANSWERS, ex.relational
('what shape is the yellow object ?', True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .tasks_common import (choice, clear_extreme, clear_relations, phrase, plural, ranked_by_distance, shuffled,
                           unique_descriptions)
from .world import COLORS, SHAPES, SIZES, Scene, make_scene


@dataclass(frozen=True)
class VQAExample:
    question: str
    answer: str
    family: str
    relational: bool
    evidence: tuple[int, ...]
    subject: int | None = None


MAX_OBJECTS = len(COLORS)
ANSWERS: tuple[str, ...] = tuple(sorted({*COLORS, *SHAPES, *SIZES, "yes", "no", *map(str, range(MAX_OBJECTS + 1))}))


def _example(question: str, answer: str, family: str, evidence, subject: int | None = None) -> VQAExample:
    return VQAExample(question, answer, family, family in RELATIONAL_FAMILIES, tuple(sorted(evidence)), subject)


# --- non-relational ---------------------------------------------------------------------------------------------

def color_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'what color is the circle ?' -- only for objects that shape (or size + shape) singles out."""
    options = [(o, min(d, key=len)) for o in scene.objects if (d := unique_descriptions(scene, o, avoid="color"))]
    if not options:
        return None
    obj, attrs = choice(rng, options)
    return _example(f"what color is {phrase(obj, attrs)} ?", obj.color, "color", [obj.index], obj.index)


def shape_question(scene: Scene, rng: np.random.Generator) -> VQAExample:
    """'what shape is the red object ?'"""
    obj = choice(rng, scene.objects)
    return _example(f"what shape is {phrase(obj, ('color',))} ?", obj.shape, "shape", [obj.index], obj.index)


def size_question(scene: Scene, rng: np.random.Generator) -> VQAExample:
    """'what size is the blue object ?' or 'what size is the blue square ?'"""
    obj = choice(rng, scene.objects)
    attrs = choice(rng, [("color",), ("color", "shape")])
    return _example(f"what size is {phrase(obj, attrs)} ?", obj.size, "size", [obj.index], obj.index)


def exists_question(scene: Scene, rng: np.random.Generator) -> VQAExample:
    """'is there a green square ?' -- yes and no equally likely; a "no" always shares colour or shape with the scene."""
    if rng.random() < 0.5:
        obj = choice(rng, scene.objects)
        return _example(f"is there a {obj.color} {obj.shape} ?", "yes", "exists", [obj.index])
    present = {(o.color, o.shape) for o in scene.objects}
    colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c in colors or s in shapes)]
    color, shape = choice(rng, absent)
    evidence = [o.index for o in scene.objects if o.color == color or o.shape == shape]
    return _example(f"is there a {color} {shape} ?", "no", "exists", evidence)


def count_question(scene: Scene, rng: np.random.Generator) -> VQAExample:
    """'how many triangles are there ?' or 'how many large objects are there ?'"""
    if rng.random() < 0.5:
        shape = choice(rng, SHAPES)
        counted = [o.index for o in scene.objects if o.shape == shape]
        question = f"how many {plural(shape)} are there ?"
    else:
        size = choice(rng, SIZES)
        counted = [o.index for o in scene.objects if o.size == size]
        question = f"how many {size} objects are there ?"
    return _example(question, str(len(counted)), "count", counted)


# --- relational -------------------------------------------------------------------------------------------------

def _axis_question(scene: Scene, rng: np.random.Generator, rel: str, family: str) -> VQAExample | None:
    # Pick the answer first so yes/no stay balanced, then orient a clearly separated pair to match it.
    pairs = [(a, b) for a in scene.objects for b in scene.objects if rel in clear_relations(a, b)]
    if not pairs:
        return None
    a, b = choice(rng, pairs)
    answer = "yes" if rng.random() < 0.5 else "no"
    if answer == "no":
        a, b = b, a
    question = f"is {phrase(a, ('color',))} {rel} {phrase(b, ('color',))} ?"
    return _example(question, answer, family, [a.index, b.index])


def left_of_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'is the red object left of the blue object ?' (by centre x)"""
    return _axis_question(scene, rng, "left of", "left_of")


def above_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'is the red object above the blue object ?' (by centre y; y grows downwards)"""
    return _axis_question(scene, rng, "above", "above")


def _extreme_question(scene: Scene, rng: np.random.Generator, farthest: bool, asked: str) -> VQAExample | None:
    options = []
    for ref in scene.objects:
        target = clear_extreme(ranked_by_distance(scene, ref), ref, last=farthest)
        if target is not None:
            options.append((ref, target))
    if not options:
        return None
    ref, target = choice(rng, options)
    if asked == "shape":
        family, ref_attrs = ("farthest" if farthest else "nearest"), ("color",)
    else:
        family, ref_attrs = "nearest_color", choice(rng, unique_descriptions(scene, ref))
    which = "farthest from" if farthest else "nearest to"
    question = f"what {asked} is the object {which} {phrase(ref, ref_attrs)} ?"
    return _example(question, getattr(target, asked), family, [ref.index, target.index], target.index)


def nearest_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'what shape is the object nearest to the red object ?'"""
    return _extreme_question(scene, rng, farthest=False, asked="shape")


def farthest_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'what shape is the object farthest from the red object ?'"""
    return _extreme_question(scene, rng, farthest=True, asked="shape")


def nearest_color_question(scene: Scene, rng: np.random.Generator) -> VQAExample | None:
    """'what color is the object nearest to the green square ?' (the reference named by any unique description)"""
    return _extreme_question(scene, rng, farthest=False, asked="color")


def same_shape_question(scene: Scene, rng: np.random.Generator) -> VQAExample:
    """'how many other objects have the same shape as the red object ?'"""
    ref = choice(rng, scene.objects)
    same = [o.index for o in scene.objects if o.shape == ref.shape and o.index != ref.index]
    question = f"how many other objects have the same shape as {phrase(ref, ('color',))} ?"
    return _example(question, str(len(same)), "same_shape", [ref.index, *same])


VQAFamily = Callable[[Scene, np.random.Generator], "VQAExample | None"]
NONRELATIONAL_FAMILIES: tuple[str, ...] = ("color", "shape", "size", "exists", "count")
RELATIONAL_FAMILIES: tuple[str, ...] = ("left_of", "above", "nearest", "farthest", "same_shape", "nearest_color")
VQA_FAMILIES: dict[str, VQAFamily] = {
    "color": color_question, "shape": shape_question, "size": size_question, "exists": exists_question,
    "count": count_question, "left_of": left_of_question, "above": above_question, "nearest": nearest_question,
    "farthest": farthest_question, "same_shape": same_shape_question, "nearest_color": nearest_color_question,
}


def make_vqa(scene: Scene, rng: np.random.Generator, family: str | None = None) -> VQAExample | None:
    """One example of ``family``, or of a uniformly drawn applicable family when ``family`` is None.

    Returns None only when a named family does not apply to this scene; shape/size/exists/count always apply.
    """
    if family is not None:
        return VQA_FAMILIES[family](scene, rng)
    # Drawing the family first (not the question) keeps families balanced; a random fallback order keeps the
    # occasional inapplicable draw from favouring any one family.
    for name in shuffled(rng, list(VQA_FAMILIES)):
        example = VQA_FAMILIES[name](scene, rng)
        if example is not None:
            return example
    raise AssertionError("shape_question always applies")


def vqa_dataset(start_seed: int, n_scenes: int, questions_per_scene: int = 4, image_size: int = 128,
                families: Sequence[str] | None = None) -> Iterator[tuple[int, VQAExample]]:
    """Yield (scene seed, example) pairs for scenes ``start_seed .. start_seed + n_scenes - 1``, deterministically.

    Rebuild the image with ``make_scene(seed, image_size)``. Questions within a scene are distinct when possible.

    >>> [(seed, ex.family) for seed, ex in vqa_dataset(0, 2, questions_per_scene=1)]
    [(0, 'shape'), (1, 'left_of')]
    """
    names = list(families) if families is not None else None
    for seed in range(start_seed, start_seed + n_scenes):
        scene = make_scene(seed, image_size)
        rng = np.random.default_rng([seed, 0x7A5])  # a task stream separate from the scene's own streams
        seen: set[str] = set()
        for _ in range(4 * questions_per_scene):
            if len(seen) == questions_per_scene:
                break
            example = make_vqa(scene, rng, choice(rng, names) if names else None)
            if example is not None and example.question not in seen:
                seen.add(example.question)
                yield seed, example
