"""Captioners: anything callable as ``captioner(image) -> str``.

* ``TransformersCaptioner``: a transformers image-to-text model (BLIP, GIT, Florence-2 ...) by hub id or folder,
  for real photos. The demo used ``Salesforce/blip-image-captioning-base``.
* ``ShapesCaptioner``: for the synthetic shapes world, offline. It writes every caption the world's grammar allows
  for one object ("a large red circle"), scores each against the image with the ITM head, then pairs the
  best-scoring objects with each relation ("a red circle left of a blue square") and scores those too; the caption
  with the highest match probability wins. ``rank`` shows every scored caption.

>>> from vle import VLEConfig, VLEForITM
>>> from vle.testing import tiny_processor
>>> captioner = ShapesCaptioner(VLEForITM(VLEConfig.tiny()).eval(), tiny_processor())
>>> parse_caption(captioner(np.zeros((32, 32, 3), np.uint8))).first.color in COLORS
True
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np  # noqa: F401  (used by the docstring example)
import torch
import transformers
from transformers.pipelines import SUPPORTED_TASKS

from ..hub import SHIPPED_DIR, resolve_model_path
from ..image_utils import load_image
from ..loading import readable_loading_errors
from ..modeling_vle import VLEForITM
from ..processing_vle import VLEProcessor
from ..shapes.tasks_common import RELATIONS
from ..shapes.tasks_other import Caption, Mention, parse_caption  # noqa: F401  (parse_caption: docstring)
from ..shapes.world import COLORS, SHAPES, SIZES

DEFAULT_PHOTO_CAPTIONER = "Salesforce/blip-image-captioning-base"
DEFAULT_SHAPES_CAPTIONER = "vle-tiny-shapes"


class ShapesCaptioner:
    """Pick the shapes-grammar caption the ITM head matches best. ``model``: a shipped name, folder or loaded
    ``VLEForITM`` (then pass ``processor``). ``beam`` objects (best caption per colour) are paired into relational
    captions when ``relational``; ``n_captions`` > 1 joins the best captions that add an object not yet named."""

    def __init__(self, model=DEFAULT_SHAPES_CAPTIONER, processor=None, relational: bool = True, beam: int = 4,
                 n_captions: int = 1, batch_size: int = 64):
        if isinstance(model, (str, os.PathLike)):

            path = resolve_model_path(model)
            model, processor = VLEForITM.from_pretrained(path), processor or VLEProcessor.from_pretrained(path)
        elif processor is None:
            raise ValueError("pass the processor along with a loaded ITM model")
        self.model, self.processor = model.eval(), processor
        self.relational, self.beam, self.n_captions, self.batch_size = relational, beam, n_captions, batch_size

    def __call__(self, image) -> str:
        ranked = self.rank(image)
        chosen, named = [], set()
        for text, _ in ranked:
            colors = _colors(text)
            if colors - named:
                chosen.append(text)
                named |= colors
            if len(chosen) == self.n_captions:
                break
        return ". ".join(chosen)

    def rank(self, image) -> list[tuple[str, float]]:
        """Every scored caption with its ITM match probability, best first."""
        image = load_image(image)
        mentions = [Mention(c, s, z) for c in COLORS for s in SHAPES for z in (None, *SIZES)]
        scores = dict(zip((m.text() for m in mentions), self.match(image, [m.text() for m in mentions])))
        if self.relational and self.beam >= 2:
            best_per_color = {}
            for mention in sorted(mentions, key=lambda m: -scores[m.text()]):
                best_per_color.setdefault(mention.color, mention)
            top = list(best_per_color.values())[: self.beam]
            relational = [Caption(a, rel, b).text() for a, b in itertools.permutations(top, 2) for rel in RELATIONS]
            scores.update(zip(relational, self.match(image, relational)))
        return sorted(scores.items(), key=lambda item: -item[1])

    def match(self, image, texts: list[str]) -> list[float]:
        """ITM match probability of each text with ``image``."""

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.processor(text=texts[start:start + self.batch_size], images=image)
                batch = {key: value.to(self.model.device) for key, value in batch.items()}
                out += self.model(**batch).logits.softmax(-1)[:, 1].tolist()  # (texts,)
        return out


def _colors(text: str) -> set[str]:
    return {word for word in text.split() if word in COLORS}


class TransformersCaptioner:
    """A transformers captioning model by hub id or folder, through the ``image-to-text`` pipeline (or
    ``image-text-to-text`` where transformers no longer has the former). ``prompt`` is an optional text start
    for models that take one ("a picture of"); greedy decoding, as in the demo."""

    def __init__(self, model: str = DEFAULT_PHOTO_CAPTIONER, prompt: str | None = None, max_new_tokens: int = 30,
                 device=None):

        self.task = "image-to-text" if "image-to-text" in SUPPORTED_TASKS else "image-text-to-text"
        self.name, self.prompt, self.max_new_tokens = os.fspath(model), prompt, max_new_tokens

        with readable_loading_errors(self.name, "captioning model"):
            self.pipe = transformers.pipeline(self.task, model=self.name, device=device)

    def __call__(self, image) -> str:
        image = load_image(image)
        settings = {"generate_kwargs": {"max_new_tokens": self.max_new_tokens}}
        if self.task == "image-to-text":
            outputs = self.pipe(image, **({"prompt": self.prompt} if self.prompt else {}), **settings)
        else:
            if self.prompt:
                settings["return_full_text"] = False
            outputs = self.pipe(images=image, text=self.prompt, **settings)
        while isinstance(outputs, list):  # [{...}] or [[{...}]]
            if not outputs:
                raise ValueError(f"{self.name} returned no caption")
            outputs = outputs[0]
        text = outputs.get("generated_text", "") if isinstance(outputs, dict) else outputs
        if isinstance(text, list):  # chat format: the last message is the model's
            text = text[-1].get("content", "") if text else ""
        return str(text).strip()


def resolve_captioner(captioner=None, vqa_model_name: str | None = None):
    """A captioner from: a callable (kept), "shapes" or a shipped/saved VLE ITM model (``ShapesCaptioner``),
    another string (``TransformersCaptioner``), or None: shapes for the shipped shapes models, else the demo's BLIP."""
    if captioner is None:
        shapes = vqa_model_name is None or str(vqa_model_name).startswith("vle-tiny-shapes")
        captioner = "shapes" if shapes else DEFAULT_PHOTO_CAPTIONER
    if callable(captioner):
        return captioner
    if not isinstance(captioner, (str, os.PathLike)):
        raise TypeError(f"a captioner is a callable or a model name, got {type(captioner).__name__}")
    text = os.fspath(captioner)
    if text == "shapes":
        return ShapesCaptioner()
    if _is_vle_model(text):
        return ShapesCaptioner(text)
    return TransformersCaptioner(text)


def _is_vle_model(name: str) -> bool:
    folder = SHIPPED_DIR / name if "/" not in name and (SHIPPED_DIR / name).is_dir() else name
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as handle:
        return json.load(handle).get("model_type") == "vle"
