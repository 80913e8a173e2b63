"""``explain``: run one registered method on one example and package its scores as an ``Explanation`` (the
``Session`` in ``session.py`` does this for interactive use, with a processor and an image-feature cache).

Example:
    >>> import numpy as np
    >>> from vle.testing import tiny_vqa_pipeline
    >>> from vle.explain import ExplainInputs, VQAAnswer
    >>> pipe = tiny_vqa_pipeline()
    >>> inputs = ExplainInputs.build(pipe.processor, np.zeros((32, 32, 3), np.uint8), "what color is the circle ?")
    >>> e = explain(pipe.model, inputs, VQAAnswer(0, "red"))
    >>> e.method, e.patch_scores.shape, e.target.label
    ('coattention_relevance', (4, 4), 'answer "red"')
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ..errors import InputError
from .inputs import ExplainInputs, ImageFeatureCache, forward, merge_words
from .methods import get_method
from .result import Explanation
from .targets import Target, TopAnswer

TOP_ANSWERS = 10  # how many of the explained forward's answers an explanation of a VQA answer keeps


def explain(model, inputs: ExplainInputs, target, method: str = "coattention_relevance",
            cache: ImageFeatureCache | None = None, **options) -> Explanation:
    """Explain ``target`` on ``inputs`` with the registered ``method`` (options are the method's keyword options).

    Methods that need no gradient into the image tower run on cached image features (``cache``, or features already
    on ``inputs``), so asking a new question about the same image skips the tower. The method runs where the model's
    weights are (``inputs`` are moved there); the scores come back as numpy arrays.
    """
    if not isinstance(inputs, ExplainInputs):
        raise InputError(f"inputs must be ExplainInputs (ExplainInputs.build(processor, image, text)), got "
                         f"{type(inputs).__name__}")
    if not isinstance(target, Target):
        raise InputError(f"target must be a vle.explain target such as VQAAnswer or VCRChoice, got "
                         f"{type(target).__name__}")
    check_target_fits(target, inputs)
    runner = get_method(method, **options)
    check_method(model, runner, target)
    if model.training:
        raise ValueError("put the model in eval mode (model.eval()): dropout makes explanations random")
    started = time.perf_counter()
    inputs = inputs.for_model(model).for_target(target)  # a VCR item's explained choice: its tokens and boxes
    if isinstance(target, TopAnswer) and not runner.reads_one_forward:  # perturbations must keep one answer
        with torch.no_grad():
            target = target.resolve(model, forward(model, inputs, target).logits)
    if runner.needs_image_tower:
        inputs = replace(inputs, image_features=None)
    elif inputs.image_features is None:  # the tower runs once, without gradient; a cache keeps it for later
        cache = cache if cache is not None else ImageFeatureCache(size=1)
        inputs = replace(inputs, image_features=cache.features(model, inputs.model_inputs["pixel_values"]))
    attribution = runner.attribute(model, inputs, target)
    seconds = time.perf_counter() - started
    return package(model, inputs, target, runner, attribution, seconds)


def check_method(model, runner, target) -> None:
    """The target fits the model, and the method (with its options) can explain it on this model."""
    target.check(model)
    runner.check(target)
    runner.check_options(model)


def check_target_fits(target, inputs: ExplainInputs) -> None:
    """A VCR target needs a VCR item with that many choices; other targets need one text."""
    if target.head == "vcr" and not inputs.is_vcr:
        raise InputError(f"{target.label} explains a VCR item, but the inputs hold one text: build them from a VCR "
                         "annotation (processor.vcr)")
    if inputs.is_vcr:
        if target.head != "vcr":
            raise InputError(f"the inputs are a VCR item: explain one of its choices (VCRChoice), not {target.label}")
        count = inputs.model_inputs["input_ids"].shape[1]
        outside = [s for s in target.sequences if s >= count]
        if outside:
            raise InputError(f"choice {outside[0]} is out of range: the item has {count} choices (0..{count - 1})")


def package(model, inputs, target, runner, attribution, seconds: float) -> Explanation:
    grid = model.config.patch_grid
    image = np.asarray(attribution.image, dtype=np.float64)
    expected = grid * grid + inputs.n_boxes
    if inputs.is_vcr and image.ndim == 1 and len(image) > expected:  # the fused choices' padded box rows: not boxes
        image = image[:expected]
    if image.shape != (expected,):
        raise RuntimeError(f"method {runner.name!r} returned {image.shape} image scores, expected ({expected},)")
    shown = inputs.for_target(target)
    sequence = shown.flat_sequence_ids(target)[0]
    mask = shown.model_inputs.get("attention_mask")
    if mask is not None:
        mask = (mask[0, sequence] if shown.is_vcr else mask[0]).bool().cpu().numpy()
    text = np.asarray(attribution.text, dtype=np.float64)
    text = text[mask] if mask is not None else text
    words, word_scores, word_of_token = merge_words(shown.tokens, text, shown.special_tokens)
    metadata = {**attribution.metadata, "seconds": seconds, "word_of_token": word_of_token,
                "image_features_cached": inputs.image_features is not None}
    logits = attribution.logits
    with torch.no_grad():
        logits = forward(model, inputs, target).logits if logits is None else logits.detach()
        if isinstance(target, TopAnswer):
            target = target.resolve(model, logits)
        metadata["target_score"] = float(target.score(logits)[0])
        metadata["target_probability"] = float(target.probability(logits)[0])
        if target.head == "vqa":  # the answers the explained forward gave, best first: (index, probability)
            top = logits[0].float().softmax(-1).topk(min(TOP_ANSWERS, logits.shape[-1]))
            metadata["top_answers"] = [[int(i), float(p)] for p, i in zip(*top)]
    return Explanation(patch_scores=image[: grid * grid].reshape(grid, grid), box_scores=image[grid * grid:],
                       tokens=shown.tokens, token_scores=text, words=words, word_scores=np.asarray(word_scores),
                       target=target, method=runner.name, signed=runner.signed, metadata=metadata)
