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
from .occlusion import patch_groups, window_share, word_groups


@register
class KernelShap(Method):
    name = "kernel_shap"
    signed = True
    needs_image_tower = True
    options = {"patch_window": 1, "n_samples": 256, "batch_size": 64, "seed": 0}

    def attribute(self, model, inputs, target):
        inputs = inputs.for_target(target)
        grid, patch = model.config.patch_grid, model.config.patch_size
        window = int(self.settings["patch_window"])
        pixels = inputs.model_inputs["pixel_values"]
        text_len = inputs.model_inputs["input_ids"].shape[-1]
        image_mask = patch_groups(grid, patch, window, pixels.device)
        n_cells = int(image_mask.max()) + 1
        text_mask, n_words = word_groups(inputs.tokens, inputs.special_tokens, text_len, n_cells, pixels.device)
        keep = torch.ones(1, text_len, device=pixels.device)
        never_absent = (text_mask == n_cells + n_words).float()  # special tokens and padding: their baseline is 1
        forward = TargetForward(model, inputs, target)
        with torch.no_grad(), seeded(self.settings["seed"]):
            image_attr, text_attr = CaptumKernelShap(lambda p, k: forward(pixel_values=p, text_keep=k)).attribute(
                (pixels, keep), baselines=(background_fill(pixels), never_absent),
                feature_mask=(image_mask, text_mask), n_samples=int(self.settings["n_samples"]),
                perturbations_per_eval=int(self.settings["batch_size"]))
        cells = image_attr[0, 0, ::patch, ::patch]  # (grid, grid): every patch carries its window's value
        image = torch.cat([cells.reshape(-1) / window_share(image_mask, patch), cells.new_zeros(inputs.n_boxes)])
        text = text_attr[0].clone()
        pieces = torch.bincount(text_mask[0], minlength=n_cells + n_words + 1).float()
        text = text / pieces[text_mask[0]]
        text[text_mask[0] == n_cells + n_words] = 0.0
        return Attribution(image, text, {"patch_window": window, "windows": n_cells, "words": n_words,
                                         "n_samples": int(self.settings["n_samples"])})
