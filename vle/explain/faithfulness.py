"""Perturbation curves (Chefer et al. 2021) on any example: remove image patches (pixels set to the image's median
colour, ``inputs.background_fill``) or text tokens (dropped from the attention mask; special tokens stay) in order of
relevance, most relevant first (``pos``) or least relevant first (``neg``), at fractions 0, 0.1, ..., 1, and track the
explained target's probability and whether the model still answers correctly. The area under each curve
(``vle.metrics.curve_auc``): lower ``pos`` and higher ``neg`` AUC mean a more faithful method. Localisation against
evidence masks is ``vle.metrics.localisation``; the shapes-world benchmark that feeds both is
``vle.shapes.faithfulness``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import curve_auc
from .inputs import ExplainInputs, background_fill
from .wrapper import TargetForward

FRACTIONS = np.linspace(0.0, 1.0, 11)


def removal_order(scores: np.ndarray, order: str) -> np.ndarray:
    """Indices, most relevant first (``pos``) or least relevant first (``neg``); ties keep index order."""
    if order not in ("pos", "neg"):
        raise ValueError(f"order must be 'pos' or 'neg', got {order!r}")
    return np.argsort(-scores if order == "pos" else scores, kind="stable")


def perturbation_curve(model, inputs: ExplainInputs, target, scores: np.ndarray, modality: str, order: str,
                       truth: int | None = None, fractions=FRACTIONS) -> dict:
    """Target probability and correctness (argmax == ``truth``) after removing growing fractions of ``modality``
    (``image``: the patch grid, ``scores`` (patches,); ``text``: the non-special tokens, ``scores`` (text_len,))."""
    forward = TargetForward(model, inputs, target)
    if modality == "image":
        grid, patch = model.config.patch_grid, model.config.patch_size
        ranked = removal_order(np.asarray(scores).reshape(-1), order)
        fill = background_fill(inputs.model_inputs["pixel_values"])[0]  # (3, H, W)
        pixels = inputs.model_inputs["pixel_values"].repeat(len(fractions), 1, 1, 1)  # (fractions, 3, H, W)
        for row, fraction in enumerate(fractions):
            for index in ranked[: int(round(fraction * len(ranked)))]:
                r, c = divmod(int(index), grid)
                window = (slice(None), slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
                pixels[(row, *window)] = fill[window]
        call = dict(pixel_values=pixels)
    elif modality == "text":
        ids = inputs.model_inputs["input_ids"][0].tolist()
        content = np.array([i for i, token in enumerate(ids) if token not in inputs.special_ids])
        ranked = content[removal_order(np.asarray(scores)[content], order)]
        keep = torch.ones(len(fractions), len(ids), device=inputs.model_inputs["input_ids"].device)
        for row, fraction in enumerate(fractions):
            keep[row, ranked[: int(round(fraction * len(ranked)))]] = 0.0
        call = dict(text_keep=keep)
    else:
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    with torch.no_grad():
        logits = forward.logits(**call)
    probability = target.probability(logits).cpu().numpy()
    correct = (logits.argmax(-1) == truth).float().cpu().numpy() if truth is not None \
        else np.full(len(fractions), np.nan)
    return {"fractions": np.asarray(fractions), "probability": probability, "correct": correct}


def auc(curve: dict, key: str = "probability") -> float:
    """The area under a ``perturbation_curve`` of ``key`` (the probability, or ``correct``)."""
    return curve_auc(curve["fractions"], curve[key])
