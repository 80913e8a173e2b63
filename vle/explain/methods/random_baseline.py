"""A random baseline: uniform scores, so every metric has a floor."""

from __future__ import annotations

import numpy as np

from .base import Attribution, Method, register


@register
class RandomBaseline(Method):
    name = "random"
    signed = False
    target_specific = False
    options = {"seed": 0}

    def attribute(self, model, inputs, target):
        n_image = model.config.patch_grid ** 2 + inputs.n_boxes
        text_len = inputs.model_inputs["input_ids"].shape[-1]
        rng = np.random.default_rng(self.settings["seed"])
        return Attribution(rng.random(n_image), rng.random(text_len), {"seed": self.settings["seed"]})
