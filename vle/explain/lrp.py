"""AttnLRP's propagation rules (Achtibat et al., ICML 2024) as one context manager over any VLE model, in the
gradient × input form: inside ``attnlrp_rules(model)`` the backward pass is modified so that an input's gradient
times the input is its LRP relevance.

The rules, applied wherever the operation meets a tensor that carries a gradient (the towers, the fusion, the pooler
and the head alike; the weights are frozen by the caller, so "carries a gradient" means "depends on the input"):

- linear maps (``F.linear``, convolutions, sums, the mean of a box's patches): the ordinary gradient, which in this
  form is the ε-rule (biases and other constants absorb their share of relevance);
- element-wise nonlinearities (GELU, quick GELU, tanh, sigmoid, SiLU): the identity rule, relevance passes unchanged
  (the gradient is replaced by f(x)/x); activation modules are switched whole, so a composite such as CLIP's
  x·sigmoid(1.702x) is one nonlinearity;
- LayerNorm: the identity rule on the normalisation (its standard deviation is held constant, so the rest is linear);
- products of two input-dependent tensors (matrix products in attention: query × key, probabilities × value;
  element-wise products): the uniform rule, half of the relevance to each factor, so an attention's query and key
  get a quarter each and its value half; scaled-dot-product kernels are computed as these products for the pass;
- softmax: its gradient, which in this form is AttnLRP's softmax rule (relevance x_i (R_i - s_i Σ_j R_j));
  ``softmax="cp"`` holds the attention probabilities constant instead (CP-LRP, Ali et al., ICML 2022: relevance
  flows through the values only), which conserves exactly but says nothing of what queries and keys contributed.

Operations that are nonlinear in the input but have no rule here (a division by an input-dependent tensor, exp,
sqrt, powers, norms) are recorded in ``rules.unhandled`` by name; the tests check that no VLE head meets one.
Conservation is approximate by design: the biases, LayerNorm shifts, token-type and position embeddings absorb
relevance, and the softmax rule does not conserve exactly (the tests and the benchmark print how close the sum of
the input relevances comes to the target's score).

Example:
    >>> import numpy as np, torch
    >>> from vle import VLEConfig, VLEForVQA
    >>> model = VLEForVQA(VLEConfig.tiny(id2label={0: "red", 1: "blue"})).eval()
    >>> with attnlrp_rules(model) as rules:
    ...     pass
    >>> rules.unhandled
    set()
"""

from __future__ import annotations

import functools
import types
import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

EPSILON = 1e-6  # stabilises f(x)/x near x = 0


