"""``ITMExplorer``: a phrase against an image, with the two pretraining heads that read it: ITM (does the text match
the image, and why) and PBC (which patches the phrase is about), plus zero-shot labels ranked by ITM.

    from widgets import ITMExplorer
    ITMExplorer()
"""

from __future__ import annotations

import html

import ipywidgets as W

from viz import plot_patch_relevance, plot_pbc_overlay
from vle.explain import METHODS, ITMMatch, PBCPhrase

from ._common import (DPI, ImagePicker, RunsWhenShown, Status, describe_error, figure_png, fixed_axes, html_table,
                      load_session, picture, score_bar, timed)

VIEWS = ("PBC: where the phrase is", "ITM: why it matches")


class ITMExplorer(RunsWhenShown, W.VBox):
    """``model``: a shipped name or folder of a model with ITM and PBC heads (``VLEForPretraining``)."""

    def __init__(self, model: str = "vle-tiny-shapes", image: str | None = "shapes_0", phrase: str | None = None,
                 labels: str = "circle, square, triangle", dpi: int = DPI):

        self.model_name, self.dpi = model, dpi
        self.session = load_session(model, "pretraining")
        self.model = self.session.model
        self.inputs, self.pbc, self.itm_cache = None, None, {}
        self._image, self._methods = None, METHODS
        self.timings: dict[str, float] = {}

        self.picker = ImagePicker(image)
        self.phrase = W.Text(value=phrase or "", description="phrase", continuous_update=False,
                             layout=W.Layout(width="30em"))
        self.labels = W.Text(value=labels, description="labels", continuous_update=False,
                             layout=W.Layout(width="30em"), tooltip="comma-separated zero-shot labels")
        self.template = W.Text(value="a {}", description="template", layout=W.Layout(width="18em"))
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.status.context = f"weights in {self.session.dtype_choice}"
        self.view = W.ToggleButtons(options=VIEWS, value=VIEWS[0])
        methods = self.session.methods_for(ITMMatch(True))
        self.method = W.Dropdown(options=methods, value="coattention_relevance", description="ITM method")
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.match = W.HTML()
        self.match.add_class("vle-match")
        self.zero_shot = W.HTML()
        self.figure = picture("vle-itm")

        self.run_button.on_click(lambda _: self.run())
        self.picker.on_change(self._image_changed)
        self.method.observe(lambda _: self._itm_changed(), names="value")
        for control in (self.view, self.opacity):
            control.observe(lambda _: self.render(), names="value")
        self._image_changed()
        super().__init__([self.picker, self.phrase, W.HBox([self.labels, self.template]), self.run_button,
                          self.status, self.match, W.HBox([self.view, self.method]), self.opacity,
                          W.HBox([self.figure, self.zero_shot])])

    def _image_changed(self) -> None:
        record = self.picker.record
        if record and not self.phrase.value:
            self.phrase.value = record["caption"]["text"]

    def run(self) -> None:
        with self.status.run(self.run_button, steps=3, text="matching …") as status:
            phrase = self.phrase.value.strip()
            if not phrase:
                raise ValueError("type a phrase first, e.g. 'a red square'")
            image = self.picker.image
            inputs = self.session.prepare(image, phrase)
            pbc = self.session.explain(inputs, target=PBCPhrase(phrase=phrase), method="pbc")
            status.step("explaining the match …")
            method = self.method.value
            itm = self.session.explain(inputs, target=ITMMatch(True), method=method)
            status.step("zero-shot labels …")
            zero_shot = self._zero_shot(image)
            # nothing is replaced until everything succeeded: a failed run keeps the last good one on screen
            self._image, self.inputs, self.pbc, self.itm_cache = image, inputs, pbc, {method: itm}
            probability = itm.metadata["target_probability"]
            self.match.value = (f"<div style='font-size:1.2em'>match probability: <b class='vle-match-p'>"
                                f"{probability:.3f}</b> {score_bar(probability)} "
                                f"({'match' if probability > 0.5 else 'no match'})</div>")
            self.zero_shot.value = zero_shot
            self.render()

    def itm_explanation(self):
        method = self.method.value
        if method not in self.itm_cache:
            self.itm_cache[method] = self.session.explain(self.inputs, target=ITMMatch(True), method=method)
        return self.itm_cache[method]

    def _itm_changed(self) -> None:
        if self.inputs is None:
            return
        if self._methods[self.method.value].needs_image_tower and self.method.value not in self.itm_cache:
            self.status.show(f"{self.method.value} runs the image tower for every perturbation: press Run")
            return
        self.view.value = VIEWS[1]
        self.render()

    def _zero_shot(self, image) -> str:
        labels = [label.strip() for label in self.labels.value.split(",") if label.strip()]
        if not labels:
            return ""
        ranked = self.session.classify(image, labels, self.template.value)
        rows = [(html.escape(r["label"]), f"{r['score']:.3f}", score_bar(r["score"]), f"{r['match_probability']:.3f}")
                for r in ranked]
        return "<b>zero-shot labels</b>" + html_table(rows, ("label", "share", "", "P(match)"))

    def render(self) -> None:
        if self.pbc is None:
            return
        with timed(self.timings, "render"):
            try:
                figure, ax = fixed_axes()
                if self.view.value == VIEWS[0]:
                    grid = self.model.config.patch_grid
                    probabilities = self.pbc.metadata["probabilities"][: grid * grid].reshape(grid, grid)
                    plot_pbc_overlay(probabilities, self._image, text=self.phrase.value.strip(),
                                     opacity=self.opacity.value, ax=ax)
                else:
                    e = self.itm_explanation()
                    plot_patch_relevance(e.patch_scores, self._image, signed=e.signed, opacity=self.opacity.value,
                                         title=f"{e.method}: {e.target.label}", ax=ax)
                self.figure.value = figure_png(figure, self.dpi)
            except Exception as error:  # noqa: BLE001
                self.status.show(describe_error(error), "error")
