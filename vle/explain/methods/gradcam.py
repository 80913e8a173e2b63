"""Grad-CAM on a fusion layer's image stream: channel weights are the target's gradient averaged over the image
tokens, and a token's score is ReLU(Σ_c weight_c · state_c). Text tokens get the same treatment on the text
stream of that layer, so the two scores are comparable only roughly. Unsigned.

``layer`` defaults to the second-to-last fusion layer: the last layer's patch states reach the pooler through
nothing (only the CLS states are pooled), so their gradient is zero there."""

from __future__ import annotations

import torch

from .base import Attribution, register
from .propagation import Needs, RecordedMethod


def cam(states: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(len, H) states and gradients → (len,) Grad-CAM scores."""
    weights = grads.mean(0)  # (H,)
    return (states * weights).sum(-1).clamp(min=0)


@register
class GradCAM(RecordedMethod):
    name = "gradcam"
    signed = False
    options = {"layer": -2}

    def needs(self, model) -> Needs:
        layers = len(model.base_vle.cross_modal_image_layers)
        layer = int(self.settings["layer"]) if layers > 1 else -1
        if not -layers <= layer < layers:
            raise ValueError(f"layer {layer} is out of range: the fusion has {layers} layers")
        self.layer = layer % layers
        return Needs(grads=True, hidden=True)  # the hidden states' gradients only, not the attention maps'

    def from_recording(self, recording, inputs, target):
        layer = self.layer
        image_states, image_grad = recording.recorded[f"fusion.image.{layer}.hidden"]  # (sequences, image_len, H)
        text_states, text_grad = recording.recorded[f"fusion.text.{layer}.hidden"]  # (sequences, text_len, H)
        sequences = inputs.flat_sequence_ids(target)
        with torch.no_grad():
            image = sum(cam(image_states[s], image_grad[s])[1:] for s in sequences)
            text = cam(text_states[sequences[0]], text_grad[sequences[0]])
        return Attribution(image, text, {"layer": layer}, recording.logits)
