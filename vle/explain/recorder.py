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
entry appears. Gradients (``grads=True``) land in ``recorder.grads`` under the same names after a backward pass:
``recorder.backward(score)`` computes them without parameter gradients; ``score.backward()`` works too.

Without gradients, the CLIP and fusion maps are recorded as their factors (the projected queries and keys and the
additive mask) and computed on first read, so the model keeps its fused attention kernel and a forward that records
every map costs little more than a plain one. With ``grads`` the recorder selects, for the duration of its block, an
attention implementation of its own for the fusion (``recorded_attention``, registered with the model's attention
functions) and CLIP's eager path: the maps are the tensors of the forward itself, and a fusion block hands the
gradient of its map to the recorder inside its backward, which keeps it whole or, with ``grad_reduce``, reduced.

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

import contextlib
import fnmatch
import weakref
from collections.abc import MutableMapping
from typing import Iterable

import torch
from torch import nn

from ..modeling_vle import (FUSION_ATTENTION_FUNCTIONS, _attention_scores, attention_implementation,
                            attention_probabilities, eager_attention)

ATTENTION_KINDS = ("vision", "text", "fusion")


def base_model(model: nn.Module):
    """The VLEModel inside any head (or the model itself)."""
    return getattr(model, "base_vle", model)


def _named_points(model: nn.Module, attentions: Iterable[str], hidden: bool, lazy: bool):
    """(name, module, kind) for every point to hook; kind says how to read the module's output (``lazy``: the
    attention module itself, whose queries and keys are read from its projections)."""
    vle = base_model(model)
    points = []
    if "vision" in attentions:
        for i, layer in enumerate(vle.vision_model.vision_model.encoder.layers):
            points.append((f"vision.{i}.attention", layer.self_attn, "clip" if lazy else "pair"))
    if "text" in attentions:
        for i, layer in enumerate(vle.text_model.encoder.layer):
            points.append((f"text.{i}.attention", layer.attention.self, "pair"))
    for stream, layers in (("text", vle.cross_modal_text_layers), ("image", vle.cross_modal_image_layers)):
        for i, layer in enumerate(layers):
            if "fusion" in attentions:
                blocks = (("self_attention", layer.attention.self), ("cross_attention", layer.crossattention.self))
                for kind, block in blocks:
                    points.append((f"fusion.{stream}.{i}.{kind}", block, "fusion" if lazy else "fusion_eager"))
            if hidden:
                points.append((f"fusion.{stream}.{i}.hidden", layer, "first"))
    return points


class LazyAttention:
    """Attention probabilities kept as their factors and computed when first read:
    softmax(scale · query @ keyᵀ + mask) over heads, exactly what the model's fused kernel computes internally."""

    __slots__ = ("query", "key", "mask", "scale", "heads")

    def __init__(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float, heads: int):
        self.query, self.key, self.mask, self.scale, self.heads = query, key, mask, scale, heads

    def materialize(self) -> torch.Tensor:
        def split(x):  # (batch, len, H) -> (batch, heads, len, head_dim)
            return x.view(*x.shape[:2], self.heads, -1).transpose(1, 2)
        return attention_probabilities(split(self.query), split(self.key), self.mask, self.scale)


class RecordedTensors(MutableMapping):
    """The recorder's name → tensor mapping; lazily recorded attention maps are computed (once) when read."""

    def __init__(self):
        self._items: dict[str, torch.Tensor | LazyAttention] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        value = self._items[name]
        if isinstance(value, LazyAttention):
            value = self._items[name] = value.materialize()
        return value

    def __setitem__(self, name: str, value) -> None:
        self._items[name] = value

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items


class _TappedAttention(torch.autograd.Function):
    """softmax(scale · query @ keyᵀ + mask) @ value, whose backward hands the gradient of the probabilities to ``tap``.

    The probabilities leave as a non-differentiable output, and their gradient reaches ``tap(grad, probs)`` (which must
    copy what it keeps: the buffer is reused) inside the backward. Softmax and its backward work in place, so a layer
    allocates two (len × len) maps instead of four: at 1297 image tokens allocating those maps, not computing them, is
    most of the time of a backward through the fusion.
    """

    @staticmethod
    def forward(ctx, query, key, value, mask, scale: float, tap):
        probs = _attention_scores(query, key, mask, scale, in_place=True)
        torch.softmax(probs, dim=-1, out=probs)
        ctx.save_for_backward(query, key, value, probs)
        ctx.scale, ctx.tap = scale, tap
        ctx.mark_non_differentiable(probs)
        return probs @ value, probs

    @staticmethod
    def backward(ctx, grad_out, _):
        query, key, value, probs = ctx.saved_tensors
        grad_probs = grad_out @ value.transpose(-1, -2)
        ctx.tap(grad_probs, probs)
        grad_query = grad_key = grad_value = None
        if ctx.needs_input_grad[2]:
            grad_value = probs.transpose(-1, -2) @ grad_out
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # softmax backward in place: dS = A ⊙ dA - A ⊙ rowsum(A ⊙ dA)
            grad_scores = grad_probs.mul_(probs)
            grad_scores.addcmul_(probs, grad_scores.sum(-1, keepdim=True), value=-1.0)
            if ctx.needs_input_grad[0]:
                grad_query = (grad_scores @ key).mul_(ctx.scale)
            if ctx.needs_input_grad[1]:
                grad_key = grad_scores.transpose(-1, -2) @ (query * ctx.scale)
        return grad_query, grad_key, grad_value, None, None, None


