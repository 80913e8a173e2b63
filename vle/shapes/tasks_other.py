"""Captions and hard negatives (ITM), referring phrases (PBC) and masked-object targets (MPC) over scenes.

A caption is one object ("a large red circle") or two objects and a relation ("a red circle left of a blue
square"). Every object mention names its colour, so it refers to at most one object of the scene.

>>> import numpy as np
>>> from vle.shapes.world import make_scene
>>> scene, rng = make_scene(3), np.random.default_rng(0)
>>> text, evidence = make_caption(scene, rng)
>>> neg_text, neg_evidence, kind = make_negative_caption(scene, rng)
>>> caption_holds(scene, neg_text), kind in NEGATIVE_KINDS
(False, True)
>>> phrase, index, target = make_pbc(scene, rng)
>>> bool(target.any())
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .tasks_common import (OPPOSITE, RELATIONS, choice, clear_relations, matches, phrase, relation_margin, shuffled,
                           unique_descriptions, with_article)
from .world import COLORS, SHAPES, Scene, object_patches

NEGATIVE_KINDS: tuple[str, ...] = ("color", "shape", "relation")
MPC_CLASSES: tuple[str, ...] = SHAPES


@dataclass(frozen=True)
class Mention:
    """'a [size] color shape'; ``size`` may be left out."""

    color: str
    shape: str
    size: str | None = None

    def text(self) -> str:
        return with_article(" ".join(w for w in (self.size, self.color, self.shape) if w))


@dataclass(frozen=True)
class Caption:
    first: Mention
    relation: str | None = None  # a key of RELATIONS
    second: Mention | None = None

    def text(self) -> str:
        if self.relation is None:
            return self.first.text()
        return f"{self.first.text()} {self.relation} {self.second.text()}"


def parse_caption(text: str) -> Caption:
    """Inverse of ``Caption.text`` for captions built here."""
    words = text.split()
    for rel in RELATIONS:
        rel_words = rel.split()
        for i in range(len(words) - len(rel_words) + 1):
            if words[i:i + len(rel_words)] == rel_words:
                return Caption(_parse_mention(words[:i]), rel, _parse_mention(words[i + len(rel_words):]))
    return Caption(_parse_mention(words))


def _parse_mention(words: list[str]) -> Mention:
    body = words[1:]  # drop the article
    return Mention(color=body[-2], shape=body[-1], size=body[0] if len(body) == 3 else None)


def caption_holds(scene: Scene, caption: Caption | str) -> bool:
    """Whether the scene graph makes the caption true (relations compare centres strictly)."""
    cap = parse_caption(caption) if isinstance(caption, str) else caption
    firsts = [o for o in scene.objects if matches(o, color=cap.first.color, shape=cap.first.shape, size=cap.first.size)]
    if cap.relation is None:
        return bool(firsts)
    seconds = [o for o in scene.objects
               if matches(o, color=cap.second.color, shape=cap.second.shape, size=cap.second.size)]
    return any(a.index != b.index and relation_margin(a, cap.relation, b) > 0 for a in firsts for b in seconds)


def _mention(obj, rng: np.random.Generator) -> Mention:
    return Mention(obj.color, obj.shape, obj.size if rng.random() < 0.5 else None)


def _true_caption(scene: Scene, rng: np.random.Generator, relational: bool) -> tuple[Caption, tuple[int, ...]]:
    # Relations are only stated when they hold by TIE_PX, so flipping one later gives a clearly false caption.
    if relational:
        triples = [(a, rel, b) for a in scene.objects for b in scene.objects for rel in clear_relations(a, b)]
        if triples:
            a, rel, b = choice(rng, triples)
            return Caption(_mention(a, rng), rel, _mention(b, rng)), (a.index, b.index)
    obj = choice(rng, scene.objects)
    return Caption(_mention(obj, rng)), (obj.index,)


def make_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, tuple[int, ...]]:
    """A true caption and the indices of the objects it mentions; relational 60% of the time."""
    caption, evidence = _true_caption(scene, rng, relational=rng.random() < 0.6)
    return caption.text(), evidence


def _swaps(caption: Caption, kind: str, scene: Scene, rng: np.random.Generator) -> list[Caption]:
    """Every caption that differs from ``caption`` in exactly one ``kind`` word, hardest (scene colours) first."""
    if kind == "relation":
        return [replace(caption, relation=OPPOSITE[caption.relation])] if caption.relation else []
    slots = ["first", "second"] if caption.relation else ["first"]
    out = []
    for slot in shuffled(rng, slots):
        mention = getattr(caption, slot)
        if kind == "color":
            taken = {caption.first.color, caption.second.color if caption.second else None}
            in_scene = {o.color for o in scene.objects}
            # Colours seen elsewhere in the scene make harder negatives than colours absent from it.
            values = [c for c in shuffled(rng, list(COLORS)) if c not in taken]
            values.sort(key=lambda c: c not in in_scene)
            out += [replace(caption, **{slot: replace(mention, color=c)}) for c in values]
        else:
            out += [replace(caption, **{slot: replace(mention, shape=s)})
                    for s in shuffled(rng, list(SHAPES)) if s != mention.shape]
    return out


def make_negative_caption(scene: Scene, rng: np.random.Generator,
                          kind: str | None = None) -> tuple[str, tuple[int, ...], str]:
    """A hard negative: a true caption with exactly one colour, shape or relation word swapped, verified false.

    Returns (text, evidence of the original caption, kind). A requested ``kind`` that no caption of this scene
    can be falsified with (e.g. a colour swap when every object is a small circle) falls back to another kind.
    """
    requested = kind or choice(rng, NEGATIVE_KINDS)
    for kind in [requested, *(k for k in NEGATIVE_KINDS if k != requested)]:
        for _ in range(10):
            caption, evidence = _true_caption(scene, rng, relational=kind == "relation" or rng.random() < 0.6)
            for candidate in _swaps(caption, kind, scene, rng):
                if not caption_holds(scene, candidate):
                    return candidate.text(), evidence, kind
    raise AssertionError("unreachable: a shape swap of a one-object caption is always false")


def make_pbc(scene: Scene, rng: np.random.Generator, patch_size: int = 16) -> tuple[str, int, np.ndarray]:
    """A phrase naming one object uniquely ('the red circle', 'the large blue object', 'the triangle'),
    its index, and its patches: (grid, grid) bool."""
    obj = choice(rng, scene.objects)
    text = phrase(obj, choice(rng, unique_descriptions(scene, obj)))
    return text, obj.index, object_patches(scene, obj.index, patch_size)


def make_mpc(scene: Scene, rng: np.random.Generator, patch_size: int = 16) -> tuple[int, list[int], int]:
    """An object to hide: (index, its row-major patch ids, its shape class id in ``MPC_CLASSES``)."""
    obj = choice(rng, scene.objects)
    patch_ids = [int(i) for i in np.flatnonzero(object_patches(scene, obj.index, patch_size))]
    return obj.index, patch_ids, MPC_CLASSES.index(obj.shape)

