"""VLE (Vision-Language Encoder) on current transformers: config, models, processor and pipelines."""

from transformers import AutoConfig, AutoModel

from .configuration_vle import VLEConfig
from .loading import MissingHeadError, extend_position_embedding
from .modeling_vle import (
    HEAD_CLASSES,
    VLEForITM,
    VLEForMLM,
    VLEForMPC,
    VLEForPBC,
    VLEForPretraining,
    VLEForVCRQ2A,
    VLEForVCRQA2R,
    VLEForVQA,
    VLEHeadOutput,
    VLEModel,
    VLEModelOutput,
)

AutoConfig.register("vle", VLEConfig, exist_ok=True)
AutoModel.register(VLEConfig, VLEModel, exist_ok=True)

__all__ = [
    "HEAD_CLASSES", "MissingHeadError", "VLEConfig", "VLEForITM", "VLEForMLM", "VLEForMPC", "VLEForPBC", "VLEForPretraining",
    "VLEForVCRQ2A", "VLEForVCRQA2R", "VLEForVQA", "VLEHeadOutput", "VLEModel", "VLEModelOutput",
    "extend_position_embedding",
]
