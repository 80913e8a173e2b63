"""The workbench: every explorer in one tabbed app (what ``notebooks/explorer.ipynb`` and ``make run`` show).

A tab is one explorer class plus one ``register_tab`` call: its title and how to build it from the workbench's
``Models``. An explorer that mixes in ``RunsWhenShown`` runs its default example when its tab is first opened.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import ipywidgets as W

from ._common import RunsWhenShown, describe_error
from .attention import AttentionExplorer
from .comparison import MethodComparison
from .dataset import DatasetExplorer
from .itm import ITMExplorer
from .vcr import VCRExplorer
from .vqa import VQAExplorer
from .what_if import WhatIfExplorer


@dataclass(frozen=True)
class Models:
    """What the workbench's explorers run on: shipped names or folders, and the LLM of the VQA + LLM panel."""

    vqa: str = "vle-tiny-shapes-vqa"
    pretrained: str = "vle-tiny-shapes"
    vcr: tuple[str, str] = ("vle-tiny-shapes-vcr-q2a", "vle-tiny-shapes-vcr-qa2r")
    llm: object = None


TABS: dict[str, Callable[[Models], W.Widget]] = {}  # title → build(models), in tab order


def register_tab(title: str, build: Callable[[Models], W.Widget]) -> None:
    """Add an explorer tab to the workbench (the one registration a new tab needs)."""
    TABS[title] = build


register_tab("VQA", lambda m: VQAExplorer(m.vqa, llm=m.llm))
register_tab("Attention", lambda m: AttentionExplorer(m.vqa))
register_tab("ITM / PBC", lambda m: ITMExplorer(m.pretrained))
register_tab("VCR", lambda m: VCRExplorer(*m.vcr))
register_tab("Compare methods", lambda m: MethodComparison(m.vqa))
register_tab("Dataset", lambda m: DatasetExplorer(model=m.vqa))
register_tab("What if", lambda m: WhatIfExplorer(m.vqa))


class Workbench(RunsWhenShown, W.Tab):
    """The tabs. The explorer in front runs its default example when the app is shown, each other one when its tab
    is first selected: a result in every tab a user opens, and no waiting at start for the tabs they never open."""

    def __init__(self, children, titles):
        super().__init__(children=children, titles=titles)
        self.observe(lambda _: self.ensure_run(), names="selected_index")

    def ensure_run(self) -> None:  # on every selection: each explorer runs its default once by itself
        shown = self.children[self.selected_index] if self.selected_index is not None else None
        if isinstance(shown, RunsWhenShown):
            shown.ensure_run()


def workbench(vqa_model: str = Models.vqa, pretrained_model: str = Models.pretrained, vcr_models=Models.vcr,
              llm=None) -> Workbench:
    """A Tab with every registered explorer, the VQA explorer first; an explorer that cannot start (e.g. its model is
    missing) shows why in its tab and the others still work."""
    models = Models(vqa_model, pretrained_model, tuple(vcr_models), llm)
    children = []
    for title, build in TABS.items():
        try:
            children.append(build(models))
        except Exception as error:  # noqa: BLE001  (one broken explorer must not take the app down)
            message = W.HTML(f"<span style='color:#b00020'>{title} explorer unavailable: {describe_error(error)}"
                             "</span>")
            children.append(message)
    tab = Workbench(children, tuple(TABS))
    tab.add_class("vle-workbench")
    _open_rows_in_vqa(tab)
    return tab


def _open_rows_in_vqa(tab: Workbench) -> None:
    """The dataset tab's "Open in explorer" shows a VQA row in the VQA tab, asked again there."""
    vqa = next((i for i, child in enumerate(tab.children) if isinstance(child, VQAExplorer)), None)
    if vqa is None:
        return

    def open_row(row: dict, image) -> None:
        explorer = tab.children[vqa]
        path = os.path.join(tempfile.mkdtemp(prefix="vle-row-"), f"{row['id']}.png")
        image.save(path)
        with explorer.picker.source.hold_trait_notifications():
            explorer.picker.source.value, explorer.picker.path.value = "(path)", path
        explorer.question.value = row["question"]
        explorer._shown = True  # its default example is not wanted now
        tab.selected_index = vqa
        explorer.run()

    for child in tab.children:
        if isinstance(child, DatasetExplorer) and child.on_open is None:
            child.on_open = open_row
            child.open_elsewhere.layout.display = ""
