"""The method base class and the one registry every explanation method is listed in.

A method turns (model, inputs, target) into an ``Attribution``: raw scores over the fused image tokens (patches, then
boxes; the image CLS token left out) and over the text tokens of the explained sequence. ``vle.explain.explain``
turns that into an ``Explanation``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ...errors import InputError, check_int

METHODS: dict[str, type["Method"]] = {}


def as_numpy(value):
    """A tensor, on whatever device and in whatever float type the model runs, as a numpy array (floats as float32);
    anything else unchanged."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() else value).numpy()


@contextmanager
def seeded(seed: int):
    """Torch's and numpy's global random generators seeded for the block and restored after (Captum's sampling
    methods draw from both), so a sampling method gives the same scores for the same call."""
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed))
            yield
    finally:
        np.random.set_state(state)


@dataclass
class Attribution:
    """Scores as numpy arrays: tensors given for ``image``, ``text`` or metadata values are brought to the CPU."""

    image: np.ndarray  # (patches + boxes,)
    text: np.ndarray  # (text_len,) of the explained sequence, padding included
    metadata: dict = field(default_factory=dict)
    logits: object = None  # the head's logits on the unperturbed input, when the method computed them anyway

    def __post_init__(self):
        self.image, self.text = as_numpy(self.image), as_numpy(self.text)
        self.metadata = {key: as_numpy(value) for key, value in self.metadata.items()}


class Method:
    """Subclasses set ``name``, ``heads`` (target heads they explain), ``kinds`` (``class`` / ``contrastive``
    targets), ``signed``, and ``needs_image_tower`` (True when gradients or perturbations must pass through the image
    encoder, so cached image features cannot be used), and implement ``attribute``. Options are keyword arguments."""

    name: ClassVar[str] = ""
    heads: ClassVar[frozenset] = frozenset({"vqa", "itm", "pbc", "vcr"})
    kinds: ClassVar[frozenset] = frozenset({"class", "contrastive"})
    signed: ClassVar[bool] = False
    needs_image_tower: ClassVar[bool] = False
    options: ClassVar[dict] = {}  # option name → default
    benchmark: ClassVar[bool] = True  # enters the faithfulness benchmark of the heads it explains (False: opts out)
    target_specific: ClassVar[bool] = True  # its map depends on the target (False: one map for every target)
    # reads the target's score from one forward on the unperturbed input (so a TopAnswer is resolved from it)
    reads_one_forward: ClassVar[bool] = False

    def __init__(self, **options):
        unknown = set(options) - set(self.options)
        if unknown:
            known = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
            raise InputError(f"method {self.name!r} has no option {', '.join(sorted(unknown))}; its options: {known}")
        self.settings = {**self.options, **options}

    @classmethod
    def supports(cls, target) -> bool:
        return target.head in cls.heads and target.kind in cls.kinds

    @classmethod
    def check(cls, target) -> None:
        if cls.supports(target):
            return
        if target.head not in cls.heads:
            others = [m for m, c in METHODS.items() if c.supports(target)]
            raise ValueError(f"method {cls.name!r} cannot explain {target.label} ({target.head.upper()} targets); it "
                             f"explains {', '.join(sorted(h.upper() for h in cls.heads))} targets. Methods for this "
                             f"target: {', '.join(others)}")
        raise ValueError(f"method {cls.name!r} does not support {target.kind} targets such as {target.label}")

    def check_options(self, model) -> None:
        """Check option values against the model before any forward (the options every method shares by name:
        ``layer``, ``head``, counts and switches); a method with other options checks them in ``attribute``."""
        config = model.config
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        for key, value in self.settings.items():
            where = f"method {self.name!r}: option {key}"
            if key == "layer" and value not in ("last", "mean"):
                if check_int(value, where) not in range(-layers, layers):
                    raise InputError(f"method {self.name!r}: layer {value} is out of range: the fusion has {layers} "
                                     f"layers (0..{layers - 1}, or -1 for the last)")
            elif key == "head" and value != "mean":
                if check_int(value, where) not in range(-heads, heads):
                    raise InputError(f"method {self.name!r}: head {value} is out of range: the fusion layers have "
                                     f"{heads} attention heads (0..{heads - 1})")
            elif key in ("n_steps", "patch_window", "batch_size", "n_samples"):
                check_int(value, where, low=1)
            elif key == "seed" and not isinstance(self.options.get(key), str):
                check_int(value, where)
            elif isinstance(self.options.get(key), bool) and not isinstance(value, bool):
                raise InputError(f"{where} must be True or False, got {value!r}")

    def attribute(self, model, inputs, target) -> Attribution:
        raise NotImplementedError


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name to be registered")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, **options) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise InputError(f"unknown explanation method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](**options)
