"""VLEProcessor: CLIP image processor + DeBERTa-v2 SentencePiece tokenizer, saved and loaded with the checkpoint.

Example:
    >>> from vle.testing import tiny_processor
    >>> processor = tiny_processor()
    >>> batch = processor(text=["a red circle"], images=[np.zeros((40, 60, 3), dtype=np.uint8)])
    >>> sorted(batch), tuple(batch["pixel_values"].shape)
    (['attention_mask', 'input_ids', 'pixel_values', 'token_type_ids'], (1, 3, 32, 32))
"""

from __future__ import annotations

import warnings

import numpy as np  # noqa: F401  (used by the docstring example)
import torch
from transformers import BatchFeature, ProcessorMixin

from .errors import InputError, check_int, check_text, check_texts
from .hub import shipped_path
from .image_utils import load_image
from .loading import readable_loading_errors
from .vcr import build_vcr_inputs

DEFAULT_MAX_TEXT_LENGTH = 512


class VLEProcessor(ProcessorMixin):
    """Turns (text, image) pairs into model inputs: ``input_ids``, ``token_type_ids``, ``attention_mask`` (batch,
    text_len) and ``pixel_values`` (batch, 3, size, size). Texts are padded to the longest; a text longer than
    ``max_text_length`` is truncated with a warning."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """A folder, a hub id, or a model shipped inside this package by name (like the models)."""

        shipped = shipped_path(pretrained_model_name_or_path)
        path = str(shipped) if shipped else pretrained_model_name_or_path
        with readable_loading_errors(path, "processor"):
            return super().from_pretrained(path, *args, **kwargs)

    @property
    def image_size(self) -> int:
        crop = getattr(self.image_processor, "crop_size", None) or {}
        return int(crop.get("height") or self.image_processor.size["shortest_edge"])

    @property
    def max_text_length(self) -> int:
        limit = getattr(self.tokenizer, "model_max_length", DEFAULT_MAX_TEXT_LENGTH) or DEFAULT_MAX_TEXT_LENGTH
        return int(min(limit, DEFAULT_MAX_TEXT_LENGTH))

    def preprocess_images(self, images) -> "torch.Tensor":
        """Images (one or a list; paths, PIL or arrays) → pixel_values (batch, 3, size, size)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise InputError("no image given")
        return self.image_processor(images=[load_image(image) for image in images], return_tensors="pt")["pixel_values"]

    def tokenize(self, text, text_pair=None, max_length: int | None = None) -> BatchFeature:
        texts = _as_texts(text, "text")
        pairs = None if text_pair is None else _as_texts(text_pair, "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(pairs)} text pairs: give one pair per text")
        max_length = self.max_text_length if max_length is None else check_int(max_length, "max_length", low=2)
        lengths = [len(ids) for ids in self.tokenizer(texts, pairs)["input_ids"]]
        if max(lengths) > max_length:
            warnings.warn(f"text of {max(lengths)} tokens truncated to the model's {max_length}", stacklevel=3)
        if max(lengths) > max_length:
            return self.tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt")
        return self.tokenizer(texts, pairs, padding=True, return_tensors="pt")

    def __call__(self, text=None, images=None, text_pair=None, max_length: int | None = None,
                 return_tensors: str = "pt") -> BatchFeature:
        if text is None and images is None:
            raise InputError("give a text, an image, or both")
        if return_tensors != "pt":
            raise InputError(f"VLEProcessor returns torch tensors (return_tensors='pt'), got {return_tensors!r}")
        data = {}
        if text is not None:
            data.update(self.tokenize(text, text_pair, max_length))
        if images is not None:
            data["pixel_values"] = self.preprocess_images(images)
        if text is not None and images is not None and len(data["pixel_values"]) not in (1, len(data["input_ids"])):
            raise InputError(f"{len(data['input_ids'])} texts but {len(data['pixel_values'])} images: give one image, "
                             "or one per text")
        return BatchFeature(data)

    def vcr(self, annotation, image, metadata, task: str = "q2a", max_length: int = 80, box_mapping: str = "crop",
            patch_size: int = 16) -> BatchFeature:
        """VCR annotation(s) → batched multiple-choice inputs; see ``vle.vcr.build_vcr_inputs``."""

        return build_vcr_inputs(self, annotation, image, metadata, task=task, max_length=max_length,
                                box_mapping=box_mapping, patch_size=patch_size)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)


def _as_texts(value, what: str) -> list[str]:
    """One text or a list of them, checked but kept as written (the tokenizer sees exactly what was given)."""
    if isinstance(value, str):
        check_text(value, what)
        return [value]
    check_texts(value, what)
    return list(value)


__all__ = ["VLEProcessor"]
