"""Language tasks over shapes-world scenes, in one place: VQA, ITM captions, PBC, MPC, VCR, and a text corpus.

The tasks live in ``tasks_vqa`` (VQA), ``tasks_other`` (captions, negatives, PBC, MPC) and ``tasks_vcr`` (VCR);
this module re-exports them and adds ``world_corpus`` for training a tokenizer.

>>> lines = list(world_corpus(2))
>>> all(line == line.lower() and "  " not in line for line in lines)
True
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .tasks_other import (MPC_CLASSES, NEGATIVE_KINDS, Caption, Mention, caption_holds, make_caption, make_mpc,
                          make_negative_caption, make_pbc, parse_caption)
from .tasks_vcr import VCR_FAMILIES, fact_tokens, fact_truth, make_vcr, render_tokens, vcr_metadata
from .tasks_vqa import (ANSWERS, NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, VQA_FAMILIES, VQAExample, make_vqa,
                        vqa_dataset)
from .world import make_scene


def world_corpus(n_scenes: int, seed: int = 0) -> Iterator[str]:
    """Every kind of sentence the tasks produce, for ``n_scenes`` random scenes, one sentence per item.

    VCR tags are rendered as their objects' class names ('what color is circle ?'). Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_scenes):
        scene = make_scene(int(rng.integers(2**31 - 1)))
        for family in VQA_FAMILIES.values():
            example = family(scene, rng)
            if example is not None:
                yield example.question
                yield example.answer
        yield make_caption(scene, rng)[0]
        yield make_negative_caption(scene, rng)[0]
        yield make_pbc(scene, rng)[0]
        for family in VCR_FAMILIES:
            try:
                annotation, metadata = make_vcr(scene, rng, "scene.png", question_family=family)
            except ValueError:  # extreme / nearer need 4+ objects without near-ties
                continue
            names = metadata["names"]
            for tokens in [annotation["question"], *annotation["answer_choices"], *annotation["rationale_choices"]]:
                yield render_tokens(tokens, names)


__all__ = [
    "ANSWERS", "MPC_CLASSES", "NEGATIVE_KINDS", "NONRELATIONAL_FAMILIES", "RELATIONAL_FAMILIES", "VCR_FAMILIES",
    "VQA_FAMILIES", "Caption", "Mention", "VQAExample", "caption_holds", "fact_tokens", "fact_truth", "make_caption",
    "make_mpc", "make_negative_caption", "make_pbc", "make_vcr", "make_vqa", "parse_caption", "render_tokens",
    "vcr_metadata", "vqa_dataset", "world_corpus",
]
