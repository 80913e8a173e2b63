"""Gradient-weighted co-attention relevance (Chefer, Gur, Wolf, ICCV 2021), adapted to VLE.

Each fusion cross-attention map is weighted by its gradient with respect to the target and averaged over attention
heads, each self-attention map is averaged over heads, and all are propagated through both streams layer by layer
(``propagation.propagate``) and read out from both CLS tokens, because VLE's pooler concatenates them: each CLS row
counts in proportion to its share of the target, |∇h · h| of its final state (``cls_shares``). Needs no gradient into
the towers, so a new question about the same image reuses its image features. Unsigned.

Five adaptations of the paper's rule, each an option (the paper's rule is ``gradient_weighted="all"``,
``weighting="positive"``, ``normalize_rows=False``, ``cross_rule="chefer"``), chosen on held-out questions of seeds
that are never reported; the measurements behind each are in docs/explanations.md:

- only the cross-attention maps, where one stream reads the other, are weighted by their gradients; the self-attention
  maps enter as their head mean, as in rollout (``gradient_weighted``): weighting the self-attention maps too points
  worse, most on counting questions, whose evidence is several objects.
- the default keeps the magnitude of each head's product, Ā = mean_h |∇A ⊙ A|, where Chefer et al. keep its positive
  part, Ā = mean_h (∇A ⊙ A)⁺ (``weighting``): the gradient on the evidence object's attention is often negative here,
  and the positive part then loses the evidence.
- each row of Ā is scaled to sum to one, as an attention row does, so that no layer outweighs the others
  (``normalize_rows``).
- the two CLS rows are weighted by their shares of the target rather than added (``seed``): the pooled pair reads both,
  and the one that carries more of the target should say more about it.
- a cross-attention layer adds R̄_qq Ā R̄_kk to the query stream's relevance over the other stream, composing R̄_qq as
  every other rule does, where the paper has R̄_qqᵀ (``cross_rule``, see ``propagation.CROSS_RULES``).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .base import Attribution, register
from .propagation import SEED_WEIGHTS, Needs, RecordedMethod, check_cross_rule, relevance_for

# the fusion maps (propagation.FAMILIES) weighted by their gradients: Chefer et al. weigh ``all``; the default weighs
# the ``cross``-attention maps, where one stream reads the other, and takes the self-attention maps as their head mean
GRADIENT_WEIGHTED = {"cross": ("tc", "ic"), "all": ("ts", "tc", "is", "ic")}
WEIGHTINGS = {"absolute": torch.Tensor.abs_, "positive": lambda x: x.clamp_(min=0)}  # in place on a fresh product


@lru_cache(maxsize=None)  # one function per weighting, so methods that weigh alike share a recording
def head_weighted(weighting: str = "absolute"):
    """w(∇A ⊙ A) averaged over heads, as a recorder's ``grad_reduce``: (sequences, heads, query_len, key_len) gradient
    and map → (sequences, query_len, key_len). One head at a time, so no second full-size map is allocated.

    ``weighting`` keeps the magnitude (``absolute``) or, as Chefer et al., the positive part (``positive``).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    keep = WEIGHTINGS[weighting]

    def reduce(grad, probs):
        heads = grad.shape[1]
        total = keep(grad[:, 0] * probs[:, 0])
        for head in range(1, heads):
            total += keep(grad[:, head] * probs[:, head])
        return total.div_(heads)
    return reduce


def rows_normalized(weighted):
    """Each query's row scaled to sum to one, as an attention row does, so that a layer whose gradients are larger
    does not outweigh the others in the propagation."""
    return {f: [m / m.sum(-1, keepdim=True).clamp(min=1e-12) for m in layers] for f, layers in weighted.items()}


@register
class CoAttentionRelevance(RecordedMethod):
    name = "coattention_relevance"
    signed = False
    # seed: which CLS rows seed the read-out (weighted by each one's share of the target, both equally, text or
    # image); weighting: head_weighted; normalize_rows: rows_normalized; cross_rule: propagation.CROSS_RULES
    # gradient_weighted: which maps are weighted by their gradients (GRADIENT_WEIGHTED); the others enter as their
    # head mean, as in rollout
    options = {"seed": "weighted", "weighting": "absolute", "normalize_rows": True, "cross_rule": "composed",
               "gradient_weighted": "cross"}

    def needs(self, model) -> Needs:
        settings = self.settings  # every option is checked before the forward
        if settings["seed"] != "weighted" and settings["seed"] not in SEED_WEIGHTS:
            raise ValueError(f"seed must be one of weighted, {', '.join(SEED_WEIGHTS)}, got {settings['seed']!r}")
        check_cross_rule(settings["cross_rule"])
        if settings["gradient_weighted"] not in GRADIENT_WEIGHTED:
            raise ValueError(f"gradient_weighted must be one of {', '.join(GRADIENT_WEIGHTED)}, "
                             f"got {settings['gradient_weighted']!r}")
        return Needs(grads=True, hidden=settings["seed"] == "weighted",
                     grad_families=GRADIENT_WEIGHTED[settings["gradient_weighted"]],
                     grad_reduce=head_weighted(settings["weighting"]))

    def from_recording(self, recording, inputs, target):
        settings, metadata = self.settings, dict(self.settings)
        weigh = settings["seed"] == "weighted"
        with torch.no_grad():
            weighted = dict(recording.grad_maps)
            if settings["normalize_rows"]:
                weighted = rows_normalized(weighted)
            weighted.update({f: [a.mean(dim=1) for a in layers] for f, layers in recording.maps.items()
                             if f not in weighted})
            last = len(weighted["ts"]) - 1
            seed = cls_shares(recording.recorded, inputs, target, last) if weigh else settings["seed"]
            image, text = relevance_for(weighted, inputs, target, seed, settings["cross_rule"])
        if weigh:
            metadata["cls_shares"] = seed
        return Attribution(image, text, metadata, recording.logits)


def cls_shares(recorded, inputs, target, last: int) -> dict[str, float]:
    """How much of the target each pooled CLS state carries: |∇h · h| of the last fusion layer's text and image CLS
    states (summed over the target's sequences), as shares that add up to one."""
    sequences = inputs.flat_sequence_ids(target)
    share = {}
    for stream in ("text", "image"):
        states, grads = recorded[f"fusion.{stream}.{last}.hidden"]
        share[stream] = float(sum((states[s, 0] * grads[s, 0]).sum().abs() for s in sequences))
    total = sum(share.values()) or 1.0
    return {stream: value / total for stream, value in share.items()}
