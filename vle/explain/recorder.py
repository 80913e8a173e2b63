"""Record attention probabilities (and optionally hidden states and their gradients) of a VLE model by name.

Names and shapes (``batch`` counts sequences: a VCR item with C choices is C sequences; ``image_len`` is
1 + patches in the towers and 1 + patches + boxes in the fusion):

===============================================  ==============================================
``vision.{i}.attention``                         CLIP self-attention, (batch, heads, image_len, image_len)
``text.{i}.attention``                           DeBERTa self-attention, (batch, heads, text_len, text_len)
``fusion.text.{i}.self_attention``               (batch, heads, text_len, text_len)
``fusion.text.{i}.cross_attention``              text → image: text queries, (batch, heads, text_len, image_len)
``fusion.image.{i}.self_attention``              (batch, heads, image_len, image_len)
``fusion.image.{i}.cross_attention``             image → text: image queries, (batch, heads, image_len, text_len)
``fusion.text.{i}.hidden`` / ``fusion.image.{i}.hidden``   fusion layer outputs, (batch, len, H) (``hidden=True``)
===============================================  ==============================================

The towers run only when the model computes image features itself: with ``image_features=`` given, no ``vision.*``
entry appears. Gradients (``grads=True``) land in ``recorder.grads`` under the same names after ``backward()``.

Example:
    >>> import torch
    >>> from vle import VLEConfig, VLEForVQA
    >>> model = VLEForVQA(VLEConfig.tiny()).eval()
    >>> with Recorder(model) as recorder:
    ...     _ = model(input_ids=torch.tensor([[1, 5, 6, 2]]), pixel_values=torch.zeros(1, 3, 32, 32))
    >>> tuple(recorder["fusion.text.1.cross_attention"].shape)
    (1, 4, 4, 17)
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

import torch
from torch import nn

ATTENTION_KINDS = ("vision", "text", "fusion")


def base_model(model: nn.Module):
    """The VLEModel inside any head (or the model itself)."""
    return getattr(model, "base_vle", model)


def _named_points(model: nn.Module, attentions: Iterable[str], hidden: bool):
    """(name, module, kind) for every point to hook; kind says how to read the module's output."""
    vle = base_model(model)
    points = []
    if "vision" in attentions:
        for i, layer in enumerate(vle.vision_model.vision_model.encoder.layers):
            points.append((f"vision.{i}.attention", layer.self_attn, "pair"))
    if "text" in attentions:
        for i, layer in enumerate(vle.text_model.encoder.layer):
            points.append((f"text.{i}.attention", layer.attention.self, "pair"))
    for stream, layers in (("text", vle.cross_modal_text_layers), ("image", vle.cross_modal_image_layers)):
        for i, layer in enumerate(layers):
            if "fusion" in attentions:
                points.append((f"fusion.{stream}.{i}.self_attention", layer.attention.self.probs, "tensor"))
                points.append((f"fusion.{stream}.{i}.cross_attention", layer.crossattention.self.probs, "tensor"))
            if hidden:
                points.append((f"fusion.{stream}.{i}.hidden", layer, "first"))
    return points


def _force_attention_output(module, args, kwargs):
    """DeBERTa's attention returns its probabilities only when asked; ask, without touching the caller's flag."""
    if len(args) >= 3:
        args = (*args[:2], True, *args[3:])
    else:
        kwargs["output_attentions"] = True
    return args, kwargs


class Recorder:
    """Context manager: hooks a VLE model, captures tensors under stable dotted names, always removes its hooks.

    ``attentions``: which attention families to capture (``vision``, ``text``, ``fusion``). ``hidden``: also the
    fusion layer outputs. ``grads``: keep the gradient of every captured tensor (run the forward with gradients on and
    call ``backward``). ``only``: glob patterns of names to keep (e.g. ``"fusion.*"``), to save memory.
    Inside the block the fusion layers and CLIP use their eager attention path, which materialises probabilities.
    """

    def __init__(self, model: nn.Module, attentions: Iterable[str] = ATTENTION_KINDS, hidden: bool = False,
                 grads: bool = False, only: Iterable[str] | None = None, detach: bool = True):
        unknown = set(attentions) - set(ATTENTION_KINDS)
        if unknown:
            raise ValueError(f"unknown attention families {sorted(unknown)}; choose from {', '.join(ATTENTION_KINDS)}")
        self.model, self.attentions, self.hidden, self.keep_grads = model, tuple(attentions), hidden, grads
        self.only = tuple(only) if only is not None else None
        self.detach = detach and not grads
        self.tensors: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._previous_eager = None

    # -- reading ---------------------------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"nothing recorded under {name!r}; recorded: {', '.join(self.tensors) or 'nothing'} "
                           "(was the forward run inside the block, and did it run that tower?)") from None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        return list(self.tensors)

    def stack(self, pattern: str, grads: bool = False) -> torch.Tensor:
        """All entries matching ``pattern`` (with ``{}`` for the layer), stacked: (layers, ...)."""
        source = self.grads if grads else self.tensors
        layers, found = 0, []
        while pattern.format(layers) in source:
            found.append(source[pattern.format(layers)])
            layers += 1
        if not found:
            raise KeyError(f"nothing recorded for {pattern!r}" + (" (gradients: call backward first)" if grads else ""))
        return torch.stack(found)

    # -- hooking ---------------------------------------------------------------------------------------------------

    def _wanted(self, name: str) -> bool:
        return self.only is None or any(fnmatch.fnmatch(name, p) for p in self.only)

    def _store(self, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        self.tensors[name] = tensor.detach() if self.detach else tensor
        if self.keep_grads and tensor.requires_grad:
            def keep(grad, name=name):
                self.grads[name] = grad.detach()
            tensor.register_hook(keep)

    def _hook(self, name: str, kind: str):
        def read(module, args, output):
            if kind == "tensor":
                self._store(name, output)
            else:
                self._store(name, output[1] if kind == "pair" else output[0])
        return read

    def __enter__(self) -> "Recorder":
        vle = base_model(self.model)
        self._previous_eager = vle.eager_attention
        try:
            vle.eager_attention = True
            for name, module, kind in _named_points(self.model, self.attentions, self.hidden):
                if not self._wanted(name):
                    continue
                if name.startswith("text."):
                    self._handles.append(module.register_forward_pre_hook(_force_attention_output, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._hook(name, kind)))
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._previous_eager is not None:
            base_model(self.model).eager_attention = self._previous_eager

    def __exit__(self, *exc) -> bool:
        self._release()
        return False

    def clear(self) -> None:
        self.tensors.clear()
        self.grads.clear()


def hook_count(model: nn.Module) -> int:
    """Forward (pre-)hooks currently attached anywhere in ``model``; a recorder's hooks add to it only inside its
    block (transformers may keep hooks of its own)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
