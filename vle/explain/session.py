"""``Session``: one model, its processor and the per-image feature cache, for everything interactive. It answers,
lists top-k, matches, classifies, explains, contrasts and compares; the explorers, the command line and the
notebooks all call it, so a question runs the same way everywhere and the image tower runs once per image.

    session = Session.from_pretrained("vle-tiny-shapes-vqa")
    inputs, answers = session.ask(image, "what color is the circle ?")      # the tower runs here, once
    explanation = session.explain(inputs, answer=answers[0]["answer"])       # reuses its features
    why = session.contrast(inputs, answers[0]["answer"], answers[1]["answer"])
    table = session.compare(inputs, methods=["rollout", "gradcam"])

>>> import numpy as np
>>> from vle.testing import tiny_vqa_pipeline
>>> pipe = tiny_vqa_pipeline()
>>> session = Session(pipe.model, pipe.processor)
>>> inputs, answers = session.ask(np.zeros((32, 32, 3), np.uint8), "what color is the circle ?", top_k=2)
>>> [a["answer"] for a in answers] == [a["answer"] for a in pipe(image=np.zeros((32, 32, 3), np.uint8),
...                                                                 question="what color is the circle ?", top_k=2)]
True
>>> session.explain(inputs, answer="red").target.label
'answer "red"'
"""

from __future__ import annotations

import os

import torch

from ..configuration_vle import VLEConfig
from ..errors import InputError, check_int, check_text, check_texts
from ..hub import resolve_model_path
from ..image_utils import load_image
from ..modeling_vle import HEADS
from ..pipelines import batch_logits, check_template, rank_labels, to_model, top_answers
from ..precision import describe, resolve_dtype
from ..processing_vle import VLEProcessor
from .core import explain
from .inputs import ExplainInputs, ImageFeatureCache, forward
from .methods import METHODS
from .result import Explanation
from .targets import (ITMMatch, PBCPhrase, Target, TopAnswer, VCRChoice, VQAAnswer, VQAContrast, model_heads,
                      vqa_answer)


# What explain, contrast and the explorers use unless told otherwise: chosen by the faithfulness protocol on selection
# seeds (docs/explanations.md, "The default method"). When no method was clearly best, the default is the simplest of
# the best and DEFAULT_METHOD_NOTE says so next to the explorers' method lists (empty when the default is clear).
DEFAULT_METHOD = "coattention_relevance"
DEFAULT_METHOD_NOTE = ("no method is clearly the most faithful; this one is never beaten on the pointing game, the "
                       "image deletion AUC and the object-removal correlation, and is the simplest such method whose "
                       "map depends on the answer (rollout ties it with one map for every answer)")


