"""Which float type a model runs in: ``dtype="auto"`` (the default wherever a model is loaded for use) picks bfloat16
weights where the device multiplies bfloat16 natively and the model is wide enough to gain, float32 elsewhere; an
explicit ``dtype`` always wins.

Why the width matters: bfloat16 halves the bytes every matrix product moves, but on narrow matrices the conversion and
kernel overheads outweigh that (a 128-wide VLE, the embedded model's width, runs about 1.2x slower in bfloat16 on an
AVX512-BF16 CPU, a 256-wide one about 0.6x; docs/benchmarks.md). Softmax, layer norms and the relevance propagation
keep float32 accumulation whatever the weights are.

>>> resolve_dtype("float32", None)
torch.float32
>>> dtype_name(resolve_dtype("auto", {"hidden_size": 128}))
'float32'
"""

from __future__ import annotations

import torch

from .errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# the narrowest hidden size (fusion, text tower, image tower) at which ``auto`` picks bfloat16 on capable hardware
WIDE_FROM_HIDDEN = 256


def has_fast_bfloat16(device="cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (AVX512-BF16 or AMX on a CPU, compute capability 8 or
    more on a GPU), not by emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def model_width(config) -> int:
    """The narrowest hidden size of the fusion and the two towers (a config object or a dict)."""
    def get(obj, key, default=None):
        return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)

    widths = [get(config, "hidden_size", 0)]
    for sub in ("text_config", "vision_config"):
        sub_config = get(config, sub)
        if sub_config is not None:
            widths.append(get(sub_config, "hidden_size", 0))
    return int(min(w for w in widths if w) if any(widths) else 0)


def is_wide(config) -> bool:
    return model_width(config) >= WIDE_FROM_HIDDEN


def resolve_dtype(dtype, config, device="cpu") -> torch.dtype:
    """The torch dtype for ``dtype``: "auto" (bfloat16 for a wide model on a device with fast bfloat16, else
    float32), a name in ``DTYPES`` or a torch dtype."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if config is not None and is_wide(config) and has_fast_bfloat16(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"dtype must be one of auto, {', '.join(DTYPES)}, got {dtype}")
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InputError(f"dtype must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return next((name for name, value in DTYPES.items() if value == dtype), str(dtype))


def describe(dtype: torch.dtype, asked) -> str:
    """How a choice reads in a status line: "bfloat16 (auto)" or "float32"."""
    return f"{dtype_name(dtype)} (auto)" if asked in (None, "auto") else dtype_name(dtype)
