"""``explain_batch``: many (image, question) pairs explained by several methods, sharing batched forwards.

Methods that read one recorded forward (``RecordedMethod``: raw attention, rollout, co-attention relevance, Grad-CAM)
run on the whole batch at once: one forward (and one backward when a method needs gradients) records every example,
and each example's scores are read from its slice of the recording, exactly as for one example (each example's
score depends only on its own inputs). Methods that perturb the input or integrate gradients run one example at a
time, on the batch's image features. Each distinct image goes through the image tower once.

>>> import numpy as np
>>> from vle.testing import tiny_vqa_pipeline
>>> pipe = tiny_vqa_pipeline()
>>> rows = explain_batch(pipe.model, pipe.processor, [np.zeros((32, 32, 3), np.uint8)] * 2,
...                      ["what color ?", "how many circles are there ?"], ["rollout", "coattention_relevance"])
>>> len(rows), sorted(rows[1]), rows[1]["rollout"].patch_scores.shape
(2, ['coattention_relevance', 'rollout'], (4, 4))
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..pipelines import BatchOutput, image_features_once, to_model
from .core import check_method, explain, package
from .inputs import ExplainInputs
from .methods import get_method
from .methods.propagation import RecordedMethod, record
from .result import Explanation
from .targets import Target, TopAnswer, vqa_answer


@dataclass(frozen=True)
class RowAnswers(Target):
    """One VQA answer per example of a batch (``indices``): the batched recording's target."""

    indices: tuple[int, ...]
    head = "vqa"

    @property
    def label(self) -> str:
        return "each example's answer"

    def score(self, logits):
        rows = torch.as_tensor(self.indices, device=logits.device)[:, None]
        return logits.gather(-1, rows).squeeze(-1)


def explain_batch(model, processor, images: list, texts: list[str], methods, options: dict | None = None,
                  answers: list[int] | None = None, prepared: BatchOutput | None = None
                  ) -> list[dict[str, Explanation]]:
    """Explain a VQA answer for each (image, text) pair with every method in ``methods`` (``options``: per method
    name, its keyword options): the model's top answer, or ``answers[i]`` (answer indices). ``prepared``: the pairs'
    ``batch_forward``, whose processed images and image features are reused. Returns one ``{method: Explanation}``
    per pair, in order."""
    if len(images) != len(texts) or not texts or (answers is not None and len(answers) != len(texts)):
        raise InputError("give one image (and answer, if any) per text: lists of the same, non-zero length")
    if model.training:
        raise ValueError("put the model in eval mode (model.eval()): dropout makes explanations random")
    target = TopAnswer() if answers is None else RowAnswers(tuple(int(a) for a in answers))
    runners = {name: get_method(name, **(options or {}).get(name, {})) for name in methods}
    for name, runner in runners.items():
        check_method(model, runner, vqa_answer(model, answers[0]) if answers is not None else target)
    started = time.perf_counter()
    batch = dict(processor.tokenize(texts))
    pixels = prepared.pixels if prepared is not None else processor.preprocess_images(images)  # (n, 3, S, S)
    rows = [ExplainInputs.from_batch({**{k: v[[i]] for k, v in batch.items()}, "pixel_values": pixels[[i]]},
                                     processor).for_model(model) for i in range(len(texts))]
    features = prepared.features if prepared is not None else image_features_once(model, pixels)  # (n, 1+P, Hv)
    for i, row in enumerate(rows):
        row.image_features = features[[i]]
    together = ExplainInputs(to_model(model, {**batch, "pixel_values": pixels}), (), image_features=features)
    results: list[dict[str, Explanation]] = [{} for _ in texts]
    for group in recording_groups(model, runners):
        recording = record(model, together, target, group["needs"])
        shared = (time.perf_counter() - started) / len(texts)
        for i, row in enumerate(rows):
            part = recording.row(i)
            resolved = target.resolve(model, part.logits) if answers is None else vqa_answer(model, answers[i])
            for name in group["methods"]:
                attribution = runners[name].from_recording(part, row, resolved)
                results[i][name] = package(model, row, resolved, runners[name], attribution, shared)
        started = time.perf_counter()
    for name, runner in runners.items():  # the others, one example at a time (image features reused)
        if not isinstance(runner, RecordedMethod):
            for i, row in enumerate(rows):
                single = target if answers is None else vqa_answer(model, answers[i])
                results[i][name] = explain(model, row, single, name, **(options or {}).get(name, {}))
    return [{name: result[name] for name in runners} for result in results]


def recording_groups(model, runners: dict) -> list[dict]:
    """The one-forward methods grouped so that each group needs one recording: ``{"needs", "methods"}``."""
    groups: list[dict] = []
    for name, runner in runners.items():
        if not isinstance(runner, RecordedMethod):
            continue
        needs = runner.needs(model)
        for group in groups:
            merged = group["needs"].merge(needs)
            if merged is not None:
                group["needs"] = merged
                group["methods"].append(name)
                break
        else:
            groups.append({"needs": needs, "methods": [name]})
    return groups


__all__ = ["explain_batch", "recording_groups"]
