"""The model's own patch-box classification map for a phrase: the softmax over patches (and boxes) of the class-1
("this patch is what the text describes") logits, as the PBC pipeline shows it. Needs a PBC head; says nothing about
the text, so token scores are zero. Unsigned."""

from __future__ import annotations

import torch

from ..inputs import forward
from .base import Attribution, Method, register


@register
class PBCMap(Method):
    name = "pbc"
    heads = frozenset({"pbc"})
    kinds = frozenset({"class"})
    signed = False

    def attribute(self, model, inputs, target):
        with torch.no_grad():
            all_logits = forward(model, inputs, target).logits
        logits = all_logits[0]  # (patches + boxes, 2)
        scores = logits[:, 1].softmax(0)
        probabilities = logits.softmax(-1)[:, 1]
        text_len = inputs.model_inputs["input_ids"].shape[-1]
        return Attribution(scores, torch.zeros(text_len), {"probabilities": probabilities}, all_logits)
