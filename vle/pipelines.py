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

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .errors import InputError, check_choice, check_int, check_no_extra, check_text, check_texts
from .hub import resolve_model_path
from .image_utils import load_image, patch_scores_to_pixels
from .modeling_vle import HEADS
from .precision import describe, dtype_name, resolve_dtype
from .processing_vle import VLEProcessor
from .vcr import BOX_MAPPINGS, TASKS, check_annotation


class _VLEPipeline(Pipeline):
    """Shared plumbing: keyword, dict or list-of-dict inputs checked where they enter, a processor, no gradient, the
    model's device by default. Subclasses name their ``input_keys``, check each example in ``check_example`` and
    their call options in ``_sanitize_parameters``."""

    input_keys: tuple[str, ...] = ("image", "text")
    text_key: str | None = None  # the one text of a batchable pipeline (a list of examples runs as batches)
    default_batch_size = 8

    def __init__(self, model, processor, device=None, **kwargs):
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"model must be a loaded VLE model (or give pipeline() a name), got "
                             f"{type(model).__name__}")
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise InputError(f"processor must be a VLEProcessor, got {type(processor).__name__}")
        if device is None:
            device = model.device
        self.dtype_choice = kwargs.pop("dtype_choice", None) or dtype_name(model.dtype)
        super().__init__(model=model, processor=processor, tokenizer=processor.tokenizer,
                         image_processor=processor.image_processor, device=device, **kwargs)

    def __call__(self, inputs=None, **kwargs):
        given = {key: kwargs.pop(key) for key in self.input_keys if key in kwargs}
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", low=1)
            if self.text_key is None and batch_size > 1:
                raise InputError(f"{type(self).__name__} runs one example at a time (each is a batch already): "
                                 "leave batch_size out")
        if inputs is None:
            missing = [key for key in self.input_keys if key not in given]
            if missing:
                raise InputError(f"{type(self).__name__} needs {', '.join(self.input_keys)}; missing: "
                                 f"{', '.join(missing)}")
            inputs = given
        elif given:
            raise InputError(f"pass the inputs either as keywords ({', '.join(self.input_keys)}) or as a dict / list "
                             "of dicts, not both")
        if isinstance(inputs, dict):
            inputs = self._checked(inputs, "the input")
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise InputError("the list of examples is empty")
            inputs = [self._checked(example, f"example {index}") for index, example in enumerate(inputs)]
            if self.text_key is not None and (batch_size or self.default_batch_size) > 1:
                return self._batched(inputs, batch_size or self.default_batch_size, **kwargs)
        else:
            raise InputError(f"pass the inputs as keywords ({', '.join(self.input_keys)}), a dict or a list of dicts; "
                             f"got {type(inputs).__name__}")
        return super().__call__(inputs, **kwargs)

    def _batched(self, examples: list[dict], batch_size: int, **kwargs) -> list:
        """A list of examples in batches: the image tower once per distinct image of a batch, texts padded to the
        batch's longest; the same answers as one at a time (to float rounding)."""
        _, _, post = self._sanitize_parameters(**kwargs)
        post = {**self._postprocess_params, **post}
        results = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            images = [load_image(example["image"]) for example in chunk]
            logits = batch_logits(self.model, self.processor, images, [e[self.text_key] for e in chunk])
            for row, image in enumerate(images):
                results.append(self.postprocess({"logits": logits[row:row + 1], "_image": image}, **post))
        return results

    def _checked(self, example, where: str) -> dict:
        if not isinstance(example, dict):
            raise InputError(f"{where} must be a dict with {', '.join(self.input_keys)}, got {type(example).__name__}")
        missing = [key for key in self.input_keys if example.get(key) is None]
        extra = [key for key in example if key not in self.input_keys]
        if missing or extra:
            problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(map(str, extra))}"] if extra else [])
            prefix = "" if where == "the input" else f"{where}: "
            raise InputError(f"{prefix}{type(self).__name__} needs {', '.join(self.input_keys)}; "
                             f"{'; '.join(problems)}")
        try:
            return self.check_example(dict(example))
        except InputError as error:
            raise InputError(f"{where}: {error}" if where != "the input" else str(error)) from None

    def check_example(self, example: dict) -> dict:
        """Check (and where safe, normalise) one example's fields; images are checked when they are read."""
        if "text" in example:
            check_text(example["text"], "text")
        return example

    def _sanitize_parameters(self, **kwargs):
        check_no_extra(kwargs, type(self).__name__)
        return {}, {}, {}

    def _forward(self, model_inputs):
        extras = {k: model_inputs.pop(k) for k in list(model_inputs) if k.startswith("_")}
        with torch.no_grad():
            output = self.model(**to_model(self.model, model_inputs), **pooled_kwargs(self.model))
        return {"logits": output.logits.float(), **extras}  # scores in float32, whatever the weights


