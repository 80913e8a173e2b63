"""Raw fusion cross-attention: what the CLS tokens attend to in the other modality.

Image scores are the text CLS token's text → image cross-attention over the image tokens; text scores are the image
CLS token's image → text cross-attention over the text tokens. ``layer`` is an index, ``"last"`` or ``"mean"``;
``head`` an index or ``"mean"``. The full maps of the explained sequence come along in the metadata:
``text_to_image`` (layers, heads, text_len, image_len) and ``image_to_text`` (layers, heads, image_len, text_len).
Unsigned.
"""

from __future__ import annotations

import torch

from .base import Attribution, register
from .propagation import RecordedMethod


def _select(stacked: torch.Tensor, layer, head) -> torch.Tensor:
    """(layers, heads, q, k) → (q, k)."""
    layers = stacked.shape[0]
    if layer == "mean":
        stacked = stacked.mean(0)
    elif layer == "last":
        stacked = stacked[-1]
    else:
        if not -layers <= int(layer) < layers:
            raise ValueError(f"layer {layer} is out of range: the fusion has {layers} layers")
        stacked = stacked[int(layer)]
    heads = stacked.shape[0]
    if head == "mean":
        return stacked.mean(0)
    if not -heads <= int(head) < heads:
        raise ValueError(f"head {head} is out of range: the fusion layers have {heads} attention heads")
    return stacked[int(head)]


@register
class RawAttention(RecordedMethod):
    name = "raw_attention"
    signed = False
    options = {"layer": "last", "head": "mean", "keep_maps": True}

    def from_recording(self, recording, inputs, target):
        maps, sequence = recording.maps, inputs.flat_sequence_ids(target)[0]
        text_to_image = torch.stack([a[sequence] for a in maps["tc"]])  # (layers, heads, text_len, image_len)
        image_to_text = torch.stack([a[sequence] for a in maps["ic"]])  # (layers, heads, image_len, text_len)
        layer, head = self.settings["layer"], self.settings["head"]
        image = _select(text_to_image, layer, head)[0, 1:]
        text = _select(image_to_text, layer, head)[0]
        metadata = {"layer": layer, "head": head}
        if self.settings["keep_maps"]:
            metadata.update(text_to_image=text_to_image, image_to_text=image_to_text)
        return Attribution(image, text, metadata, recording.logits)
