"""The faithfulness benchmark's VCR table: Q->A items on held-out scenes (one per scene, ``make_vcr``), the VCR
model's chosen answer explained (``VCRChoice``) by every method that explains VCR choices, and scored as the VQA
answers are (``faithfulness_metrics.score``): image and text AUCs of the chosen choice's probability (text
perturbations remove tokens of the chosen choice's sequence only), and the pointing game and relevance mass against
the evidence objects: the objects tagged in the question and in the right answer (the item's evidence, whatever the
model chose, as a VQA question's evidence is).

>>> from vle.hub import resolve_model_path
>>> from vle.processing_vle import VLEProcessor
>>> processor = VLEProcessor.from_pretrained(resolve_model_path(DEFAULT_VCR_MODEL))
>>> scene, annotation, inputs = next(vcr_items(1_000_003, 1, processor, 16))
>>> tuple(inputs.model_inputs["input_ids"].shape[:2]), vcr_evidence(annotation) == sorted(vcr_evidence(annotation))
((1, 4), True)
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..explain.core import explain
from ..explain.inputs import ExplainInputs, forward
from ..explain.targets import VCRChoice
from ..vcr import build_vcr_inputs
from .data import VCR_MAX_LENGTH, ScenePool, normalize
from .faithfulness_metrics import guarded, score, scored_rows
from .tasks_vcr import make_vcr, tagged_objects

DEFAULT_VCR_MODEL = "vle-tiny-shapes-vcr-q2a"


def vcr_evidence(annotation: dict) -> list[int]:
    """The objects tagged in the question and in the right answer, sorted."""
    right = annotation["answer_choices"][annotation["answer_label"]]
    return sorted(set(tagged_objects(annotation["question"])) | set(tagged_objects(right)))


def vcr_items(seed: int, n: int, processor, patch_size: int, progress: bool = False):
    """(scene, annotation, batch-1 Q->A inputs) for held-out scenes ``seed .. seed+n-1``, one item per scene."""
    pool = ScenePool(seed, n, progress=progress)
    for i, scene in enumerate(pool.scenes):
        annotation, metadata = make_vcr(scene, np.random.default_rng([seed, i, 6]), f"shapes_{scene.seed}.png")
        batch = dict(build_vcr_inputs(processor, annotation, scene.pixels, metadata, task="q2a",
                                      max_length=VCR_MAX_LENGTH, patch_size=patch_size,
                                      pixel_values=normalize(pool.pixels[[i]])))
        longest = int(batch["attention_mask"].sum(-1).max())  # padding past the longest choice only costs time
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            batch[key] = batch[key][..., :longest]
        yield scene, annotation, ExplainInputs.from_batch(batch, processor)


def vcr_rows(seeds, n: int, methods, model, processor, cache, progress: bool = True) -> list[dict]:
    """One row per item (the layout of ``faithfulness_stats``): ``seed``, ``scene``, ``family``, ``answer`` (the
    right choice), ``predicted``, and each method's metrics."""
    if getattr(model, "task", None) != "vcr_q2a":
        raise InputError(f"the VCR table explains Q->A items: the VCR model must be a Q->A model (such as "
                         f"{DEFAULT_VCR_MODEL}), got a {type(model).__name__}")
    items = lambda seed, count: vcr_items(seed, count, processor, model.config.patch_size)  # noqa: E731
    return scored_rows(seeds, n, items, _vcr_row, methods, model, cache, "faithfulness (VCR)", progress)


def _vcr_row(model, inputs, scene, annotation, methods, seed) -> dict:
    with torch.no_grad():
        chosen = int(forward(model, inputs, VCRChoice(0)).logits[0].argmax())
    target, truth, evidence = VCRChoice(chosen), annotation["answer_label"], vcr_evidence(annotation)
    row = {"seed": seed, "scene": scene.seed, "family": annotation["question_family"], "answer": truth,
           "predicted": chosen, "evidence": evidence, "methods": {}, "failed": {}, "warned": {}}
    curves = {}  # perturbed inputs the methods share run once
    for name in methods:
        guarded(row, name, lambda name=name: score(model, inputs, target, truth, explain(model, inputs, target, name),
                                                   scene, evidence, curves))
    return row