def to_model(model, inputs: dict) -> dict:
    """Model inputs on the model's device, their float tensors (pixels, features) in its float type."""
    parameter = next(model.parameters())

    def move(value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.to(parameter.device, parameter.dtype) if value.is_floating_point() else value.to(parameter.device)
    return {key: move(value) for key, value in inputs.items()}


def pooled_kwargs(model) -> dict:
    """``pooled_only=True`` for heads that read only the pooled pair: the last fusion layer then updates just the
    class tokens (same logits, less work)."""
    reads = getattr(model, "reads_pooled_only", None)
    return {"pooled_only": True} if reads is not None and reads() else {}


@dataclass
class BatchOutput:
    """What one batched forward gives: ``logits`` (n, ...) in float32, ``pooled`` (n, 2H) the pooled pair in float32,
    ``features`` (n, 1 + patches, Hv) each row's image features (shared rows for a repeated image) and ``pixels``
    (n, 3, S, S) the processed images."""

    logits: torch.Tensor
    pooled: torch.Tensor
    features: torch.Tensor
    pixels: torch.Tensor


def batch_forward(model, processor, images: list, texts: list[str]) -> BatchOutput:
    """(image, text) pairs run as one batch: each distinct image through the image tower once, texts padded to the
    longest. ``images``: PIL images (read by the one loader)."""
    pixels = processor.preprocess_images(images)  # (n, 3, S, S)
    tokens = to_model(model, dict(processor.tokenize(texts)))
    features = image_features_once(model, pixels)
    with torch.no_grad():
        output = model(**tokens, image_features=features, **pooled_kwargs(model))
    return BatchOutput(output.logits.float(), output.vle_output.pooler_output.float(), features, pixels)


def image_features_once(model, pixels: torch.Tensor) -> torch.Tensor:
    """The image tower's features for each row of ``pixels`` (n, 3, S, S), each distinct image computed once:
    (n, 1 + patches, Hv), on the model's device and in its float type, without gradient."""
    keys = [pixels[row].numpy().tobytes() for row in range(len(pixels))]
    distinct: dict[bytes, int] = {}
    for key in keys:
        distinct.setdefault(key, len(distinct))
    first_rows = [keys.index(key) for key in distinct]  # one row per distinct image
    with torch.no_grad():
        features = model.base_vle.get_image_features(to_model(model, {"pixels": pixels[first_rows]})["pixels"])
    return features[[distinct[key] for key in keys]]


def batch_logits(model, processor, images: list, texts: list[str]) -> torch.Tensor:
    """The head's logits (float32) for (image, text) pairs run as one batch (``batch_forward``)."""
    return batch_forward(model, processor, images, texts).logits


class VLEForVQAPipeline(_VLEPipeline):
    """Top-k answers with scores (softmax over the answer logits, as in the original pipeline)."""

    input_keys, text_key = ("image", "question"), "question"

    def check_example(self, example):
        check_text(example["question"], "question")
        return example

    def _sanitize_parameters(self, top_k=None, **kwargs):
        check_no_extra(kwargs, type(self).__name__, ("top_k",))
        return {}, {}, ({} if top_k is None else {"top_k": check_int(top_k, "top_k", low=1)})

    def preprocess(self, inputs):
        return dict(self.processor(text=inputs["question"], images=inputs["image"]))

    def postprocess(self, outputs, top_k: int = 1):
        return [{"score": a["score"], "answer": a["answer"]}
                for a in top_answers(outputs["logits"][0], self.model.config.id2label, top_k)]


def top_answers(logits: torch.Tensor, id2label: dict, top_k: int) -> list[dict]:
    """(answers,) logits → the ``top_k`` answers, best first: ``{"answer", "score", "index"}`` with the softmax
    probability as the score (the original pipeline's)."""
    probs = logits.float().softmax(-1)
    scores, indices = probs.topk(min(int(top_k), probs.numel()))
    return [{"answer": str(id2label[int(i)]), "score": float(s), "index": int(i)} for s, i in zip(scores, indices)]


class VLEForITMPipeline(_VLEPipeline):
    """Image-text match probability: ``{"match_probability", "match", "score": [p_false, p_true]}``."""

    text_key = "text"

    def preprocess(self, inputs):
        return dict(self.processor(text=inputs["text"], images=inputs["image"]))

    def postprocess(self, outputs):
        probs = outputs["logits"][0].softmax(-1)
        return {"match_probability": float(probs[1]), "match": bool(probs[1] > probs[0]),
                "score": [float(p) for p in probs]}


def pbc_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.7) -> Image.Image:
    """Darken the parts of ``image`` the text is not about. ``heat`` (rows, cols) is spread over the original through
    the processor's resize and centre crop (``patch_scores_to_pixels``); pixels outside the crop are darkened fully."""
    lowest = heat.min() + 0.4 * (heat.max() - heat.min())  # the original's contrast floor
    span = max(float(heat.max() - lowest), 1e-12)
    level = np.clip((patch_scores_to_pixels(heat, image.width, image.height) - lowest) / span, 0.0, 1.0)
    darkness = np.where(np.isnan(level), 1.0, 1.0 - level) * alpha * 255  # (H, W)
    black = Image.new("RGB", image.size, (0, 0, 0))
    return Image.composite(black, image.convert("RGB"), Image.fromarray(darkness.astype(np.uint8), mode="L"))


