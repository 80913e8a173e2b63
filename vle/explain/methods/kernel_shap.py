"""KernelSHAP (Captum ``KernelShap``) over windows of patches and over words: ``n_samples`` random coalitions of the
features, each evaluated with the absent patches set to the image's median colour (``background_fill``, as occlusion
and the perturbation curves do) and the absent words dropped from the attention mask, then a weighted linear fit
whose coefficients are the features' Shapley value estimates. Special tokens and padding are never absent. Signed;
seeded, so the same call gives the same scores. A window's value is shared by its patches, a word's by its pieces.
Box tokens (VCR) get no score of their own.
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap as CaptumKernelShap

from ..inputs import background_fill
from ..wrapper import TargetForward
from .base import Attribution, Method, register, seeded
from .occlusion import PatchWordFeatures


@register
class KernelShap(Method):
    name = "kernel_shap"
    signed = True
    needs_image_tower = True
    options = {"patch_window": 1, "n_samples": 256, "batch_size": 64, "seed": 0}

    def attribute(self, model, inputs, target):
        inputs = inputs.for_target(target)
        features = PatchWordFeatures(model, inputs, int(self.settings["patch_window"]))
        pixels = inputs.model_inputs["pixel_values"]
        never_absent = (features.text_mask == features.special).float()  # special tokens, padding: baseline 1
        forward = TargetForward(model, inputs, target)
        with torch.no_grad(), seeded(self.settings["seed"]):
            image_attr, text_attr = CaptumKernelShap(lambda p, k: forward(pixel_values=p, text_keep=k)).attribute(
                (pixels, features.keep), baselines=(background_fill(pixels), never_absent),
                feature_mask=(features.image_mask, features.text_mask), n_samples=int(self.settings["n_samples"]),
                perturbations_per_eval=int(self.settings["batch_size"]))
        image, text = features.scores(image_attr, text_attr)
        return Attribution(image, text, {**features.metadata(), "n_samples": int(self.settings["n_samples"])})