_TAPS: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()  # attention block → tap


def recorded_attention(module, query, key, value, mask, scale: float, dropout: float):
    """The fusion attention inside a recorder that keeps gradients: blocks it taps run ``_TappedAttention``, the
    others the model's eager attention."""
    tap = _TAPS.get(module)
    if tap is None or dropout:
        return eager_attention(module, query, key, value, mask, scale, dropout)
    return _TappedAttention.apply(query, key, value, mask, scale, tap)


RECORDED_ATTENTION = "vle_recorded"
FUSION_ATTENTION_FUNCTIONS[RECORDED_ATTENTION] = recorded_attention


def _ignore_gradient(grad, probs) -> None:
    """The tap of a fusion block whose map's gradient the recorder does not keep (its softmax still runs in place)."""


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
    fusion layer outputs. ``only``: glob patterns of names to keep (e.g. ``"fusion.*"``), to save memory. ``grads``:
    keep gradients (run the forward with gradients on and call ``backward``): True for every recorded name, or glob
    patterns of the names whose gradients to keep. ``grad_reduce(grad, probs)``: what to keep of each fusion map's
    gradient (default: all of it), computed inside the backward while the full-size gradient exists, e.g. a head
    average that is a twelfth of its size. Without gradients the attention maps are computed when read (see the
    module doc).
    """

    def __init__(self, model: nn.Module, attentions: Iterable[str] = ATTENTION_KINDS, hidden: bool = False,
                 only: Iterable[str] | None = None, grads: bool | Iterable[str] = False, grad_reduce=None):
        unknown = set(attentions) - set(ATTENTION_KINDS)
        if unknown:
            raise ValueError(f"unknown attention families {sorted(unknown)}; choose from {', '.join(ATTENTION_KINDS)}")
        self.model, self.attentions, self.hidden = model, tuple(attentions), hidden
        self.only = tuple(only) if only is not None else None
        self.keep_grads = bool(grads)
        self.grads_of = None if isinstance(grads, bool) else tuple(grads)
        self.lazy = not self.keep_grads  # factors now, maps on read; a map in the autograd graph needs the eager path
        self.tensors = RecordedTensors()
        self.grads: dict[str, torch.Tensor] = {}
        self.grad_reduce = grad_reduce or (lambda grad, probs: grad.clone())
        self._handles: list = []
        self._tapped: list = []  # fusion blocks this recorder taps
        self._tap_names: list[str] = []
        self._fusion_inputs: list[torch.Tensor] = []  # where a backward must reach for every fusion map's gradient
        self._implementations = contextlib.ExitStack()

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

    def _grad_wanted(self, name: str) -> bool:
        return self.keep_grads and (self.grads_of is None or any(fnmatch.fnmatch(name, p) for p in self.grads_of))

    def _store(self, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        self.tensors[name] = tensor if self.keep_grads else tensor.detach()
        if self._grad_wanted(name) and tensor.requires_grad:
            # hooks that live in the autograd graph hold the gradient dict, never the recorder: the recorder holds
            # the graph (its recorded tensors), and a cycle through the graph is one Python's collector cannot see,
            # so every explanation would leak its whole graph
            grads = self.grads

            def keep(grad, name=name):
                grads[name] = grad.detach()
            tensor.register_hook(keep)

    def _hook(self, name: str, kind: str):
        def read(module, args, output):
            if kind == "tensor":
                self._store(name, output)
            else:
                self._store(name, output[1] if kind == "pair" else output[0])
        return read

    def _hook_lazy(self, name: str, kind: str, module: nn.Module) -> None:
        """Keep the projected queries and keys of ``module`` (CLIP attention or a fusion attention block) and, when it
        returns, its additive mask: the factors of its attention map."""
        if kind == "clip":
            query_proj, key_proj, heads, scale = module.q_proj, module.k_proj, module.num_heads, module.scale
        else:
            query_proj, key_proj, heads = module.query, module.key, module.num_heads
            scale = module.head_dim ** -0.5
        factors: dict[str, torch.Tensor] = {}

        def keep(slot):
            def hook(_, __, output):
                factors[slot] = output.detach()
            return hook

        def done(_, args, kwargs, output):
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None) if kind == "clip" else \
                kwargs.get("context_mask", args[2] if len(args) > 2 else None)
            self.tensors[name] = LazyAttention(factors.pop("query"), factors.pop("key"),
                                               None if mask is None else mask.detach(), scale, heads)

        self._handles += [query_proj.register_forward_hook(keep("query")), key_proj.register_forward_hook(keep("key")),
                          module.register_forward_hook(done, with_kwargs=True)]

    def _tap(self, name: str, block: nn.Module) -> None:
        """Record the eager map of a fusion block and, with gradients, receive its map's gradient in its backward."""
        self._handles.append(block.probs.register_forward_hook(self._hook(name, "tensor")))
        if self.keep_grads:  # a block without gradients to keep still takes the tapped path: its softmax is in place
            grads, reduce = self.grads, self.grad_reduce  # not the recorder: see _store
            wanted = self._grad_wanted(name)

            def tap(grad, probs, name=name):
                grads[name] = reduce(grad, probs).detach()
            _TAPS[block] = tap if wanted else _ignore_gradient
            self._tapped.append(block)
            if wanted:
                self._tap_names.append(name)

    def _keep_fusion_inputs(self) -> None:
        """Hold the first fusion layer's inputs of both streams: gradients taken down to them pass every fusion map."""
        def keep(_, args):
            self._fusion_inputs = [args[0], args[1]]
        self._handles.append(base_model(self.model).cross_modal_text_layers[0].register_forward_pre_hook(keep))

    def backward(self, score: torch.Tensor) -> None:
        """Fill ``grads`` with the gradients of ``score`` (a scalar) into every recorded tensor, computing no parameter
        gradients. Needs ``grads=True`` and a forward with gradients enabled inside the block."""
        if not self.keep_grads:
            raise RuntimeError("this recorder keeps no gradients: create it with grads=True")
        names = [n for n in self.tensors if self._grad_wanted(n) and self.tensors[n].requires_grad]
        anchors = [t for t in self._fusion_inputs if t.requires_grad]
        if not names and not anchors:
            raise RuntimeError("nothing recorded is in the autograd graph: run the forward with gradients enabled "
                               "inside the recorder's block")
        values = [None] * (len(names) + len(anchors))
        if score.requires_grad:  # else the score is a constant (every path to it patched from another run)
            values = torch.autograd.grad(score, [self.tensors[n] for n in names] + anchors, allow_unused=True)
        for name, grad in zip(names, values):
            self.grads[name] = torch.zeros_like(self.tensors[name]) if grad is None else grad.detach()
        for name in self._tap_names:  # maps the score does not depend on (their backward never ran)
            if name not in self.grads:
                self.grads[name] = self.grad_reduce(torch.zeros_like(self.tensors[name]), self.tensors[name]).detach()
        for name, tensor in self.tensors.items():  # outside the graph (patched in from another run): no gradient
            if self._grad_wanted(name) and name not in self.grads and isinstance(tensor, torch.Tensor):
                self.grads[name] = torch.zeros_like(tensor)

    def __enter__(self) -> "Recorder":
        vle = base_model(self.model)
        try:
            if not self.lazy:  # maps in the autograd graph: the fusion's recorded attention and CLIP's eager path
                self._implementations.enter_context(attention_implementation(vle.config, RECORDED_ATTENTION))
                self._implementations.enter_context(
                    attention_implementation(vle.vision_model.vision_model.config, "eager"))
            for name, module, kind in _named_points(self.model, self.attentions, self.hidden, self.lazy):
                if not self._wanted(name):
                    continue
                if name.startswith("text."):
                    self._handles.append(module.register_forward_pre_hook(_force_attention_output, with_kwargs=True))
                if kind in ("clip", "fusion"):
                    self._hook_lazy(name, kind, module)
                elif kind == "fusion_eager":
                    self._tap(name, module)
                else:
                    self._handles.append(module.register_forward_hook(self._hook(name, kind)))
            if self._tapped:
                self._keep_fusion_inputs()
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for block in self._tapped:
            _TAPS.pop(block, None)
        self._tapped.clear()
        self._implementations.close()

    def __exit__(self, *exc) -> bool:
        self._release()
        return False

    def clear(self) -> None:
        self.tensors.clear()
        self.grads.clear()
        self._fusion_inputs, self._tap_names = [], []


def hook_count(model: nn.Module) -> int:
    """Forward (pre-)hooks currently attached anywhere in ``model``; a recorder's hooks add to it only inside its
    block (transformers may keep hooks of its own)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