class VLEForPBCPipeline(_VLEPipeline):
    """Patch relevance for a phrase: ``scores`` (rows, cols) softmax across patches of the class-1 logits,
    ``probabilities`` (rows, cols) per-patch class-1 probability, and ``image``, an overlay on the original."""

    text_key = "text"

    def preprocess(self, inputs):
        image = load_image(inputs["image"])
        return {**self.processor(text=inputs["text"], images=image), "_image": image}

    def postprocess(self, outputs):
        logits = outputs["logits"][0]  # (patches, 2)
        grid = self.model.config.patch_grid
        patch_logits = logits[: grid * grid]
        scores = patch_logits[:, 1].softmax(0).reshape(grid, grid).numpy()
        probabilities = patch_logits.softmax(-1)[:, 1].reshape(grid, grid).numpy()
        overlay = pbc_overlay(outputs["_image"], scores)
        return {"scores": scores, "probabilities": probabilities, "image": overlay}


class VLEForVCRPipeline(_VLEPipeline):
    """VCR multiple choice: ``{"probabilities", "logits", "choice"}`` (choice is 0-based). Inputs: ``image``,
    ``annotation`` (VCR format) and ``metadata`` (boxes in pixels)."""

    input_keys = ("image", "annotation", "metadata")

    def __init__(self, model, processor, task: str = "q2a", box_mapping: str = "crop", **kwargs):
        self.vcr_task = check_choice(task, "task", TASKS)
        self.box_mapping = check_choice(box_mapping, "box_mapping", BOX_MAPPINGS)
        super().__init__(model, processor, **kwargs)

    def check_example(self, example):
        check_annotation(example["annotation"], self.vcr_task)
        if not isinstance(example["metadata"], dict):
            raise InputError(f"the metadata must be a JSON object with boxes, width and height; got "
                             f"{type(example['metadata']).__name__}")
        return example

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
    """Zero-shot image classification by ITM over label prompts: labels sorted by normalised match probability.
    ``candidate_labels`` is a list of distinct labels; ``hypothesis_template`` holds one ``{}`` for the label."""

    input_keys = ("image", "candidate_labels")

    def check_example(self, example):
        example["candidate_labels"] = check_texts(example["candidate_labels"], "candidate_labels", unique=True)
        return example

    def _sanitize_parameters(self, hypothesis_template=None, **kwargs):
        check_no_extra(kwargs, type(self).__name__, ("hypothesis_template",))
        if hypothesis_template is None:
            return {}, {}, {}
        return {"hypothesis_template": check_template(hypothesis_template)}, {}, {}

    def preprocess(self, inputs, hypothesis_template: str = "a photo of a {}."):
        labels = list(inputs["candidate_labels"])
        prompts = [hypothesis_template.format(label) for label in labels]
        batch = self.processor(text=prompts, images=inputs["image"])
        return {**batch, "_labels": labels}

    def postprocess(self, outputs):
        return rank_labels(outputs["logits"], outputs["_labels"])


def rank_labels(itm_logits: torch.Tensor, labels: list[str]) -> list[dict]:
    """(labels, 2) ITM logits of one prompt per label → labels by match probability normalised over the labels:
    ``{"label", "score", "match_probability"}``, best first."""
    match = itm_logits.float().softmax(-1)[:, 1]  # (labels,)
    normalised = match / match.sum()
    ranked = sorted(zip(labels, normalised.tolist(), match.tolist()), key=lambda r: -r[1])
    return [{"label": label, "score": score, "match_probability": raw} for label, score, raw in ranked]


