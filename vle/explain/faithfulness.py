"""Perturbation curves (Chefer et al. 2021) on any example: remove image patches (pixels set to the image's median
colour, ``inputs.background_fill``) or text tokens (dropped from the attention mask; special tokens stay) in order of
relevance, most relevant first (``pos``) or least relevant first (``neg``), at fractions 0, 0.1, ..., 1; or start
from everything hidden and insert the most relevant first (``ins``, the insertion curve of Petsiuk et al. 2018). As
there, insertion starts from a blurred image (a Gaussian of half a patch's width, ``blurred``), not from the median
colour, and from the text with its pieces replaced by padding (still attended), not dropped: with deletion's fill,
insertion would be least-relevant-first deletion read backwards.
Each curve tracks the explained target's probability and whether the model still answers correctly. The area under
each curve (``vle.metrics.curve_auc``): lower ``pos`` and higher ``neg`` and ``ins`` AUC mean a more faithful method.
Localisation against evidence masks is ``vle.metrics.localisation``; the shapes-world benchmark that feeds both is
``vle.shapes.faithfulness``.

Example:
    >>> import numpy as np
    >>> from vle.testing import tiny_vqa_pipeline
    >>> from vle.explain import ExplainInputs, VQAAnswer
    >>> pipe = tiny_vqa_pipeline()
    >>> inputs = ExplainInputs.build(pipe.processor, np.zeros((32, 32, 3), np.uint8), "what color is the circle ?")
    >>> curve = perturbation_curve(pipe.model, inputs, VQAAnswer(0), np.arange(16.0), "image", "ins")
    >>> curve["probability"].shape, 0.0 <= auc(curve) <= 1.0
    ((11,), True)
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import curve_auc
from .inputs import ExplainInputs, background_fill
from .wrapper import TargetForward

FRACTIONS = np.linspace(0.0, 1.0, 11)
ORDERS = ("pos", "neg", "ins")  # deletion most relevant first, least relevant first; insertion most relevant first


def removal_order(scores: np.ndarray, order: str) -> np.ndarray:
    """Indices, most relevant first (``pos``, ``ins``) or least relevant first (``neg``); ties keep index order."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
    return np.argsort(scores if order == "neg" else -scores, kind="stable")


def _removed(ranked: np.ndarray, fraction: float, order: str) -> np.ndarray:
    """The positions gone at ``fraction``: deletion has removed its first share of ``ranked``; insertion has put its
    first share back, so everything after it is still gone."""
    count = int(round(fraction * len(ranked)))
    return ranked[count:] if order == "ins" else ranked[:count]


def perturbation_curve(model, inputs: ExplainInputs, target, scores: np.ndarray, modality: str, order: str,
                       truth: int | None = None, fractions=FRACTIONS) -> dict:
    """Target probability and correctness (argmax == ``truth``) after removing (``pos``, ``neg``) or inserting
    (``ins``) growing fractions of ``modality`` (``image``: the patch grid, ``scores`` (patches,); ``text``: the
    non-special tokens of the explained sequence (a VCR item: the target's choice), ``scores`` (text_len,), over its
    unpadded tokens as ``Explanation.token_scores`` or over every position)."""
    return perturbation_curves(model, inputs, target, scores, modality, (order,), truth, fractions)[order]


def perturbation_curves(model, inputs: ExplainInputs, target, scores: np.ndarray, modality: str, orders=ORDERS,
                        truth: int | None = None, fractions=FRACTIONS, cache: dict | None = None) -> dict:
    """``{order: perturbation_curve}`` for several orders, each distinct perturbed input run once (the deletion
    curves share their ends: nothing and everything removed). ``cache``, a
    dict kept for one example (``inputs``) and handed to every method's curves, also runs an input once across
    methods (they often agree on the few most or least relevant tokens)."""
    positions, ranked_scores = _positions(model, inputs, target, scores, modality)
    gone = np.zeros((len(orders), len(fractions), len(positions)), dtype=bool)  # (orders, fractions, positions)
    for k, order in enumerate(orders):
        ranked = removal_order(ranked_scores, order)
        for row, fraction in enumerate(fractions):
            gone[k, row, _removed(ranked, fraction, order)] = True
    # each row's fill: deletion's (False) or insertion's (True); a row is run once per fill
    inserting = np.repeat([order == "ins" for order in orders], len(fractions))[:, None]
    unique, inverse = np.unique(np.concatenate([inserting, gone.reshape(-1, len(positions))], axis=1), axis=0,
                                return_inverse=True)
    known = {} if cache is None else cache
    keys = [(target, modality, row.tobytes()) for row in unique]
    todo = [i for i, key in enumerate(keys) if key not in known]
    forward = TargetForward(model, inputs, target)
    with torch.no_grad():  # in chunks of one curve's length: the memory of one curve's batch, as for a single order
        for start in range(0, len(todo), len(fractions)):
            for insert in (False, True):
                chunk = [i for i in todo[start:start + len(fractions)] if bool(unique[i, 0]) == insert]
                if not chunk:
                    continue
                call = _perturbed(model, inputs, target, positions, unique[chunk, 1:], modality, insert)
                for i, logits in zip(chunk, forward.logits(**call)):
                    known[keys[i]] = logits
    logits = torch.stack([known[key] for key in keys])
    logits = logits[torch.as_tensor(inverse.reshape(-1), device=logits.device)]
    probability = target.probability(logits).cpu().numpy().reshape(len(orders), len(fractions))
    correct = (logits.argmax(-1) == truth).float().cpu().numpy().reshape(len(orders), len(fractions)) \
        if truth is not None else np.full((len(orders), len(fractions)), np.nan)
    return {order: {"fractions": np.asarray(fractions), "probability": probability[k], "correct": correct[k]}
            for k, order in enumerate(orders)}


