"""The one example being explained, and the forward pass every method shares.

``ExplainInputs`` holds batch-1 model inputs (a VCR item: ``input_ids`` (1, choices, text_len)), the pieces of the
text and, once computed, the image features, so a new question about the same image skips the image tower.

Example:
    >>> import numpy as np
    >>> from vle import VLEConfig, VLEForVQA
    >>> from vle.testing import tiny_processor
    >>> inputs = ExplainInputs.build(tiny_processor(), np.zeros((32, 32, 3), np.uint8), "what color is the circle ?")
    >>> inputs.tokens[0], inputs.text_len
    ('[CLS]', 9)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch

from .recorder import base_model

_TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def model_device(model) -> torch.device:
    """Where the model's weights are: explanations run there."""
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    """The float type of the model's weights: its inputs' pixels are cast to it."""
    return next(model.parameters()).dtype


def background_fill(pixel_values: torch.Tensor) -> torch.Tensor:
    """What removed pixels are set to: each image's per-channel median colour, spread over the image (same shape as
    ``pixel_values``). In the shapes world that is the background, so a removed patch shows nothing; CLIP's mean
    colour (zero after normalisation) would paint a dark grey square that the model can read as an object."""
    median = pixel_values.flatten(2).median(dim=-1).values  # (batch, channels)
    return median[..., None, None].expand_as(pixel_values).clone()


