"""Thin ipywidgets explorers over ``vle`` (models, explanations) and ``viz`` (figures).

    from widgets import VQAExplorer, AttentionExplorer, ITMExplorer, VCRExplorer, MethodComparison, workbench
    from widgets import WhatIfExplorer
    workbench()          # all of them in tabs, on the embedded shapes models

Each explorer runs its default example once when first shown, does its heavy work on a button with a progress bar,
redraws view-only changes from cached results, and shows errors inside itself.
"""

from .app import workbench
from .attention import AttentionExplorer
from .comparison import MethodComparison
from .dataset import DatasetExplorer
from .itm import ITMExplorer
from .llm_panel import LLMPanel
from .vcr import VCRExplorer
from .vqa import VQAExplorer
from .what_if import WhatIfExplorer

__all__ = ["AttentionExplorer", "DatasetExplorer", "ITMExplorer", "LLMPanel", "MethodComparison", "VCRExplorer",
           "VQAExplorer", "WhatIfExplorer", "workbench"]
