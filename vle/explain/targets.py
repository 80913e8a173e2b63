"""What an explanation explains: one scalar per example, read from a head's logits.

Each target names its ``head`` (``vqa``, ``itm``, ``pbc``, ``vcr``), a human-readable ``label``, and its ``kind``
(``class`` or ``contrastive``). ``score(logits)`` is the differentiable scalar methods attribute (a logit or a logit
difference); ``probability(logits)`` is what perturbation curves track; ``sequences`` are the fused sequences the
score reads (a VCR choice is one sequence of the C the model fuses).

Example:
    >>> import torch
    >>> target = VQAAnswer(2, "circle")
    >>> target.label, float(target.score(torch.tensor([[0.0, 1.0, 3.0]])))
    ('answer "circle"', 3.0)
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError

HEADS = ("vqa", "itm", "pbc", "vcr")


def model_heads(model) -> tuple[str, ...]:
    """The target families a model can be explained for, as its head class declares them (``explains``)."""
    return tuple(getattr(model, "explains", ()))


class Target:
    head: str = ""
    kind: str = "class"

    @property
    def label(self) -> str:
        raise NotImplementedError

    @property
    def sequences(self) -> tuple[int, ...]:
        return (0,)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch, ...) logits → (batch,) differentiable score."""
        raise NotImplementedError

    def probability(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def model_kwargs(self, model) -> dict:
        """Extra forward arguments the model needs to compute this head (``task=`` for VLEForPretraining)."""
        return model.head_kwargs(self.head) if hasattr(model, "head_kwargs") else {}

    def check(self, model) -> None:
        heads = model_heads(model)
        if self.head not in heads:
            raise ValueError(f"{type(model).__name__} has no {self.head.upper()} head, so it cannot explain "
                             f"{self.label}; it answers {', '.join(heads) or 'no head'} targets")

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "Target":
        data = dict(data)
        kind = data.pop("type")
        if kind not in TARGET_TYPES:
            raise ValueError(f"unknown target type {kind!r}; known: {', '.join(TARGET_TYPES)}")
        return TARGET_TYPES[kind](**data)


def _softmax_at(logits: torch.Tensor, index: int) -> torch.Tensor:
    return logits.float().softmax(-1)[..., index]


@dataclass(frozen=True)
class VQAAnswer(Target):
    """The logit of one answer (any answer, not only the top one)."""

    index: int
    answer: str = ""
    head = "vqa"

    def __post_init__(self):
        _check_index(self.index, "answer index")

    def check(self, model) -> None:
        super().check(model)
        _check_answer_index(model, self.index)

    @property
    def label(self) -> str:
        return f'answer "{self.answer or self.index}"'

    def score(self, logits):
        return logits[:, self.index]

    def probability(self, logits):
        return _softmax_at(logits, self.index)


@dataclass(frozen=True)
class TopAnswer(Target):
    """The model's own top VQA answer, whichever it turns out to be. Methods that read the target's score from one
    forward on the unperturbed input take it from that forward, so answering and explaining share it; elsewhere it is
    resolved by a forward first. The ``Explanation`` names the concrete answer (a ``VQAAnswer``)."""

    head = "vqa"

    @property
    def label(self) -> str:
        return "the top answer"

    def score(self, logits):
        return logits.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)

    def probability(self, logits):
        return logits.float().softmax(-1).max(-1).values

    def resolve(self, model, logits) -> VQAAnswer:
        """The concrete answer: the argmax of (1, answers) ``logits``."""
        return vqa_answer(model, int(logits[0].argmax()))


@dataclass(frozen=True)
class VQAContrast(Target):
    """Answer A minus answer B: why A rather than B."""

    index: int
    other: int
    answer: str = ""
    other_answer: str = ""
    head, kind = "vqa", "contrastive"

    def __post_init__(self):
        _check_index(self.index, "answer index")
        _check_index(self.other, "contrast answer index")
        if self.index == self.other:
            raise InputError(f"a contrast needs two different answers: answer {self.answer or self.index!r} rather "
                             "than itself explains nothing (every score would be zero)")

    def check(self, model) -> None:
        super().check(model)
        _check_answer_index(model, self.index)
        _check_answer_index(model, self.other)

    @property
    def label(self) -> str:
        return f'answer "{self.answer or self.index}" rather than "{self.other_answer or self.other}"'

    def score(self, logits):
        return logits[:, self.index] - logits[:, self.other]

    def probability(self, logits):
        pair = logits[:, [self.index, self.other]].float().softmax(-1)
        return pair[:, 0]