class _Half(torch.autograd.Function):
    """Identity forward; half the gradient backward (the uniform rule for one factor of a product)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


class _IdentityRule(torch.autograd.Function):
    """``fn(x)`` forward; backward the gradient times fn(x)/x, so gradient × input passes relevance unchanged."""

    @staticmethod
    def forward(ctx, fn, x):
        out = fn(x)
        ctx.save_for_backward(out / torch.where(x >= 0, x + EPSILON, x - EPSILON))
        return out

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return None, grad * ratio


def _grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _product(func, a, b, *args, **kwargs):
    if _grad(a) and _grad(b):
        return func(_Half.apply(a), _Half.apply(b), *args, **kwargs)
    return func(a, b, *args, **kwargs)


def _layer_norm(func, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    std = (centred.float().pow(2).mean(dims, keepdim=True) + eps).sqrt().to(x.dtype)
    y = centred / std.detach()
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def _attention(func, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, hold=False,
               ledger=None, **kwargs):
    if is_causal or kwargs.get("enable_gqa"):
        raise NotImplementedError("AttnLRP: causal or grouped-query attention is not used by VLE")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = _product(torch.matmul, query * scale, key.transpose(-1, -2))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    probs = (scores.softmax(-1, dtype=torch.float32) if hold else _Softmax.apply(scores, -1, torch.float32, ledger))
    probs = probs.to(value.dtype)
    return _product(torch.matmul, probs.detach() if hold else probs, value)


class _Softmax(torch.autograd.Function):
    """Softmax with its ordinary gradient (AttnLRP's rule in this form), adding to ``ledger["softmax"]`` the relevance
    the rule does not pass on: Σ output × gradient at its output minus Σ input × gradient at its input."""

    @staticmethod
    def forward(ctx, x, dim, dtype, ledger):
        out = x.softmax(dim, dtype=dtype)
        ctx.save_for_backward(x, out)
        ctx.dim, ctx.ledger = dim, ledger
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        grad_x = (out * (grad - (out * grad).sum(ctx.dim, keepdim=True))).to(x.dtype)
        ctx.ledger["softmax"] += float((out * grad).double().sum() - (x.double() * grad_x.double()).sum())
        return grad_x, None, None, None


def _softmax(ledger, func, x, dim=None, *args, dtype=None, **kwargs):
    return _Softmax.apply(x, dim if dim is not None else kwargs.get("dim", -1), dtype, ledger)


def _held(func, *args, **kwargs):
    return func(*args, **kwargs).detach()


def _unary(func, x, *args, **kwargs):
    return _IdentityRule.apply(lambda t: func(t, *args, **kwargs), x)


_RULES = {
    **dict.fromkeys((torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
                     torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__), _product),
    F.layer_norm: _layer_norm,
    F.scaled_dot_product_attention: _attention,
    **dict.fromkeys((torch.tanh, torch.Tensor.tanh, torch.sigmoid, torch.Tensor.sigmoid, F.gelu, F.silu, F.tanh,
                     F.sigmoid), _unary),
}
# nonlinear in their input and without a rule: recorded when met with a gradient
_UNHANDLED = (torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.sqrt, torch.Tensor.sqrt, torch.rsqrt,
              torch.Tensor.rsqrt, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.reciprocal,
              torch.Tensor.reciprocal, torch.norm, torch.Tensor.norm, torch.erf, F.normalize, torch.Tensor.__rtruediv__)
_DIVISIONS = (torch.div, torch.Tensor.div, torch.Tensor.__truediv__)


_SOFTMAX = (torch.softmax, torch.Tensor.softmax, F.softmax)
SOFTMAX_RULES = ("attnlrp", "cp")


class _Rules(TorchFunctionMode):
    def __init__(self, softmax: str):
        super().__init__()
        self.unhandled: set[str] = set()
        self.ledger = {"softmax": 0.0}  # relevance the softmax rule absorbs, filled by the backward pass
        self.rules = dict(_RULES)
        if softmax == "attnlrp":
            self.rules.update(dict.fromkeys(_SOFTMAX, functools.partial(_softmax, self.ledger)))
            self.rules[F.scaled_dot_product_attention] = functools.partial(_attention, ledger=self.ledger)
        else:
            self.rules.update(dict.fromkeys(_SOFTMAX, _held))
            self.rules[F.scaled_dot_product_attention] = functools.partial(_attention, hold=True)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled():
            rule = self.rules.get(func)
            if rule is not None and any(_grad(a) for a in args):
                return rule(func, *args, **kwargs)
            if func in _UNHANDLED and any(_grad(a) for a in args) or \
                    func in _DIVISIONS and len(args) > 1 and _grad(args[1]):
                self.unhandled.add(getattr(func, "__qualname__", str(func)))
        return func(*args, **kwargs)


_ACTIVATIONS: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, (nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU)) or \
        type(module).__module__ == "transformers.activations"


@contextmanager
def attnlrp_rules(model, softmax: str = "attnlrp"):
    """Apply the rules to every forward of ``model`` run inside the block (activation modules switched, all other
    operations through a torch function mode); the model is restored after, also on an exception. Yields the mode,
    whose ``unhandled`` names the operations met without a rule and whose ``ledger["softmax"]`` (after the backward
    pass) is the relevance the softmax rule absorbed. ``softmax``: ``attnlrp`` or ``cp``."""
    if softmax not in SOFTMAX_RULES:
        raise ValueError(f"softmax rule must be one of {', '.join(SOFTMAX_RULES)}, got {softmax!r}")
    if model not in _ACTIVATIONS:  # walking every module costs more than the rules on a small model: once per model
        _ACTIVATIONS[model] = [m for m in model.modules() if _is_activation(m)]
    switched = []
    for module in _ACTIVATIONS[model]:
        if "forward" not in module.__dict__:
            original = module.forward
            module.forward = types.MethodType(lambda self, x, _f=original: _IdentityRule.apply(_f, x)
                                              if torch.is_grad_enabled() and x.requires_grad else _f(x), module)
            switched.append(module)
    rules = _Rules(softmax)
    try:
        with rules:
            yield rules
    finally:
        for module in switched:
            del module.forward
