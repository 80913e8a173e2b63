"""Attention rollout (Abnar and Zuidema, 2020) adapted to VLE's two-stream co-attention: the head-averaged fusion
maps, without gradients, propagated with the same bi-modal rules as the relevance method and read out from both CLS
tokens. Class-agnostic: every target on the same input gets the same map. Unsigned."""

from __future__ import annotations

import torch

from .base import Attribution, register
from .propagation import RecordedMethod, Needs, check_cross_rule, relevance_for


@register
class AttentionRollout(RecordedMethod):
    name = "rollout"
    signed = False
    target_specific = False
    options = {"seed": "both", "cross_rule": "composed"}  # cross_rule: propagation.CROSS_RULES

    def needs(self, model) -> Needs:
        check_cross_rule(self.settings["cross_rule"])  # before the forward
        return Needs()

    def from_recording(self, recording, inputs, target):
        with torch.no_grad():
            averaged = {f: [a.mean(dim=1) for a in layers] for f, layers in recording.maps.items()}
            image, text = relevance_for(averaged, inputs, target, self.settings["seed"], self.settings["cross_rule"])
        return Attribution(image, text, dict(self.settings), recording.logits)