@dataclass(frozen=True)
class ITMMatch(Target):
    """The ITM match margin, logit(match) - logit(no match); ``match=False`` explains the mismatch instead."""

    match: bool = True
    head = "itm"

    @property
    def label(self) -> str:
        return "image and text match" if self.match else "image and text do not match"

    def score(self, logits):
        margin = logits[:, 1] - logits[:, 0]
        return margin if self.match else -margin

    def probability(self, logits):
        return _softmax_at(logits, 1 if self.match else 0)


@dataclass(frozen=True)
class PBCPhrase(Target):
    """How strongly the model finds the phrase (the text) in the image: the mean class-1 logit margin over the
    patches in ``patches`` (row-major patch ids), or over all patches when it is empty."""

    patches: tuple[int, ...] = ()
    phrase: str = ""
    head = "pbc"

    def __post_init__(self):
        if isinstance(self.patches, (str, bytes)) or not hasattr(self.patches, "__iter__"):
            raise InputError(f"patches must be a list of patch ids, got {self.patches!r}")
        for patch in self.patches:
            _check_index(patch, "patch id")
        object.__setattr__(self, "patches", tuple(int(p) for p in self.patches))

    def check(self, model) -> None:
        super().check(model)
        count = model.config.patch_grid ** 2
        outside = [p for p in self.patches if p >= count]
        if outside:
            raise InputError(f"patch ids {outside[:5]} are outside the model's {count} patches (0..{count - 1})")

    @property
    def label(self) -> str:
        where = f" at {len(self.patches)} patches" if self.patches else ""
        return f'phrase "{self.phrase}"{where}' if self.phrase else f"PBC phrase{where}"

    def _margin(self, logits):
        margin = logits[..., 1] - logits[..., 0]  # (batch, patches + boxes)
        return margin[:, list(self.patches)] if self.patches else margin

    def score(self, logits):
        return self._margin(logits).mean(-1)

    def probability(self, logits):
        return torch.sigmoid(self._margin(logits).float()).mean(-1)


@dataclass(frozen=True)
class VCRChoice(Target):
    """The logit of one VCR choice (0-based)."""

    choice: int
    head = "vcr"

    def __post_init__(self):
        _check_index(self.choice, "choice")

    @property
    def label(self) -> str:
        return f"choice {self.choice}"

    @property
    def sequences(self):
        return (self.choice,)

    def score(self, logits):
        return logits[:, self.choice]

    def probability(self, logits):
        return _softmax_at(logits, self.choice)


@dataclass(frozen=True)
class VCRContrast(Target):
    """Choice i minus choice j. Token scores are given for choice i's text."""

    choice: int
    other: int
    head, kind = "vcr", "contrastive"

    def __post_init__(self):
        _check_index(self.choice, "choice")
        _check_index(self.other, "contrast choice")
        if self.choice == self.other:
            raise InputError(f"a contrast needs two different choices: choice {self.choice} rather than itself "
                             "explains nothing (every score would be zero)")

    @property
    def label(self) -> str:
        return f"choice {self.choice} rather than choice {self.other}"

    @property
    def sequences(self):
        return (self.choice, self.other)

    def score(self, logits):
        return logits[:, self.choice] - logits[:, self.other]

    def probability(self, logits):
        return logits[:, [self.choice, self.other]].float().softmax(-1)[:, 0]


def _check_index(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InputError(f"the {what} must be a whole number from 0, got {value!r}")


def _check_answer_index(model, index: int) -> None:
    count = len(model.config.id2label)
    if index >= count:
        raise InputError(f"answer index {index} is out of range: the model has {count} answers")


TARGET_TYPES = {cls.__name__: cls for cls in (VQAAnswer, VQAContrast, ITMMatch, PBCPhrase, VCRChoice, VCRContrast)}


def vqa_answer(model, answer: str | int) -> VQAAnswer:
    """A VQA target by answer text (or index), checked against the model's answer list."""
    names = [str(v) for v in model.config.id2label.values()]
    if isinstance(answer, numbers.Integral) and not isinstance(answer, bool):
        if not 0 <= answer < len(names):
            raise InputError(f"answer index {answer} is out of range: the model has {len(names)} answers")
        return VQAAnswer(int(answer), names[answer])
    if not isinstance(answer, str):
        raise InputError(f"an answer is one of the model's answers (text) or its index, got {type(answer).__name__}")
    if answer not in names:
        stripped = answer.strip()
        if stripped in names:
            return VQAAnswer(names.index(stripped), stripped)
        raise InputError(f"{answer!r} is not one of the model's {len(names)} answers (e.g. {', '.join(names[:5])})")
    return VQAAnswer(names.index(answer), answer)
