"""Gradient-weighted co-attention relevance (Chefer, Gur, Wolf, ICCV 2021), adapted to VLE.

Each fusion attention map is weighted by its gradient with respect to the target and averaged over attention heads,
Ā = mean_h (∇A ⊙ A)⁺, then propagated through both streams layer by layer (``propagation.propagate``) and read out
from both CLS tokens, because VLE's pooler concatenates them. Needs no gradient into the towers, so a new question
about the same image reuses its image features. Unsigned.
"""

from __future__ import annotations

import torch

from .base import Attribution, Method, register
from .propagation import fusion_maps, per_sequence, propagate, read_out


def gradient_weighted(maps, grads):
    """(∇A ⊙ A)⁺ averaged over heads: per family, per layer, (sequences, query_len, key_len)."""
    return {f: [(g * a).clamp(min=0).mean(dim=1) for a, g in zip(maps[f], grads[f])] for f in maps}


def relevance_for(weighted, inputs, target, seed):
    """Image relevance summed over the target's sequences; text relevance of its first sequence."""
    image, text = None, None
    for sequence in inputs.flat_sequence_ids(target):
        image_part, text_part = read_out(propagate(per_sequence(weighted, sequence)), seed)
        image = image_part if image is None else image + image_part
        text = text_part if text is None else text
    return image.clamp(min=0).numpy(), text.clamp(min=0).numpy()


@register
class CoAttentionRelevance(Method):
    name = "coattention_relevance"
    signed = False
    options = {"seed": "both"}  # which CLS rows seed the read-out: both, text or image

    def attribute(self, model, inputs, target):
        maps, grads, output, _ = fusion_maps(model, inputs, target, grads=True)
        with torch.no_grad():
            image, text = relevance_for(gradient_weighted(maps, grads), inputs, target, self.settings["seed"])
        return Attribution(image, text, {"seed": self.settings["seed"]}, output.logits)
