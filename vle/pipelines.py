"""Pipelines in the transformers ``Pipeline`` style: VQA, ITM, PBC, VCR Q2A / QA2R and zero-shot classification.

Images may be PIL images, numpy arrays or paths; call with keyword arguments, a dict, or a list of dicts (batched).

Example:
    >>> from vle.testing import tiny_vqa_pipeline
    >>> pipe = tiny_vqa_pipeline()
    >>> answers = pipe(image=np.zeros((32, 32, 3), np.uint8), question="what color is the circle?", top_k=2)
    >>> len(answers), sorted(answers[0])
    (2, ['answer', 'score'])
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .image_utils import crop_geometry, load_image


class _VLEPipeline(Pipeline):
    """Shared plumbing: keyword or dict inputs, a processor, no gradient, CPU by default."""

    input_keys: tuple[str, ...] = ("image", "text")

    def __init__(self, model, processor, device=None, **kwargs):
        if device is None:
            device = model.device
        super().__init__(model=model, processor=processor, tokenizer=processor.tokenizer,
                         image_processor=processor.image_processor, device=device, **kwargs)

    def __call__(self, inputs=None, **kwargs):
        given = {key: kwargs.pop(key) for key in self.input_keys if key in kwargs}
        if inputs is None:
            missing = [key for key in self.input_keys if key not in given]
            if missing:
                raise ValueError(f"{type(self).__name__} needs {', '.join(self.input_keys)}; missing: {', '.join(missing)}")
            inputs = given
        elif not isinstance(inputs, (dict, list, tuple)):
            raise TypeError(f"pass the inputs as keywords ({', '.join(self.input_keys)}), a dict or a list of dicts")
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, kwargs

    def _forward(self, model_inputs):
        extras = {k: model_inputs.pop(k) for k in list(model_inputs) if k.startswith("_")}
        with torch.no_grad():
            output = self.model(**model_inputs)
        return {"logits": output.logits, **extras}


class VLEForVQAPipeline(_VLEPipeline):
    """Top-k answers with scores (softmax over the answer logits, as in the original pipeline)."""

    input_keys = ("image", "question")

    def preprocess(self, inputs):
        return dict(self.processor(text=inputs["question"], images=inputs["image"]))

    def postprocess(self, outputs, top_k: int = 1):
        probs = outputs["logits"][0].softmax(-1)
        top_k = max(1, min(int(top_k), probs.numel()))
        scores, indices = probs.topk(top_k)
        id2label = self.model.config.id2label
        return [{"score": float(s), "answer": id2label[int(i)]} for s, i in zip(scores, indices)]


class VLEForITMPipeline(_VLEPipeline):
    """Image-text match probability: ``{"match_probability", "match", "score": [p_false, p_true]}``."""

    def preprocess(self, inputs):
        return dict(self.processor(text=inputs["text"], images=inputs["image"]))

    def postprocess(self, outputs):
        probs = outputs["logits"][0].softmax(-1)
        return {"match_probability": float(probs[1]), "match": bool(probs[1] > probs[0]),
                "score": [float(p) for p in probs]}


def pbc_overlay(image: Image.Image, heat: np.ndarray, image_size: int, alpha: float = 0.7) -> Image.Image:
    """Darken the parts of ``image`` the text is not about. ``heat`` (rows, cols) is mapped through the processor's
    resize and centre crop, so it lines up with the original; pixels outside the crop are darkened fully."""
    lowest = heat.min() + 0.4 * (heat.max() - heat.min())  # the original's contrast floor
    span = max(float(heat.max() - lowest), 1e-12)
    level = np.clip((heat - lowest) / span, 0.0, 1.0)
    darkness = Image.fromarray(((1.0 - level) * alpha * 255).astype(np.uint8)).resize((image_size, image_size),
                                                                                     Image.NEAREST)
    scale, left, top = crop_geometry(image.width, image.height, image_size)
    full = Image.new("L", image.size, int(alpha * 255))
    crop_in_original = darkness.resize((round(image_size / scale), round(image_size / scale)), Image.NEAREST)
    full.paste(crop_in_original, (round(left / scale), round(top / scale)))
    black = Image.new("RGB", image.size, (0, 0, 0))
    return Image.composite(black, image.convert("RGB"), full)


class VLEForPBCPipeline(_VLEPipeline):
    """Patch relevance for a phrase: ``scores`` (rows, cols) softmax across patches of the class-1 logits,
    ``probabilities`` (rows, cols) per-patch class-1 probability, and ``image``, an overlay on the original."""

    def preprocess(self, inputs):
        image = load_image(inputs["image"])
        return {**self.processor(text=inputs["text"], images=image), "_image": image}

    def postprocess(self, outputs):
        logits = outputs["logits"][0]  # (patches, 2)
        grid = self.model.config.patch_grid
        patch_logits = logits[: grid * grid]
        scores = patch_logits[:, 1].softmax(0).reshape(grid, grid).numpy()
        probabilities = patch_logits.softmax(-1)[:, 1].reshape(grid, grid).numpy()
        overlay = pbc_overlay(outputs["_image"], scores, self.model.config.image_size)
        return {"scores": scores, "probabilities": probabilities, "image": overlay}


class VLEForVCRPipeline(_VLEPipeline):
    """VCR multiple choice: ``{"probabilities", "logits", "choice"}`` (choice is 0-based). Inputs: ``image``,
    ``annotation`` (VCR format) and ``metadata`` (boxes in pixels)."""

    input_keys = ("image", "annotation", "metadata")

    def __init__(self, model, processor, task: str = "q2a", box_mapping: str = "crop", **kwargs):
        self.vcr_task, self.box_mapping = task, box_mapping
        super().__init__(model, processor, **kwargs)

    def preprocess(self, inputs):
        batch = self.processor.vcr(inputs["annotation"], inputs["image"], inputs["metadata"], task=self.vcr_task,
                                   box_mapping=self.box_mapping, patch_size=self.model.config.patch_size)
        batch = dict(batch)
        batch.pop("labels", None)
        return batch

    def postprocess(self, outputs):
        logits = outputs["logits"][0]
        return {"probabilities": [float(p) for p in logits.softmax(-1)], "logits": [float(v) for v in logits],
                "choice": int(logits.argmax())}


class VLEZeroShotPipeline(_VLEPipeline):
    """Zero-shot image classification by ITM over label prompts: labels sorted by normalised match probability."""

    input_keys = ("image", "candidate_labels")

    def _sanitize_parameters(self, hypothesis_template=None, **kwargs):
        pre = {"hypothesis_template": hypothesis_template} if hypothesis_template else {}
        return pre, {}, kwargs

    def preprocess(self, inputs, hypothesis_template: str = "a photo of a {}."):
        labels = list(inputs["candidate_labels"])
        if not labels:
            raise ValueError("candidate_labels is empty: give at least one label")
        prompts = [hypothesis_template.format(label) for label in labels]
        batch = self.processor(text=prompts, images=inputs["image"])
        return {**batch, "_labels": labels}

    def postprocess(self, outputs):
        match = outputs["logits"].softmax(-1)[:, 1]  # (labels,)
        normalised = match / match.sum()
        ranked = sorted(zip(outputs["_labels"], normalised.tolist(), match.tolist()), key=lambda r: -r[1])
        return [{"label": label, "score": score, "match_probability": raw} for label, score, raw in ranked]


PIPELINES = {
    "vqa": ("VLEForVQA", VLEForVQAPipeline, {}),
    "itm": ("VLEForITM", VLEForITMPipeline, {}),
    "pbc": ("VLEForPBC", VLEForPBCPipeline, {}),
    "vcr_q2a": ("VLEForVCRQ2A", VLEForVCRPipeline, {"task": "q2a"}),
    "vcr_qa2r": ("VLEForVCRQA2R", VLEForVCRPipeline, {"task": "qa2r"}),
    "classify": ("VLEForITM", VLEZeroShotPipeline, {}),
}


def pipeline(task: str, model, processor=None, device=None, **kwargs) -> _VLEPipeline:
    """Build a VLE pipeline: ``task`` in vqa, itm, pbc, vcr_q2a, vcr_qa2r, classify; ``model`` a name, folder, hub id
    or a loaded model; ``processor`` defaults to the one saved with the model."""
    import vle

    from .hub import resolve_model_path
    from .processing_vle import VLEProcessor

    if task not in PIPELINES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(PIPELINES)}")
    class_name, pipeline_class, defaults = PIPELINES[task]
    if isinstance(model, str):
        path = resolve_model_path(model)
        model = getattr(vle, class_name).from_pretrained(path)
        processor = processor or VLEProcessor.from_pretrained(path)
    elif processor is None:
        raise ValueError("pass the processor along with a loaded model")
    return pipeline_class(model=model.eval(), processor=processor, device=device, **{**defaults, **kwargs})
