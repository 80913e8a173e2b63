"""Explanations for VLE: record attention, attribute a target to image patches and text tokens, measure faithfulness.

    image + text ─► ExplainInputs ─► method (from METHODS, inside a Recorder) ─► Explanation ─► viz

>>> import numpy as np
>>> from vle.testing import tiny_vqa_pipeline
>>> pipe = tiny_vqa_pipeline()
>>> e = Session(pipe.model, pipe.processor).explain(np.zeros((32, 32, 3), np.uint8), "what color ?", method="rollout")
>>> e.signed, sorted(e.modality_share)
(False, ['image', 'text'])
"""

from .core import explain
from .embedding_forward import EmbeddingForward
from .faithfulness import perturbation_curve, perturbation_curves
from .inputs import ExplainInputs, ImageFeatureCache, merge_words
from .methods import METHODS, Attribution, Method, get_method, register
from .recorder import Recorder, hook_count
from .result import Explanation
from .session import Session
from .targets import (ITMMatch, PBCPhrase, Target, TopAnswer, VCRChoice, VCRContrast, VQAAnswer, VQAContrast,
                      vqa_answer)
from .wrapper import TargetForward

__all__ = [
    "METHODS", "Attribution", "EmbeddingForward", "ExplainInputs", "Explanation", "ITMMatch", "ImageFeatureCache",
    "Method", "PBCPhrase", "Recorder", "Session", "Target", "TargetForward", "TopAnswer", "VCRChoice", "VCRContrast",
    "VQAAnswer", "VQAContrast", "explain", "get_method", "hook_count", "merge_words", "perturbation_curve",
    "perturbation_curves", "register", "vqa_answer",
]
