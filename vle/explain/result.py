"""``Explanation``: the frozen result of explaining one prediction, with the shape of every field.

Example:
    >>> import numpy as np
    >>> from vle.explain.targets import VQAAnswer
    >>> e = Explanation(patch_scores=np.ones((2, 2)), box_scores=np.zeros(0), tokens=("[CLS]", "▁red", "[SEP]"),
    ...                 token_scores=np.array([0.0, 4.0, 0.0]), words=("red",), word_scores=np.array([4.0]),
    ...                 target=VQAAnswer(0, "red"), method="random", signed=False, metadata={})
    >>> e.modality_share
    {'image': 0.5, 'text': 0.5}
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, fields

import numpy as np

from ..errors import InputError
from .targets import Target

_ARRAYS = ("patch_scores", "box_scores", "token_scores", "word_scores")


@dataclass(frozen=True)
class Explanation:
    """Relevance of every image patch, box token, text token and word for one ``target``.

    - ``patch_scores``: (rows, cols) float, the patch grid (row-major like the model's patches).
    - ``box_scores``: (n_boxes,) float, one per object box token (VCR); empty when the input has none.
    - ``tokens``: text_len sub-word pieces as the tokenizer wrote them; ``token_scores``: (text_len,).
    - ``words``: n_words words (pieces merged, special tokens left out); ``word_scores``: (n_words,), the sum of
      their pieces' scores. ``metadata["word_of_token"]`` maps each token to its word (-1 for special tokens).
    - ``target``: what was explained (``.label`` reads it out); ``method``: the registry name;
      ``signed``: whether scores may be negative (evidence against the target) or are relevances >= 0.
    - ``metadata``: method settings and diagnostics (JSON values or numpy arrays), e.g. ``seconds``,
      ``target_score``, IG's ``convergence_delta``.
    """

    patch_scores: np.ndarray
    box_scores: np.ndarray
    tokens: tuple[str, ...]
    token_scores: np.ndarray
    words: tuple[str, ...]
    word_scores: np.ndarray
    target: Target
    method: str
    signed: bool
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in _ARRAYS:
            value = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        object.__setattr__(self, "words", tuple(str(w) for w in self.words))
        object.__setattr__(self, "metadata", dict(self.metadata))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if self.patch_scores.ndim != 2 or 0 in self.patch_scores.shape:
            problems.append(f"patch_scores must be a non-empty (rows, cols) grid, got shape {self.patch_scores.shape}")
        if self.box_scores.ndim != 1:
            problems.append(f"box_scores must be 1-D (n_boxes,), got shape {self.box_scores.shape}")
        if self.token_scores.shape != (len(self.tokens),):
            problems.append(f"token_scores has shape {self.token_scores.shape} but there are {len(self.tokens)} "
                            "tokens: give one score per token")
        if self.word_scores.shape != (len(self.words),):
            problems.append(f"word_scores has shape {self.word_scores.shape} but there are {len(self.words)} words")
        for name in _ARRAYS:
            if not np.isfinite(getattr(self, name)).all():
                problems.append(f"{name} holds NaN or infinite values")
        if not self.signed:
            lowest = min((float(getattr(self, n).min()) for n in _ARRAYS if getattr(self, n).size), default=0.0)
            if lowest < -1e-6:
                problems.append(f"scores go down to {lowest:.3g} but signed=False: pass signed=True for scores that "
                                "can be evidence against the target, or clip them at zero")
        if not isinstance(getattr(self.target, "label", None), str):
            problems.append(f"target must have a text .label, got {type(self.target).__name__}")
        if not isinstance(self.method, str) or not self.method:
            problems.append("method must be the non-empty name of the method")
        if not isinstance(self.signed, bool):
            problems.append(f"signed must be True or False, got {self.signed!r}")
        if problems:
            raise ValueError("invalid Explanation: " + "; ".join(problems))

    # -- derived ---------------------------------------------------------------------------------------------------

    @property
    def modality_share(self) -> dict[str, float]:
        """Fractions of the total absolute relevance on the image (patches and boxes) and on the text; both 0 when
        there is no relevance at all."""
        image = float(np.abs(self.patch_scores).sum() + np.abs(self.box_scores).sum())
        text = float(np.abs(self.token_scores).sum())
        total = image + text
        if total == 0:
            return {"image": 0.0, "text": 0.0}
        return {"image": image / total, "text": text / total}

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patch_scores.shape)

    # -- save and load ---------------------------------------------------------------------------------------------

    def save(self, path) -> None:
        """One ``.npz`` file: the arrays, metadata arrays, and a JSON header with everything else."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        plain = {}
        for key, value in self.metadata.items():
            if isinstance(value, np.ndarray):
                arrays[f"metadata.{key}"] = value
            else:
                plain[key] = value
        header = {"tokens": list(self.tokens), "words": list(self.words), "target": self.target.to_dict(),
                  "method": self.method, "signed": self.signed, "metadata": plain, "format": 1}
        try:
            encoded = json.dumps(header)
        except TypeError as error:
            raise ValueError(f"metadata must hold JSON values or numpy arrays to be saved: {error}") from None
        with open(path, "wb") as handle:
            np.savez_compressed(handle, header=np.array(encoded), **arrays)

    @classmethod
    def load(cls, path) -> "Explanation":
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                metadata = dict(header["metadata"])
                metadata.update({k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("metadata.")})
                arrays = {name: data[name] for name in _ARRAYS}
                header = {key: header[key] for key in ("tokens", "words", "target", "method", "signed")}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise InputError(f"{path} is not a saved Explanation (Explanation.save writes one): {error}") from None
        return cls(**arrays, tokens=tuple(header["tokens"]), words=tuple(header["words"]),
                   target=Target.from_dict(header["target"]), method=header["method"], signed=header["signed"],
                   metadata=metadata)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Explanation):
            return NotImplemented
        same_arrays = all(np.array_equal(getattr(self, n), getattr(other, n)) for n in _ARRAYS)
        rest = [f.name for f in fields(self) if f.name not in _ARRAYS and f.name != "metadata"]
        return same_arrays and all(getattr(self, n) == getattr(other, n) for n in rest)

    __hash__ = None