class Session:
    """``model``: a loaded VLE head model (with its ``processor``), or a shipped name, folder or hub id (``head``:
    which head class to load, a task name of ``vle.HEADS``; default: the one the checkpoint was saved as).
    ``dtype``: "auto" (bfloat16 weights for a wide model on hardware that multiplies bfloat16, else float32; a loaded
    model keeps its own) or float32 / bfloat16; ``dtype_choice`` says which was used."""

    def __init__(self, model, processor=None, head: str | None = None, cache_size: int = 8, dtype="auto"):
        if isinstance(model, (str, os.PathLike)):
            path = resolve_model_path(model)
            model_class = HEADS[check_head(head)] if head else head_class_of(path)
            model = model_class.from_pretrained(path, dtype=dtype)
            processor = processor or VLEProcessor.from_pretrained(path)
        elif head is not None:
            raise InputError("head= chooses what to load from a name or folder; this model is already loaded")
        elif dtype not in (None, "auto") and isinstance(model, torch.nn.Module) and hasattr(model, "config"):
            model = model.to(resolve_dtype(dtype, model.config))
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "explains"):
            raise InputError(f"model must be a VLE head model or its name, got {type(model).__name__}")
        if processor is None:
            raise InputError("pass the processor along with a loaded model")
        self.model, self.processor = model.eval(), processor
        self.cache = ImageFeatureCache(check_int(cache_size, "cache_size", low=1))
        self.dtype_choice = describe(self.model.dtype, dtype)

    @classmethod
    def from_pretrained(cls, name, head: str | None = None, cache_size: int = 8, dtype="auto") -> "Session":
        return cls(name, head=head, cache_size=cache_size, dtype=dtype)

    # -- inputs ----------------------------------------------------------------------------------------------------

    def prepare(self, image, text: str) -> ExplainInputs:
        """One image (read by the one loader) and one text as model inputs, with the image features attached from
        the cache (the tower runs only for an image not seen lately)."""
        check_text(text, "text")
        inputs = ExplainInputs.build(self.processor, image, text).for_model(self.model)
        return self.with_features(inputs)

    def with_features(self, inputs: ExplainInputs) -> ExplainInputs:
        """``inputs`` with its image features from the cache."""
        if inputs.image_features is None:
            inputs.image_features = self.cache.features(self.model, inputs.model_inputs["pixel_values"])
        return inputs

    def _inputs(self, inputs_or_image, text: str | None) -> ExplainInputs:
        if isinstance(inputs_or_image, ExplainInputs):
            if text is not None:
                raise InputError("give prepared inputs or an image and a text, not both")
            return self.with_features(inputs_or_image.for_model(self.model))
        if text is None:
            raise InputError("give the text along with the image")
        return self.prepare(inputs_or_image, text)

    # -- predictions -----------------------------------------------------------------------------------------------

    def logits(self, inputs: ExplainInputs, family: str) -> torch.Tensor:
        """The head's logits for ``inputs`` (the image features reused), for a target family the model explains."""
        self._needs(family)
        target = {"vqa": VQAAnswer(0), "itm": ITMMatch(), "pbc": PBCPhrase(), "vcr": VCRChoice(0)}[family]
        pooled = {"pooled_only": True} if self.model.reads_pooled_only(family) else {}  # less work, same logits
        with torch.no_grad():
            return forward(self.model, self.with_features(inputs), target, **pooled).logits

    def answers(self, inputs: ExplainInputs, top_k: int = 5) -> list[dict]:
        """The top-k VQA answers, best first: ``{"answer", "score", "index"}`` (the pipeline's scores)."""
        top_k = check_int(top_k, "top_k", low=1)
        return top_answers(self.logits(inputs, "vqa")[0], self.model.config.id2label, top_k)

    def ask(self, image, question: str, top_k: int = 5) -> tuple[ExplainInputs, list[dict]]:
        """A question about an image: its prepared inputs (to explain them next) and the top-k answers."""
        inputs = self.prepare(image, question)
        return inputs, self.answers(inputs, top_k)

    def ask_and_explain(self, image, question: str, top_k: int = 5, method: str = DEFAULT_METHOD,
                        **options) -> tuple[ExplainInputs, list[dict], Explanation]:
        """A question answered and its top answer explained, sharing one forward where the method runs one on the
        unperturbed input (the attention methods): (prepared inputs, top-k answers, explanation). The answers are
        those of the explained forward."""
        top_k = check_int(top_k, "top_k", low=1)
        inputs = self.prepare(image, question)
        explanation = self.explain(inputs, target=TopAnswer(), method=method, **options)
        names = self.model.config.id2label
        answers = [{"answer": str(names[i]), "score": p, "index": i}
                   for i, p in explanation.metadata["top_answers"][:top_k]]
        if len(answers) < top_k:
            answers = self.answers(inputs, top_k)
        return inputs, answers, explanation

    def ask_many(self, images, questions, top_k: int = 5, batch_size: int = 8) -> list[list[dict]]:
        """Top-k answers for many (image, question) pairs, run in batches: each distinct image of a batch through the
        image tower once, the questions padded to the batch's longest (as the VQA pipeline does with a list)."""
        self._needs("vqa")
        top_k, batch_size = check_int(top_k, "top_k", low=1), check_int(batch_size, "batch_size", low=1)
        questions = check_texts(questions, "questions")
        if isinstance(images, (str, bytes)) or not isinstance(images, (list, tuple)) or len(images) != len(questions):
            raise InputError("give one image per question (two lists of the same length)")
        answers = []
        for start in range(0, len(questions), batch_size):
            chunk = [load_image(image) for image in images[start:start + batch_size]]
            logits = batch_logits(self.model, self.processor, chunk, questions[start:start + batch_size])
            answers += [top_answers(row, self.model.config.id2label, top_k) for row in logits]
        return answers

    def match(self, inputs: ExplainInputs) -> float:
        """The ITM probability that the text matches the image."""
        return float(self.logits(inputs, "itm").float().softmax(-1)[0, 1])

    def classify(self, image, labels, template: str = "a photo of a {}.") -> list[dict]:
        """Zero-shot labels by ITM, as the classify pipeline ranks them: ``{"label", "score", "match_probability"}``."""
        self._needs("itm")
        labels = check_texts(labels, "labels", unique=True)
        template = check_template(template)
        batch = to_model(self.model, self.processor(text=[template.format(label) for label in labels], images=image))
        features = self.cache.features(self.model, batch.pop("pixel_values"))  # one image, shared by every label
        with torch.no_grad():
            logits = self.model(**batch, image_features=features, **self.model.head_kwargs("itm")).logits
        return rank_labels(logits, labels)

    def prepare_vcr(self, annotation, image, metadata) -> ExplainInputs:
        """A VCR item (annotation, image and metadata in the VCR format) for this VCR head, image features attached."""
        self._needs("vcr")
        task = self.model.task.removeprefix("vcr_")
        batch = self.processor.vcr(annotation, image, metadata, task=task, patch_size=self.model.config.patch_size)
        return self.with_features(ExplainInputs.from_batch(dict(batch), self.processor).for_model(self.model))

    def choices(self, inputs: ExplainInputs) -> torch.Tensor:
        """The probability of each choice of a VCR item, (choices,)."""
        return self.logits(inputs, "vcr")[0].float().softmax(-1)

    def default_target(self, inputs: ExplainInputs) -> Target:
        """The top VQA answer, the ITM match, or the PBC phrase, whichever head the model has first."""
        families = model_heads(self.model)
        if families and families[0] == "vqa":
            return vqa_answer(self.model, self.answers(inputs, 1)[0]["index"])
        if families and families[0] == "itm":
            return ITMMatch(True)
        if families and families[0] == "pbc":
            return PBCPhrase(phrase=self.processor.tokenizer.decode(inputs.model_inputs["input_ids"][0],
                                                                    skip_special_tokens=True))
        raise InputError(f"{type(self.model).__name__}: give a target explicitly (VCR items need VCRChoice)")

    # -- explanations ----------------------------------------------------------------------------------------------

    def explain(self, inputs_or_image, text: str | None = None, target: Target | None = None,
                method: str = DEFAULT_METHOD, answer=None, **options) -> Explanation:
        """Explain ``target`` (or the answer named by ``answer``, or the default target) on prepared inputs or on an
        image and a text, with a registered method and its options."""
        if answer is not None and target is not None:
            raise InputError("give the answer or the target, not both")
        inputs = self._inputs(inputs_or_image, text)
        if answer is not None:
            target = vqa_answer(self.model, answer)
        target = target if target is not None else self.default_target(inputs)
        return explain(self.model, inputs, target, method, cache=self.cache, **options)

    def contrast(self, inputs: ExplainInputs, answer, rather_than, method: str = DEFAULT_METHOD,
                 **options) -> Explanation:
        """Why ``answer`` rather than ``rather_than`` (answer texts or indices)."""
        first, second = vqa_answer(self.model, answer), vqa_answer(self.model, rather_than)
        target = VQAContrast(first.index, second.index, first.answer, second.answer)
        return self.explain(inputs, target=target, method=method, **options)

    def compare(self, inputs: ExplainInputs, target: Target | None = None, methods=None,
                options: dict | None = None) -> dict[str, Explanation]:
        """Every method that can explain the target (or those named), on the same inputs; ``options`` per method."""
        inputs = self.with_features(inputs)
        target = target if target is not None else self.default_target(inputs)
        names = list(methods) if methods is not None else self.methods_for(target)
        options = options or {}
        return {name: explain(self.model, inputs, target, name, cache=self.cache, **options.get(name, {}))
                for name in names}

    @staticmethod
    def methods_for(target: Target) -> list[str]:
        """The registered methods that can explain ``target``."""
        return [name for name, cls in METHODS.items() if cls.supports(target)]

    def _needs(self, family: str) -> None:
        if family not in model_heads(self.model):
            raise InputError(f"{type(self.model).__name__} has no {family.upper()} head; it answers "
                             f"{', '.join(model_heads(self.model)) or 'no'} targets")


def check_head(head: str) -> str:
    if head not in HEADS:
        raise InputError(f"unknown head {head!r}; registered heads: {', '.join(HEADS)}")
    return head


def head_class_of(path: str):
    """The head class a saved checkpoint was written from (its config's ``architectures``), else VLEForVQA."""
    architectures = getattr(VLEConfig.from_pretrained(path), "architectures", None) or ()
    by_name = {cls.__name__: cls for cls in HEADS.values()}
    return next((by_name[name] for name in architectures if name in by_name), HEADS["vqa"])