def _positions(model, inputs: ExplainInputs, target, scores, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(the positions a curve removes, their scores): every patch, or the explained sequence's non-special tokens."""
    if modality == "image":
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        return np.arange(model.config.patch_grid ** 2), scores
    if modality == "text":
        ids, shown = _sequence(inputs, target)
        content = np.array([i for i, token in enumerate(ids) if shown[i] and token not in inputs.special_ids], int)
        return content, _token_scores(scores, shown)[content]
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def blurred(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """``pixel_values`` (batch, 3, H, W) under a Gaussian blur of standard deviation ``sigma`` pixels (edges
    replicated): insertion's starting image."""
    radius = max(1, int(round(2 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=pixel_values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(pixel_values.dtype)
    channels = pixel_values.shape[1]
    out = torch.nn.functional.pad(pixel_values, (radius,) * 4, mode="replicate")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _perturbed(model, inputs: ExplainInputs, target, positions, gone: np.ndarray, modality: str,
               insert: bool = False) -> dict:
    """``TargetForward`` arguments for a batch of masks ``gone`` (batch, positions) of what is hidden: removed
    (deletion) or, for insertion, blurred (image) or replaced by padding (text)."""
    if modality == "image":
        grid, patch = model.config.patch_grid, model.config.patch_size
        pixel_values = inputs.model_inputs["pixel_values"]
        mask = torch.from_numpy(gone.reshape(-1, 1, grid, grid)).to(pixel_values.device)
        mask = mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)  # (batch, 1, H, W)
        fill = blurred(pixel_values, patch / 2) if insert else background_fill(pixel_values)
        return dict(pixel_values=torch.where(mask, fill, pixel_values))
    ids = inputs.model_inputs["input_ids"]
    if insert:
        pad_id = model.config.text_config.pad_token_id or 0
        batch = ids.expand(len(gone), *ids.shape[1:]).clone()  # (batch, [choices,] text_len)
        rows = batch[:, target.sequences[0]] if inputs.is_vcr else batch
        for row, hidden in enumerate(gone):
            rows[row, positions[hidden]] = pad_id
        return dict(input_ids=batch)
    keep = torch.ones(len(gone), ids.shape[-1], device=ids.device)  # (batch, text_len)
    for row, removed in enumerate(gone):
        keep[row, positions[removed]] = 0.0
    return dict(text_keep=keep)


def _sequence(inputs: ExplainInputs, target) -> tuple[list[int], np.ndarray]:
    """The token ids of the explained sequence (a VCR item: the target's choice) and which of them are not padding."""
    ids, mask = inputs.model_inputs["input_ids"][0], inputs.model_inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask[0]
    if inputs.is_vcr:
        ids, mask = ids[target.sequences[0]], mask[target.sequences[0]]
    return ids.tolist(), mask.bool().cpu().numpy()


def _token_scores(scores, shown: np.ndarray) -> np.ndarray:
    """``scores`` over every position of the sequence, from scores over its unpadded tokens or over every position."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) == len(shown):
        return scores
    if len(scores) != shown.sum():
        raise ValueError(f"got {len(scores)} token scores for a text of {int(shown.sum())} tokens "
                         f"({len(shown)} with padding): give one score per token")
    full = np.zeros(len(shown))
    full[shown] = scores
    return full


def auc(curve: dict, key: str = "probability") -> float:
    """The area under a ``perturbation_curve`` of ``key`` (the probability, or ``correct``)."""
    return curve_auc(curve["fractions"], curve[key])
