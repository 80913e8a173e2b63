"""Every explanation method, registered by name in ``METHODS`` on import."""

from . import coattention, gradcam, integrated_gradients, occlusion, pbc_map, random_baseline, raw_attention, rollout  # noqa: F401
from .base import METHODS, Attribution, Method, get_method, register

__all__ = ["METHODS", "Attribution", "Method", "get_method", "register"]
