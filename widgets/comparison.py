"""``MethodComparison``: one VQA target under several explanation methods side by side, with their rank agreement.

    from widgets import MethodComparison
    MethodComparison()
"""

from __future__ import annotations

import ipywidgets as W

from viz import plot_method_comparison
from vle.explain import VQAAnswer, vqa_answer

from ._common import DPI, ImagePicker, RunsWhenShown, Status, describe_error, figure_png, load_session, picture, timed

DEFAULT_METHODS = ("coattention_relevance", "rollout", "raw_attention", "gradcam", "random")
# rows of three panels big enough for each scene to be seen (one row of six would shrink each to a thumbnail)
PANEL_SIZE, COLUMNS = 4.0, 3


class MethodComparison(RunsWhenShown, W.VBox):
    """``model``: a shipped name or folder of a VQA model. The target is the answer picked after Run (the top one
    by default)."""

    def __init__(self, model: str = "vle-tiny-shapes-vqa", image: str | None = "shapes_0",
                 question: str = "what size is the green object ?", methods=DEFAULT_METHODS, dpi: int = DPI):

        self.session, self.dpi = load_session(model, "vqa"), dpi
        self.model = self.session.model
        self.explanations: dict = {}
        self._image, self._asked = None, None
        self.timings: dict[str, float] = {}

        compatible = self.session.methods_for(VQAAnswer(0))
        self.picker = ImagePicker(image)
        self.question = W.Text(value=question, description="question", continuous_update=False,
                               layout=W.Layout(width="34em"))
        self.methods = W.SelectMultiple(options=compatible, value=[m for m in methods if m in compatible],
                                        description="methods", rows=min(8, len(compatible)))
        self.answer = W.Dropdown(options=[], description="target")
        self.run_button = W.Button(description="Compare", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.status.context = f"weights in {self.session.dtype_choice}"
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.figure = picture("vle-comparison")
        self.run_button.on_click(lambda _: self.run())
        self.opacity.observe(lambda _: self.render(), names="value")
        super().__init__([self.picker, self.question, W.HBox([self.methods, W.VBox([self.answer, self.run_button])]),
                          self.status, self.opacity, self.figure])

    def run(self) -> None:
        """Explain the target (the answer picked, or the top answer for a new question) with every selected method."""

        names = list(self.methods.value)
        with self.status.run(self.run_button, steps=len(names) + 1, text="answering …") as status:
            if len(names) < 2:
                raise ValueError("select at least two methods to compare (ctrl/shift-click)")
            question = self.question.value.strip()
            if not question:
                raise ValueError("type a question first")
            image = self.picker.image
            inputs = self.session.prepare(image, question)
            if (question, self.picker.name) != self._asked or self.answer.value is None:
                labels = self.model.config.id2label
                self.answer.options = [(str(labels[i]), i) for i in range(len(labels))]
                self.answer.value = self.session.default_target(inputs).index
                self._asked = (question, self.picker.name)
            target = vqa_answer(self.model, self.answer.value)
            explanations = {}
            for name in names:
                status.step(f"{name} …")
                explanations.update(self.session.compare(inputs, target, [name]))
            self._image, self.explanations = image, explanations  # a failed run keeps the last good one
            self.render()

    def render(self) -> None:
        if not self.explanations:
            return
        with timed(self.timings, "render"):
            try:
                first = next(iter(self.explanations.values()))
                maps = {name: e.patch_scores for name, e in self.explanations.items()}
                signed = {name: e.signed for name, e in self.explanations.items()}
                figure = plot_method_comparison(maps, self._image, signed=signed, opacity=self.opacity.value,
                                                title=f"{first.target.label} (p = "
                                                      f"{first.metadata['target_probability']:.2f})",
                                                panel_size=PANEL_SIZE, columns=COLUMNS)
                self.figure.value = figure_png(figure, self.dpi)
            except Exception as error:  # noqa: BLE001
                self.status.show(describe_error(error), "error")
