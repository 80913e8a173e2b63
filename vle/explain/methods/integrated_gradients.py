"""Integrated gradients (Captum ``LayerIntegratedGradients``) on the token embeddings and the patch embeddings
jointly: one path from a baseline (text pieces replaced by padding, special tokens kept; a flat image of the input's
median colour, ``background_fill``: the background in the shapes world, so only objects differ from the baseline) to
the input, ``n_steps`` points evaluated ``internal_batch_size`` at a time, so peak memory is bounded by the batch size,
not by the step count. Signed; the scores of a piece or patch are its
attribution summed over channels, and the sum of all scores equals score(input) - score(baseline) up to the
``convergence_delta`` reported in the metadata. Box tokens (VCR) get no score of their own.

``precision="bfloat16"`` runs the path under bfloat16 autocast (matrix products in bfloat16, reductions and
normalisations in float32): about twice as fast at the vle-base shape on CPUs with bfloat16 matrix units, at the
price of a larger convergence delta, which the metadata reports as always.
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import LayerIntegratedGradients

from ..inputs import background_fill
from ..recorder import base_model
from ..wrapper import TargetForward
from .base import Attribution, Method, register


def text_baseline(input_ids: torch.Tensor, special_ids, pad_id: int) -> torch.Tensor:
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in special_ids:
        keep |= input_ids == special
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))


@register
class IntegratedGradients(Method):
    name = "integrated_gradients"
    heads = frozenset({"vqa", "itm", "pbc"})  # VCR fuses C sequences per image: Captum's layer batching does not fit
    signed = True
    needs_image_tower = True
    options = {"n_steps": 32, "internal_batch_size": 8, "integration": "gausslegendre", "precision": "float32"}
    precisions = {"float32": None, "bfloat16": torch.bfloat16}

    def attribute(self, model, inputs, target):
        if self.settings["precision"] not in self.precisions:
            raise ValueError(f"integrated_gradients precision must be one of {', '.join(self.precisions)}, "
                             f"got {self.settings['precision']!r}")
        low = self.precisions[self.settings["precision"]]
        vle = base_model(model)
        layers = [vle.text_model.embeddings.word_embeddings, vle.vision_model.vision_model.embeddings.patch_embedding]
        ids, pixels = inputs.model_inputs["input_ids"], inputs.model_inputs["pixel_values"]
        pad_id = model.config.text_config.pad_token_id or 0
        forward = TargetForward(model, inputs, target)
        with warnings.catch_warnings():  # the two embedding layers are independent, as Captum asks
            warnings.filterwarnings("ignore", message="Multiple layers provided")
            ig = LayerIntegratedGradients(lambda i, p: forward(input_ids=i, pixel_values=p), layers)
        device = inputs.model_inputs["pixel_values"].device.type
        with torch.enable_grad(), torch.autocast(device, dtype=low or torch.float32, enabled=low is not None):
            (text_attr, patch_attr), delta = ig.attribute(
                (ids, pixels), baselines=(text_baseline(ids, inputs.special_ids, pad_id), background_fill(pixels)),
                n_steps=self.settings["n_steps"], method=self.settings["integration"],
                internal_batch_size=self.settings["internal_batch_size"], return_convergence_delta=True)
        text = text_attr.detach()[0].float().sum(-1)  # (text_len,)
        patches = patch_attr.detach()[0].float().sum(0).reshape(-1)  # (grid * grid,)
        image = torch.cat([patches, patches.new_zeros(inputs.n_boxes)])
        with torch.no_grad():
            logits = forward.logits()
        score = float(target.score(logits)[0])
        total, gap = float(text.sum() + patches.sum()), float(delta.abs().max())
        if gap > 0.1 * abs(total):
            warnings.warn(f"integrated_gradients: convergence delta {gap:.3g} is {gap / max(abs(total), 1e-12):.0%} of "
                          f"the attribution sum {total:.3g}; raise n_steps (now {self.settings['n_steps']}) for "
                          "scores that add up", stacklevel=2)
        return Attribution(image, text, {
            "convergence_delta": gap, "n_steps": self.settings["n_steps"],
            "internal_batch_size": self.settings["internal_batch_size"], "precision": self.settings["precision"],
            "score_at_input": score, "attribution_sum": total}, logits)
