"""``TargetForward``: the model as a plain function of its inputs, returning the target score per example, which is
what Captum's attribution classes expect.

Example:
    >>> import numpy as np, torch
    >>> from captum.attr import IntegratedGradients
    >>> from vle import VLEConfig, VLEForVQA
    >>> from vle.explain import ExplainInputs, VQAAnswer
    >>> from vle.testing import tiny_processor
    >>> model = VLEForVQA(VLEConfig.tiny(id2label={0: "red", 1: "blue"})).eval()
    >>> inputs = ExplainInputs.build(tiny_processor(), np.zeros((32, 32, 3), np.uint8), "what color ?")
    >>> f = TargetForward(model, inputs, VQAAnswer(0, "red"))
    >>> pixels = inputs.model_inputs["pixel_values"]
    >>> tuple(IntegratedGradients(lambda p: f(pixel_values=p)).attribute(pixels, n_steps=4).shape)
    (1, 3, 32, 32)
"""

from __future__ import annotations

import torch


class TargetForward:
    """``f(input_ids=None, pixel_values=None, text_keep=None) -> (batch,)`` target scores.

    Arguments left out take the explained example's values (its cached image features, if it has them); given ones
    may carry a batch of perturbed copies (Captum expands them), and the remaining inputs are repeated to match. ``text_keep`` (batch, text_len) of 0/1
    multiplies the attention mask of the explained sequence: 0 removes a token. ``probability=True`` returns the
    target's probability instead of its score.
    """

    def __init__(self, model, inputs, target, probability: bool = False):
        self.model, self.inputs, self.target, self.probability = model, inputs, target, probability

    def _batch(self, input_ids, pixel_values, text_keep) -> dict:
        base = self.inputs.model_inputs
        sizes = [len(t) for t in (input_ids, pixel_values, text_keep) if t is not None]
        batch = max(sizes, default=1)
        kwargs = {}
        for key, value in base.items():
            if isinstance(value, torch.Tensor) and key != "pixel_values":
                kwargs[key] = value.expand(batch, *value.shape[1:])
            elif key == "patch_ids" or (key == "extend_token_type_ids" and self.inputs.is_vcr):
                kwargs[key] = [value[0]] * batch  # [batch][...]: one example's entry, repeated
            elif key == "extend_token_type_ids":
                kwargs[key] = (value[0] * batch, value[1] * batch)  # (image types per item, text types per item)
        if input_ids is not None:
            kwargs["input_ids"] = input_ids
        if pixel_values is None and self.inputs.image_features is not None:  # the image as it is: skip the tower
            kwargs["image_features"] = self.inputs.image_features.expand(batch, *self.inputs.image_features.shape[1:])
        else:
            pixel_values = base["pixel_values"] if pixel_values is None else pixel_values
            kwargs["pixel_values"] = pixel_values.expand(batch, *pixel_values.shape[1:]) if len(pixel_values) == 1 \
                else pixel_values
        if text_keep is not None:
            keep = (text_keep > 0.5).long()  # (batch, text_len): the model's masks are integer
            mask = kwargs.get("attention_mask", torch.ones_like(kwargs["input_ids"])).clone()
            if mask.dim() == 3:  # VCR: only the explained choice loses tokens
                mask[:, self.target.sequences[0]] = mask[:, self.target.sequences[0]] * keep
            else:
                mask = mask * keep
            kwargs["attention_mask"] = mask
        return kwargs

    def logits(self, input_ids=None, pixel_values=None, text_keep=None) -> torch.Tensor:
        kwargs = {**self._batch(input_ids, pixel_values, text_keep), **self.target.model_kwargs(self.model)}
        if self.model.reads_pooled_only(kwargs.get("task")):  # skip the token states the head does not read
            kwargs["pooled_only"] = True
        return self.model(**kwargs).logits

    def __call__(self, input_ids=None, pixel_values=None, text_keep=None) -> torch.Tensor:
        logits = self.logits(input_ids, pixel_values, text_keep)
        return self.target.probability(logits) if self.probability else self.target.score(logits)
