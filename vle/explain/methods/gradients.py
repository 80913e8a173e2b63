"""Captum's gradient methods on every head, through the same forward as integrated gradients
(``EmbeddingForward``: token embeddings, patch embeddings and, for VCR items, box tokens as inputs):

- ``saliency`` (Captum ``Saliency``): |∂score/∂embedding| summed over channels, unsigned;
- ``input_x_gradient`` (Captum ``InputXGradient``): embedding × gradient summed over channels, signed (the
  first-order share of each input relative to a zero embedding);
- ``gradient_shap`` (Captum ``GradientShap``): input × gradient's expectation over ``n_samples`` random points
  between the baseline (as for integrated gradients) and the input, each with Gaussian noise of ``stdevs`` times the
  input's own spread; signed, seeded, so the same call gives the same scores.

The weights get no gradients. Contrastive targets (answer A rather than B, choice i rather than j) attribute the
difference of the two logits, as every target's ``score`` defines.
"""

from __future__ import annotations

import torch
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import Saliency as CaptumSaliency

from ...errors import InputError
from ..embedding_forward import EmbeddingForward, frozen_parameters
from .base import Attribution, Method, register, seeded


def _with_grad(values: tuple) -> tuple:
    """Copies that require gradients (Captum would otherwise set the flag on ours, with a warning)."""
    return tuple(v.detach().clone().requires_grad_() for v in values)


class EmbeddingGradientMethod(Method):
    """One Captum attribution class run on ``EmbeddingForward``; subclasses say how (``run``)."""

    needs_image_tower = True

    def run(self, forward: EmbeddingForward) -> tuple:
        raise NotImplementedError

    def attribute(self, model, inputs, target):
        forward = EmbeddingForward(model, inputs, target)
        with frozen_parameters(model), torch.enable_grad():
            attributions = self.run(forward)
        image, text, metadata = forward.scores(attributions)
        return Attribution(image, text, {**metadata, **self.settings})


@register
class Saliency(EmbeddingGradientMethod):
    name = "saliency"

    def run(self, forward):
        return CaptumSaliency(forward).attribute(_with_grad(forward.inputs()), abs=True)


@register
class InputXGradient(EmbeddingGradientMethod):
    name = "input_x_gradient"
    signed = True

    def run(self, forward):
        return CaptumInputXGradient(forward).attribute(_with_grad(forward.inputs()))


@register
class GradientShap(EmbeddingGradientMethod):
    name = "gradient_shap"
    signed = True
    options = {"n_samples": 16, "stdevs": 0.1, "seed": 0}

    def run(self, forward):
        n_samples, stdevs = self.settings["n_samples"], self.settings["stdevs"]
        if not isinstance(stdevs, (int, float)) or isinstance(stdevs, bool) or not 0 <= stdevs < float("inf"):
            raise InputError(f"method 'gradient_shap': stdevs must be a finite number >= 0, got {stdevs!r}")
        values = forward.inputs()
        spreads = tuple(float(stdevs) * float(v.float().std()) for v in values)
        with seeded(self.settings["seed"]):
            return CaptumGradientShap(forward).attribute(values, baselines=forward.baselines(), n_samples=n_samples,
                                                         stdevs=spreads)
