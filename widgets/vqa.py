"""``VQAExplorer``: ask a question about an image, see the top-k answers, and explain any answer (or why one answer
rather than another) with any compatible method; an LLM panel rephrases the answer from the candidates.

    from widgets import VQAExplorer
    VQAExplorer()                      # the embedded shapes model, a scene from pics/

The Run button does the heavy part (image tower, answers, the explanation). Target, method, layer and head reuse
the image features cached per image; opacity, grid and boxes only redraw from the cached explanation.
"""

from __future__ import annotations

import html

import ipywidgets as W

from viz import plot_patch_relevance, plot_token_strip
from vle.explain import METHODS, VQAAnswer, VQAContrast
from vle.explain.session import DEFAULT_METHOD

from ._common import (DPI, ImagePicker, Quiet, RunsWhenShown, Status, describe_error, figure_png, fixed_axes,
                      html_table, layer_choices, load_session, method_note, picture, score_bar, timed)
from .llm_panel import LLMPanel

DEFAULT_MODEL = "vle-tiny-shapes-vqa"
NO_CONTRAST = -1


class VQAExplorer(RunsWhenShown, W.VBox, Quiet):
    """Image + question → top-k answers → an explanation of the chosen answer.

    ``model``: a shipped name or folder of a VQA model, or a ``vle.explain.Session`` on one. ``llm`` /
    ``captioner``: for the LLM panel (anything ``vle.llm.resolve_llm`` / ``resolve_captioner`` take); without ``llm``
    the panel reads the environment and says how to configure a backend when none is set.
    """

    def __init__(self, model: str = DEFAULT_MODEL, image: str | None = "shapes_0", question: str = "",
                 top_k: int = 5, method: str = DEFAULT_METHOD, llm=None, captioner=None, dpi: int = DPI):

        self.session = load_session(model, "vqa")  # the model, its processor and the per-image feature cache
        self.model, self.dpi = self.session.model, dpi
        self._methods = METHODS
        self.inputs = None  # ExplainInputs of the last run (image features attached)
        self.answers: list[dict] = []  # [{"answer", "score", "index"}], best first
        self.explanations: dict = {}  # (target, method, options) → Explanation, for the current inputs
        self.explanation = None
        self.timings: dict[str, float] = {}  # last durations in ms: "render", "explain", "run"
        self._image = self._record = None

        self.picker = ImagePicker(image)
        self.question = W.Combobox(value=question, placeholder="type a question and press Run", description="question",
                                   ensure_option=False, continuous_update=False, layout=W.Layout(width="34em"))
        self.question.add_class("vle-question")
        self.top_k = W.BoundedIntText(value=top_k, min=1, max=len(self.model.config.id2label), description="top-k",
                                      layout=W.Layout(width="11em"))
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.status.context = f"weights in {self.session.dtype_choice}"

        self.top_answer = W.HTML()
        self.top_answer.add_class("vle-top-answer")
        self.answers_html = W.HTML()
        self.answers_html.add_class("vle-answers")
        self.target = W.Dropdown(options=[], description="explain")
        self.contrast = W.Dropdown(options=[("— (no contrast)", NO_CONTRAST)], description="rather than")
        self.method = W.Dropdown(options=[method], value=method, description="method")
        self.method.add_class("vle-method")
        self.layer = W.Dropdown(options=[("last", "last")], description="layer", layout=W.Layout(width="13em"))
        self.layer.add_class("vle-layer")
        self.head = W.Dropdown(options=[("mean", "mean")], description="head", layout=W.Layout(width="13em"))
        self.head.add_class("vle-head")
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.opacity.add_class("vle-opacity")
        self.grid_lines = W.Checkbox(value=False, description="patch grid", indent=False,
                                     layout=W.Layout(width="auto", margin="0 1em"))
        self.boxes = W.Checkbox(value=False, description="object boxes", indent=False, layout=W.Layout(width="auto"))

        self.heatmap = picture("vle-heatmap")
        self.tokens = picture("vle-tokens", min_width="16em")
        self.info = W.HTML()
        self.info.add_class("vle-info")
        self.llm = LLMPanel(llm=llm, captioner=captioner, vqa_model=model if isinstance(model, str) else None,
                            source=self._llm_inputs)

        self.run_button.on_click(lambda _: self.run())
        self.picker.on_change(self._image_changed)
        for control in (self.target, self.contrast):
            control.observe(self._target_changed, names="value")
        for control in (self.method, self.layer, self.head):
            control.observe(self._explanation_changed, names="value")
        for control in (self.opacity, self.grid_lines, self.boxes):
            control.observe(lambda _: self.render_heatmap(), names="value")
        self._image_changed()
        self._refresh_methods()

        super().__init__([
            self.picker, W.HBox([self.question, self.top_k, self.run_button]), self.status,
            W.HBox([W.VBox([self.top_answer, self.answers_html], layout=W.Layout(min_width="16em")),
                    W.VBox([self.target, self.contrast, self.method, method_note(), W.HBox([self.layer, self.head])])]),
            W.HBox([self.opacity, self.grid_lines, self.boxes]),
            W.HBox([self.heatmap, W.VBox([self.info, self.tokens])]),
            W.Accordion([self.llm], titles=("VQA + LLM",)),
        ])
        self.add_class("vle-vqa-explorer")

    # -- heavy: the Run button ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """Answer the question and explain the top answer with the selected method, in one forward where the method
        runs one (image tower once per image)."""
        status = self.status.run(self.run_button, steps=2, text="answering and explaining …")
        with status as status, timed(self.timings, "run"):
            question = self.question.value.strip()
            if not question:
                raise ValueError("type a question first")
            image, record = self.picker.image, self.picker.record
            method, options = self.method.value, self.method_options()
            inputs, answers, explanation = self.session.ask_and_explain(image, question, self.top_k.value, method,
                                                                        **options)
            # nothing is replaced until the answers are in: a failed run keeps the last good one on screen
            self._image, self._record, self.inputs, self.answers = image, record, inputs, answers
            self.explanations = {(explanation.target, method, tuple(sorted(options.items()))): explanation}
            self._show_answers()
            status.step("drawing …")
            self._explain(force=True)

    def _show_answers(self) -> None:
        top = self.answers[0]
        self.top_answer.value = (f"<div style='font-size:1.3em'>answer: <b class='vle-answer-text'>"
                                 f"{html.escape(top['answer'])}</b></div>")
        rows = [(f"<b>{html.escape(a['answer'])}</b>" if i == 0 else html.escape(a["answer"]), f"{a['score']:.3f}",
                 score_bar(a["score"])) for i, a in enumerate(self.answers)]
        self.answers_html.value = html_table(rows, ("answer", "p", ""))
        options = [(f"{a['answer']} ({a['score']:.2f})", a["index"]) for a in self.answers]
        with self.quietly():
            self.target.options, self.target.value = options, options[0][1]
            self.contrast.options = [("— (no contrast)", NO_CONTRAST)] + options[1:]
            self.contrast.value = NO_CONTRAST
            self._refresh_methods()

    # -- targets, methods and their options --------------------------------------------------------------------------

    def current_target(self):
        if self.target.value is None:
            return None
        names = self.model.config.id2label
        index = int(self.target.value)
        if self.contrast.value not in (None, NO_CONTRAST) and self.contrast.value != index:
            other = int(self.contrast.value)
            return VQAContrast(index, other, str(names[index]), str(names[other]))
        return VQAAnswer(index, str(names[index]))

    def compatible_methods(self, target=None) -> list[str]:
        return self.session.methods_for(target or self.current_target() or VQAAnswer(0))

    def _refresh_methods(self) -> None:
        """List only the methods that can explain the current target; show layer/head only where they apply."""
        names = self.compatible_methods()
        keep = self.method.value if self.method.value in names else names[0]
        with self.quietly():
            self.method.options, self.method.value = names, keep
            self._refresh_method_options()

    def _refresh_method_options(self) -> None:
        options = self._methods[self.method.value].options
        layers, heads = self.model.config.num_hidden_layers, self.model.config.num_attention_heads
        for control, key, count in ((self.layer, "layer", layers), (self.head, "head", heads)):
            if key not in options:
                control.layout.display = "none"
                continue
            default = options[key]
            if isinstance(default, str):  # "last" / "mean" plus every index
                extra = (("last", "last"), ("mean", "mean")) if key == "layer" else (("mean", "mean"),)
                choices, value = layer_choices(count, extra), default
            else:  # an index (may be negative, e.g. Grad-CAM's second-to-last layer)
                choices, value = layer_choices(count, ()), int(default) % count
            control.layout.display = ""
            previous = control.value
            if list(control.options) != choices:
                control.options = choices
            control.value = previous if previous in [v for _, v in choices] else value

    def method_options(self) -> dict:
        options = self._methods[self.method.value].options
        return {key: control.value for key, control in (("layer", self.layer), ("head", self.head))
                if key in options}

    def _target_changed(self, _change) -> None:
        if self._quiet:
            return
        self._refresh_methods()
        self._explain()

    def _explanation_changed(self, change) -> None:
        if self._quiet:
            return
        if change["owner"] is self.method:
            with self.quietly():
                self._refresh_method_options()
        self._explain()

    def _image_changed(self) -> None:
        record = self.picker.record
        questions = [q["question"] for q in record["questions"]] if record else []
        self.question.options = questions
        if questions and not self.question.value:
            self.question.value = questions[0]
        self.boxes.disabled = record is None

    # -- explanation (cached per target, method and options) ---------------------------------------------------------

    def _explain(self, force: bool = False) -> None:
        """Show the explanation for the current controls: from the cache, computed at once when the method reuses the
        image features (milliseconds), or on the Run button when it must run the image tower."""
        if self.inputs is None or self.target.value is None:
            return
        target, method, options = self.current_target(), self.method.value, self.method_options()
        key = (target, method, tuple(sorted(options.items())))
        if key not in self.explanations:
            if self._methods[method].needs_image_tower and not force:
                self.status.show(f"{method} runs the image tower for every perturbation: press Run to compute it")
                return
            try:
                with timed(self.timings, "explain"):
                    self.explanations[key] = self.session.explain(self.inputs, target=target, method=method,
                                                                  **options)
            except Exception as error:  # noqa: BLE001
                if force:  # the Run button's status shows it
                    raise
                self.status.show(describe_error(error), "error")
                return
        self.explanation = self.explanations[key]
        if not force:
            self.status.show(f"{method} for {target.label}")
        self.render()

    # -- view only ---------------------------------------------------------------------------------------------------

    def render(self) -> None:
        """Redraw everything from the current explanation (no model call)."""
        with timed(self.timings, "render"):
            self.render_heatmap()
            self._render_text()

    def render_heatmap(self) -> None:
        e = self.explanation
        if e is None:
            return
        with timed(self.timings, "heatmap"):
            figure, ax = fixed_axes()
            plot_patch_relevance(e.patch_scores, self._image, signed=e.signed, opacity=self.opacity.value,
                                 grid_lines=self.grid_lines.value, boxes=self._boxes(), title=e.target.label, ax=ax)
            self.heatmap.value = figure_png(figure, self.dpi)

    def _boxes(self):
        if not (self.boxes.value and self._record):
            return None
        evidence = next((q["evidence"] for q in self._record["questions"]
                         if q["question"] == self.question.value.strip()), None)
        objects = self._record["objects"]
        chosen = [objects[i] for i in evidence] if evidence else objects
        return [tuple(o["box"]) + (f"{o['index']}",) for o in chosen]

    def _render_text(self) -> None:
        e = self.explanation
        figure = plot_token_strip(e.words, e.word_scores, signed=e.signed, width=4.5, title="words")
        self.tokens.value = figure_png(figure, self.dpi)
        share = e.modality_share
        meta = e.metadata
        rows = [("target", html.escape(e.target.label)), ("method", html.escape(e.method)),
                ("scores", "signed (red for, blue against)" if e.signed else "unsigned (brighter = more relevant)"),
                ("target probability", f"{meta.get('target_probability', float('nan')):.3f}"),
                ("image / text share", f"{share['image']:.0%} / {share['text']:.0%}"),
                ("computed in", f"{meta.get('seconds', 0.0) * 1000:.0f} ms"
                 + (" (cached image features)" if meta.get("image_features_cached") else ""))]
        rows += [(key, html.escape(str(meta[key]))) for key in ("layer", "head") if key in meta]
        self.info.value = html_table(rows)

    # -- LLM panel ---------------------------------------------------------------------------------------------------

    def _llm_inputs(self):
        if not self.answers:
            raise ValueError("press Run first: the LLM chooses among the VQA model's answers")
        return self._image, self.question.value.strip(), [{"answer": a["answer"], "score": a["score"]}
                                                          for a in self.answers]