def check_template(template) -> str:
    """A hypothesis template with exactly one ``{}`` where the label goes."""
    if not isinstance(template, str):
        raise InputError(f"hypothesis_template must be a string with {{}} where the label goes, got "
                         f"{type(template).__name__}")
    try:
        filled = template.format("\0")
    except (KeyError, IndexError, ValueError):
        raise InputError(f"hypothesis_template {template!r} must hold one empty {{}} where the label goes (write "
                         "{{ and }} for literal braces), e.g. 'a photo of a {}.'") from None
    if filled.count("\0") != 1:
        raise InputError(f"hypothesis_template {template!r} must hold exactly one {{}} where the label goes, e.g. "
                         "'a photo of a {}.'")
    return template


# The pipeline of each explanation target family; a head gets the pipeline of the family it explains.
FAMILY_PIPELINES = {"vqa": VLEForVQAPipeline, "itm": VLEForITMPipeline, "pbc": VLEForPBCPipeline,
                    "vcr": VLEForVCRPipeline}
EXTRA_PIPELINES = {"classify": ("itm", VLEZeroShotPipeline)}  # task → (the head it runs on, pipeline)


def pipeline_tasks() -> dict[str, tuple[str, type]]:
    """Every pipeline task → (head task, pipeline class): one per registered head that explains one family, plus
    ``classify`` (zero-shot labels on the ITM head)."""
    tasks = {task: (task, FAMILY_PIPELINES[cls.explains[0]]) for task, cls in HEADS.items()
             if len(cls.explains) == 1 and cls.explains[0] in FAMILY_PIPELINES}
    return {**tasks, **EXTRA_PIPELINES}


def pipeline(task: str, model, processor=None, device=None, dtype="auto", **kwargs) -> _VLEPipeline:
    """Build a VLE pipeline: ``task`` in vqa, itm, pbc, vcr_q2a, vcr_qa2r, classify (and any registered head);
    ``model`` a name, folder, hub id or a loaded model; ``processor`` defaults to the one saved with the model.
    ``dtype``: "auto" (bfloat16 weights for a wide model where ``device`` multiplies bfloat16 natively, else
    float32; a loaded model keeps its own), or float32 / bfloat16 to force one. ``pipe.dtype_choice`` says which."""

    tasks = pipeline_tasks()
    if task not in tasks:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(tasks)}")
    head_task, pipeline_class = tasks[task]
    model_class = HEADS[head_task]
    class_name = model_class.__name__
    check_device(device)
    if isinstance(model, (str, os.PathLike)):
        path = resolve_model_path(model)
        model = model_class.from_pretrained(path, dtype=dtype, dtype_device=device_of(device))
        processor = processor or VLEProcessor.from_pretrained(path)
    elif not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a shipped name, a folder, a hub id or a loaded {class_name}; got "
                         f"{type(model).__name__} ({str(model)[:40]})")
    elif not isinstance(model, model_class):
        raise InputError(f"the {task} pipeline needs a {class_name}, got a {type(model).__name__}: load the model "
                         f"with {class_name}.from_pretrained, or give the pipeline its name")
    elif processor is None:
        raise InputError("pass the processor along with a loaded model")
    elif dtype not in (None, "auto"):
        model = model.to(resolve_dtype(dtype, model.config))
    defaults = {"task": head_task.removeprefix("vcr_")} if pipeline_class is VLEForVCRPipeline else {}
    return pipeline_class(model=model.eval(), processor=processor, device=device,
                          dtype_choice=describe(model.dtype, dtype), **{**defaults, **kwargs})


def device_of(device) -> str:
    """A pipeline's ``device`` argument as a torch device string (None and negative indices: the CPU)."""
    if device is None or (isinstance(device, int) and device < 0):
        return "cpu"
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def check_device(device) -> None:
    """Refuse a device this machine does not have, by name, before transformers or torch fail on it."""
    if device is None:
        return
    try:
        device = torch.device(f"cuda:{device}" if isinstance(device, int) and device >= 0 else
                              "cpu" if isinstance(device, int) else device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'cpu', 'cuda', 'cuda:N' or an index, got {device!r}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"device {device} is not available here ({torch.cuda.device_count()} CUDA devices): use "
                         "device='cpu'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device must be cpu, cuda or mps, got {device}")
