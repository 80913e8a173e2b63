"""VLE (Vision-Language Encoder) on current transformers: config, models, processor and pipelines.

The names below load on first use (as transformers' own package does), so ``import vle.image_utils`` or
``vle.errors`` costs no torch import: ``viz`` reads images through the same loader as the models.
"""

import importlib

_EXPORTS = {
    "VLEConfig": "configuration_vle",
    "MissingHeadError": "loading", "extend_position_embedding": "loading",
    **{name: "modeling_vle" for name in (
        "HEADS", "register_head", "VLEForITM", "VLEForMLM", "VLEForMPC", "VLEForPBC", "VLEForPretraining",
        "VLEForVCRQ2A", "VLEForVCRQA2R", "VLEForVQA", "VLEHeadModel", "VLEHeadOutput", "VLEModel", "VLEModelOutput",
        "VLEPreTrainedModel")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
