"""The synthetic shapes world a tiny VLE is trained and evaluated on: scenes, ground truth and language tasks.

>>> import numpy as np
>>> from vle.shapes import make_scene, make_vqa
>>> scene = make_scene(0)
>>> example = make_vqa(scene, np.random.default_rng(0))
>>> example.answer in ANSWERS
True
"""

from .tasks import (ANSWERS, MPC_CLASSES, NEGATIVE_KINDS, NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, VCR_FAMILIES,
                    VQA_FAMILIES, Caption, Mention, VQAExample, caption_holds, fact_tokens, fact_truth, make_caption,
                    make_mpc, make_negative_caption, make_pbc, make_vcr, make_vqa, parse_caption, render_tokens,
                    vcr_metadata, vqa_dataset, world_corpus)
from .world import COLORS, SHAPES, SIZE_PX, SIZES, Scene, ShapeObject, make_scene, object_patches, patch_coverage

__all__ = [
    "ANSWERS", "COLORS", "MPC_CLASSES", "NEGATIVE_KINDS", "NONRELATIONAL_FAMILIES", "RELATIONAL_FAMILIES", "SHAPES",
    "SIZES", "SIZE_PX", "VCR_FAMILIES", "VQA_FAMILIES", "Caption", "Mention", "Scene", "ShapeObject", "VQAExample",
    "caption_holds", "fact_tokens", "fact_truth", "make_caption", "make_mpc", "make_negative_caption", "make_pbc",
    "make_scene", "make_vcr", "make_vqa", "object_patches", "parse_caption", "patch_coverage", "render_tokens",
    "vcr_metadata", "vqa_dataset", "world_corpus",
]
