"""AttnLRP (Achtibat et al., ICML 2024): layer-wise relevance propagation with attention-aware rules
(``vle.explain.lrp``) from the target's score back through the head, the pooler, every fusion layer (self- and
cross-attention, LayerNorms, feed-forward) and both towers to the inputs of ``EmbeddingForward``: the text tower's
token embeddings, the image tower's patch embeddings and, for VCR items, the box tokens. One forward and one backward
pass (the weights frozen). Signed; a token's, patch's or box's score is its relevance summed over channels.

Where the relevance goes: the input relevances sum to the target's score less what the model's additive constants
(biases, LayerNorm shifts, token-type and position embeddings) and AttnLRP's softmax rule absorb. Without additive
constants the sum plus the softmax's share equals the score (tested to 1e-4). The metadata reports the score, the
sum, their ratio (``conservation``) and the softmax's share (``softmax_absorbed``). ``softmax_rule="cp"`` holds the
attention probabilities constant instead (CP-LRP), which conserves exactly through attention.
"""

from __future__ import annotations

import torch

from ...errors import InputError
from ..embedding_forward import EmbeddingForward, frozen_parameters
from ..lrp import SOFTMAX_RULES, attnlrp_rules
from .base import Attribution, Method, register


@register
class AttnLRP(Method):
    name = "attnlrp"
    signed = True
    needs_image_tower = True
    options = {"softmax_rule": "attnlrp"}

    def attribute(self, model, inputs, target):
        forward = EmbeddingForward(model, inputs, target)
        values = tuple(v.detach().clone().requires_grad_() for v in forward.inputs())
        softmax = self.settings["softmax_rule"]
        if softmax not in SOFTMAX_RULES:
            raise InputError(f"method 'attnlrp': softmax_rule must be one of {', '.join(SOFTMAX_RULES)}, "
                             f"got {softmax!r}")
        with frozen_parameters(model), torch.enable_grad(), attnlrp_rules(model, softmax) as rules:
            logits = forward.logits(*values)
            score = forward.scored.score(logits)
            gradients = torch.autograd.grad(score.sum(), values, allow_unused=True)
        relevance = tuple(v.detach() * (g if g is not None else torch.zeros_like(v)) for v, g in zip(values, gradients))
        image, text, metadata = forward.scores(relevance)
        total, value = float(sum(r.float().sum() for r in relevance)), float(score.detach()[0])
        return Attribution(image, text, {**metadata, "score": value, "relevance_sum": total,
                                         "conservation": total / value if value else float("nan"),
                                         "softmax_absorbed": rules.ledger["softmax"],
                                         "unhandled": sorted(rules.unhandled)},
                           None if inputs.is_vcr else logits.detach())  # VCR: the target's choices' logits only
