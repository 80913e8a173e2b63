"""Every explanation method, registered by name in ``METHODS`` on import."""

from . import (  # noqa: F401  (importing a method module registers it)
    coattention, gradcam, integrated_gradients, occlusion, pbc_map, random_baseline, raw_attention, rollout,
)
from .base import METHODS, Attribution, Method, get_method, register

__all__ = ["METHODS", "Attribution", "Method", "get_method", "register"]
