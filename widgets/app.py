"""The workbench: every explorer in one tabbed app (what ``notebooks/explorer.ipynb`` and ``make run`` show)."""

from __future__ import annotations

import ipywidgets as W

from ._common import describe_error
from .attention import AttentionExplorer
from .comparison import MethodComparison
from .itm import ITMExplorer
from .vcr import VCRExplorer
from .vqa import VQAExplorer

TABS = ("VQA", "Attention", "ITM / PBC", "VCR", "Compare methods")


def workbench(vqa_model: str = "vle-tiny-shapes-vqa", pretrained_model: str = "vle-tiny-shapes",
              vcr_models=("vle-tiny-shapes-vcr-q2a", "vle-tiny-shapes-vcr-qa2r"), llm=None) -> W.Tab:
    """A Tab with the VQA explorer first; an explorer that cannot start (e.g. its model is missing) shows why in its
    tab and the others still work."""

    makers = (lambda: VQAExplorer(vqa_model, llm=llm), lambda: AttentionExplorer(vqa_model),
              lambda: ITMExplorer(pretrained_model), lambda: VCRExplorer(*vcr_models),
              lambda: MethodComparison(vqa_model))
    children = []
    for title, make in zip(TABS, makers):
        try:
            children.append(make())
        except Exception as error:  # noqa: BLE001  (one broken explorer must not take the app down)
            message = W.HTML(f"<span style='color:#b00020'>{title} explorer unavailable: {describe_error(error)}"
                             "</span>")
            children.append(message)
    tab = W.Tab(children=children, titles=TABS)
    tab.add_class("vle-workbench")
    return tab