@dataclass
class ExplainInputs:
    model_inputs: dict  # input_ids, attention_mask, token_type_ids, pixel_values[, patch_ids, extend_token_type_ids]
    tokens: tuple[str, ...]  # pieces of the explained text (a VCR item: of the target's first choice)
    token_choices: tuple[tuple[str, ...], ...] = ()  # VCR: the pieces of every choice
    special_tokens: frozenset = frozenset({"[CLS]", "[SEP]", "[PAD]"})
    special_ids: frozenset = frozenset({0, 1, 2})  # never removed by perturbations, kept by IG's baseline
    image_features: torch.Tensor | None = field(default=None, repr=False)  # (1, 1 + patches, Hv), no gradient
    sequence: int = 0  # VCR: the explained choice (``for_target``), whose tokens and boxes are shown

    @classmethod
    def build(cls, processor, image, text: str, text_pair: str | None = None) -> "ExplainInputs":
        batch = dict(processor(text=text, images=image, text_pair=text_pair))
        return cls.from_batch(batch, processor)

    @classmethod
    def from_batch(cls, batch: dict, processor) -> "ExplainInputs":
        """From a batch-1 model input dict (``labels`` and other training keys are dropped)."""
        keep = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "patch_ids", "extend_token_type_ids")
        inputs = {k: v for k, v in batch.items() if k in keep and v is not None}
        ids = inputs["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"explain one example at a time: got a batch of {len(ids)}")
        rows = ids[0] if ids.dim() == 3 else ids
        mask = inputs.get("attention_mask")
        mask_rows = (mask[0] if ids.dim() == 3 else mask) if mask is not None else torch.ones_like(rows)
        pieces = tuple(tuple(processor.tokenizer.convert_ids_to_tokens(r[m.bool()].tolist()))
                       for r, m in zip(rows, mask_rows))
        tokenizer = processor.tokenizer
        return cls(inputs, pieces[0], pieces if ids.dim() == 3 else (), frozenset(tokenizer.all_special_tokens),
                   frozenset(tokenizer.all_special_ids))

    def to(self, device, dtype: torch.dtype | None = None) -> "ExplainInputs":
        """The same example with its tensors (and cached image features) on ``device``; with ``dtype``, its float
        tensors (pixels, features) in that type too (token ids and masks keep theirs)."""
        def move(value):
            if not isinstance(value, torch.Tensor):
                return value
            return value.to(device, dtype) if dtype is not None and value.is_floating_point() else value.to(device)
        moved = {k: move(v) for k, v in self.model_inputs.items()}
        return replace(self, model_inputs=moved, image_features=move(self.image_features))

    def for_model(self, model) -> "ExplainInputs":
        """The example where ``model`` runs: on its device, its pixels in its float type."""
        return self.to(model_device(model), model_dtype(model))

    # -- shape facts -----------------------------------------------------------------------------------------------

    @property
    def is_vcr(self) -> bool:
        return self.model_inputs["input_ids"].dim() == 3

    @property
    def text_len(self) -> int:
        return len(self.tokens)

    @property
    def n_boxes(self) -> int:
        patch_ids = self.model_inputs.get("patch_ids")
        if not patch_ids:
            return 0
        return len(patch_ids[0][self.sequence] if self.is_vcr else patch_ids[0])

    def for_target(self, target) -> "ExplainInputs":
        """VCR: the tokens and boxes shown are those of the target's (first) choice."""
        if not self.is_vcr:
            return self
        return replace(self, tokens=self.token_choices[target.sequences[0]], sequence=target.sequences[0])

    def sequence_tokens(self, sequence: int) -> tuple[str, ...]:
        return self.token_choices[sequence] if self.is_vcr else self.tokens

    def flat_sequence_ids(self, target) -> list[int]:
        """Indices of the target's sequences among the ones the fusion sees (a VCR choice is one sequence)."""
        return list(target.sequences) if self.is_vcr else [0]


def merge_words(tokens, scores, special_tokens) -> tuple[tuple[str, ...], list[float], list[int]]:
    """SentencePiece pieces → words: a piece starting with "▁" starts a word; special tokens belong to none.
    Returns words, word scores (sums of their pieces) and each token's word index (-1 for special tokens)."""
    words, word_scores, word_of_token = [], [], []
    for token, score in zip(tokens, scores):
        if token in special_tokens:
            word_of_token.append(-1)
            continue
        if token.startswith("▁") or not words or word_of_token[-1] == -1:
            words.append(token.lstrip("▁"))
            word_scores.append(0.0)
        else:
            words[-1] += token
        word_scores[-1] += float(score)
        word_of_token.append(len(words) - 1)
    return tuple(words), word_scores, word_of_token


class ImageFeatureCache:
    """Image-tower outputs by pixel content (a small LRU): the same image asked about again skips the tower."""

    def __init__(self, size: int = 8):
        self.size, self._store = size, OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(model, pixel_values: torch.Tensor) -> tuple:
        raw = pixel_values.detach().cpu().contiguous()
        raw = raw.view(torch.int16) if raw.dtype == torch.bfloat16 else raw  # numpy has no bfloat16: hash its bits
        digest = hashlib.sha1(raw.numpy().tobytes()).hexdigest()
        return id(model), tuple(pixel_values.shape), str(pixel_values.dtype), digest

    def features(self, model, pixel_values: torch.Tensor) -> torch.Tensor:
        key = self.key(model, pixel_values)
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        with torch.no_grad():
            features = base_model(model).get_image_features(pixel_values)  # (1, 1 + patches, Hv)
        self._store[key] = features
        while len(self._store) > self.size:
            self._store.popitem(last=False)
        return features


def forward(model, inputs: ExplainInputs, target, use_image_features: bool = True, **overrides):
    """Run the model on ``inputs`` (with ``overrides`` replacing inputs) and return the head output.

    With ``use_image_features`` and cached features, the image tower is skipped.
    """
    kwargs = {**inputs.model_inputs, **overrides}
    if use_image_features and inputs.image_features is not None and "pixel_values" not in overrides:
        kwargs.pop("pixel_values", None)
        kwargs["image_features"] = inputs.image_features
    return model(**kwargs, **target.model_kwargs(model))


def expand_text(inputs: ExplainInputs, batch: int) -> dict:
    """The text inputs repeated ``batch`` times along the first dimension."""
    return {k: inputs.model_inputs[k].expand(batch, *inputs.model_inputs[k].shape[1:])
            for k in _TEXT_KEYS if k in inputs.model_inputs}
