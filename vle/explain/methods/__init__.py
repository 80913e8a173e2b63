"""Every explanation method, registered by name in ``METHODS`` on import; the order of registration is the order in
which tables list them (baselines first, then attention, then gradients and perturbations)."""

# ruff: noqa: I001  (the import order is the registration order)
from . import random_baseline, raw_attention, rollout, coattention  # noqa: F401  (importing a module registers it)
from . import integrated_gradients, gradients, attnlrp, occlusion, kernel_shap, gradcam, pbc_map  # noqa: F401
from .base import METHODS, Attribution, Method, get_method, register

__all__ = ["METHODS", "Attribution", "Method", "get_method", "register"]
