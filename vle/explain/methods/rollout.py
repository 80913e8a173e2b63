"""Attention rollout (Abnar and Zuidema, 2020) adapted to VLE's two-stream co-attention: the head-averaged fusion
maps, without gradients, propagated with the same bi-modal rules as the relevance method and read out from both CLS
tokens. Class-agnostic: every target on the same input gets the same map. Unsigned."""

from __future__ import annotations

import torch

from .base import Attribution, Method, register
from .propagation import check_cross_rule, fusion_maps, relevance_for


@register
class AttentionRollout(Method):
    name = "rollout"
    reads_one_forward = True
    signed = False
    options = {"seed": "both", "cross_rule": "composed"}  # cross_rule: propagation.CROSS_RULES

    def attribute(self, model, inputs, target):
        check_cross_rule(self.settings["cross_rule"])
        maps, _, output, _ = fusion_maps(model, inputs, target, grads=False)
        with torch.no_grad():
            averaged = {f: [a.mean(dim=1) for a in layers] for f, layers in maps.items()}
            image, text = relevance_for(averaged, inputs, target, self.settings["seed"], self.settings["cross_rule"])
        return Attribution(image, text, dict(self.settings), output.logits)
