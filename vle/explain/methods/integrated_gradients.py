"""Integrated gradients (Captum ``IntegratedGradients`` through ``EmbeddingForward``) on the token embeddings, the
patch embeddings and, for VCR items, the box tokens jointly: one path from a baseline (text pieces replaced by
padding, special tokens kept; a flat image of the input's median colour, ``background_fill``: the background in the
shapes world, so only objects differ from the baseline; the boxes of that blank image) to the input, ``n_steps``
points evaluated ``internal_batch_size`` at a time, so peak memory is bounded by the batch size, not by the step
count (``auto``: 8, or 2 for a wide model on the CPU, ``resolve_batch``). Every head, VCR included (each choice's
tokens are inputs; a contrast of two choices reads both). Signed; the scores of a piece, patch or box are its
attribution summed over channels, and the sum of all scores equals score(input) - score(baseline) up to the
``convergence_delta`` reported in the metadata. The weights get no gradients (only the path's activations do).

``precision="bfloat16"`` runs the path under bfloat16 autocast (matrix products in bfloat16, reductions and
normalisations in float32). The default, ``auto``, does so where it pays: on a device with bfloat16 matrix units (a CPU
with AVX512-BF16 or AMX, a GPU of compute capability 8 or more) for a model whose fusion hidden size is at least
``WIDE_FROM_HIDDEN``, and runs float32 everywhere else. On a wide model bfloat16 is much faster, with the same
completeness and the same ranking of patches and tokens; on the embedded model's 128-wide matrices it is slower, so
``auto`` keeps float32 there (docs/explanations.md has the measurements). The metadata names the precision used, and
the convergence delta shows what it cost.
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import IntegratedGradients as CaptumIG

from ...errors import InputError
from ..embedding_forward import EmbeddingForward, frozen_parameters
from ..inputs import model_device
from .base import Attribution, Method, register

# the smallest fusion hidden size of a "wide" model, for which ``auto`` picks bfloat16 autocast on bfloat16-capable
# hardware and, on the CPU, a small internal batch (vle-base and vle-large are 768 and 1024 wide, the embedded model
# 128)
WIDE_FROM_HIDDEN = 512


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def is_wide(model) -> bool:
    return getattr(model.config, "hidden_size", 0) >= WIDE_FROM_HIDDEN


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}  # the autocast type of each (None: autocast off)


def resolve_precision(precision: str, model, device: torch.device) -> str:
    """``float32`` or ``bfloat16``: the one asked for, or for ``auto`` the faster one for this model and device."""
    if precision == "auto":
        return "bfloat16" if is_wide(model) and has_fast_bfloat16(device) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"integrated_gradients precision must be one of auto, {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    return precision


def resolve_batch(batch, model, device: torch.device) -> int:
    """The internal batch asked for, or for ``auto`` 8, except 2 for a wide model on the CPU: its matrices keep the
    cores busy at batch 2 already, so a larger batch only runs slower there, and batch 8 in float32 holds tens of GB of
    activations for the backward pass (docs/explanations.md)."""
    if batch == "auto":
        return 2 if is_wide(model) and device.type == "cpu" else 8
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError("integrated_gradients internal_batch_size must be a positive integer or 'auto', "
                         f"got {batch!r}")
    return batch


@register
class IntegratedGradients(Method):
    name = "integrated_gradients"
    signed = True
    needs_image_tower = True
    options = {"n_steps": 32, "internal_batch_size": "auto", "integration": "gausslegendre", "precision": "auto"}

    def attribute(self, model, inputs, target):
        device = model_device(model)  # explain() has moved the inputs there
        precision = resolve_precision(self.settings["precision"], model, device)
        batch = resolve_batch(self.settings["internal_batch_size"], model, device)
        low = PRECISIONS[precision]
        forward = EmbeddingForward(model, inputs, target)
        values, baselines = forward.inputs(), forward.baselines()  # the path's ends in the model's own precision
        with frozen_parameters(model), torch.enable_grad(), \
                torch.autocast(device.type, dtype=low or torch.float32, enabled=low is not None):
            try:
                attributions, delta = CaptumIG(forward).attribute(
                    values, baselines=baselines, n_steps=self.settings["n_steps"],
                    method=self.settings["integration"], internal_batch_size=batch, return_convergence_delta=True)
            except RuntimeError as error:
                if "does not require grad" not in str(error) and "not have been used in the graph" not in str(error):
                    raise
                raise InputError("integrated_gradients: the target does not depend on the image or the text here "
                                 "(every path to it is patched or ablated), so there is nothing to attribute") from None
        image, text, metadata = forward.scores(attributions)
        with torch.no_grad():
            logits = forward.logits(*values)
        score = float(forward.scored.score(logits)[0])
        total, gap = float(image.sum() + text.sum()), float(delta.abs().max())
        if gap > 0.1 * abs(total):
            warnings.warn(f"integrated_gradients: convergence delta {gap:.3g} is {gap / max(abs(total), 1e-12):.0%} of "
                          f"the attribution sum {total:.3g}; raise n_steps (now {self.settings['n_steps']}) for "
                          "scores that add up", stacklevel=2)
        return Attribution(image, text, {
            **metadata, "convergence_delta": gap, "n_steps": self.settings["n_steps"],
            "internal_batch_size": batch, "precision": precision,
            "score_at_input": score, "attribution_sum": total}, None if inputs.is_vcr else logits)
