"""``WhatIfExplorer``: ask a question, then change something and see the answer and its explanation before and after,
side by side. The interventions combine:

- heads: the ablation sweep of the question drawn as a layer × head grid per attention site kind; a click on a cell
  ablates that attention head (zero or its mean over held-out shapes questions), another click restores it;
- objects (shapes scenes): click the picture to pick an object, then remove, recolour or move it (the next click
  places it); drag a box on any picture to paint it with the background;
- words: the question asked after the change is editable (or one word replaced or dropped);
- patch: the fusion's layer outputs written in from a second example (every layer or one, every position or the
  class token), with the share of the logit difference that patching recovers.

    from widgets import WhatIfExplorer
    WhatIfExplorer(seed=0, question="what size is the green object ?")

Run answers the question, explains it and sweeps its heads; a toggle, an edit or a word change then reruns only the
after side (one forward and one explanation, the image features cached).
"""

from __future__ import annotations

import html
from contextlib import ExitStack

import ipywidgets as W
import numpy as np

from viz import plot_patch_relevance
from viz.interventions import render_edit_canvas
from vle.explain import VQAAnswer
from vle.explain.interventions import (ablate, attention_sites, hidden_sites, patch, record_states, recovered_fraction,
                                       shapes_reference_means)
from vle.explain.session import DEFAULT_METHOD
from vle.explain.sweep import ablation_sweep

from ._clicks import ClickableImage
from ._common import (DPI, ImagePicker, Quiet, RunsWhenShown, Status, describe_error, figure_png, fixed_axes,
                      load_session, method_note, picture, timed)
from ._heads import HeadGrid
from ._what_if_state import Edits, answer_logits, model_inputs, truth_of

DEFAULT_QUESTION = "what size is the green object ?"
FIGSIZE = (3.5, 3.2)  # each side's heatmap: two side by side fit a laptop screen
CANVAS_PX = 384  # the picture clicked on, in image pixels times its scale


class WhatIfExplorer(RunsWhenShown, W.VBox, Quiet):
    """``model``: a shipped name or folder of a VQA model (or a ``Session``); ``seed``: a shapes scene (``pics/``
    holds seeds 0-5; any other seed is generated) or ``image``: any choice of the image menu; ``question``: asked
    before and, unless edited, after."""

    def __init__(self, model: str = "vle-tiny-shapes-vqa", seed: int | None = 0, question: str = DEFAULT_QUESTION,
                 image: str | None = None, method: str | None = None, dpi: int = DPI):
        self.session = load_session(model, "vqa")
        self.model, self.dpi = self.session.model, dpi
        self.before: dict | None = None  # the example as asked: inputs, logits, answer, explanations by method
        self.after: dict | None = None  # the same after the interventions
        self.sweep: dict | None = None  # ablation_sweep of the before example, in the mode it was swept with
        self.edits = Edits()  # the picture's edits: the scene graph changed, boxes blanked, the picked object
        self.timings: dict[str, float] = {}  # ms: "run", "after" (one rerun), "toggle" (click to picture), "render"
        self._means = None
        self._source = None  # (key, states, logits) of the patch source

        self.picker = ImagePicker(image or (f"shapes_{seed}" if seed is not None else None), seeds=True)
        if seed is not None and self.picker.source.value != f"shapes_{seed}":
            with self.picker.source.hold_trait_notifications():
                self.picker.source.value, self.picker.seed.value = "(shapes seed)", seed
        self.question = W.Combobox(value=question, description="question", ensure_option=False,
                                   continuous_update=False, layout=W.Layout(width="30em"))
        self.question.add_class("vle-question")
        methods = self.session.methods_for(VQAAnswer(0))
        method = method or DEFAULT_METHOD
        self.method = W.Dropdown(options=methods, value=method if method in methods else methods[0],
                                 description="method", layout=W.Layout(width="20em"))
        self.method.add_class("vle-method")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.status.context = f"weights in {self.session.dtype_choice}"

        self.before_text = W.HTML(layout=W.Layout(min_height="5.2em"))
        self.after_text = W.HTML(layout=W.Layout(min_height="5.2em"))
        self.before_text.add_class("vle-what-if-before")
        self.after_text.add_class("vle-what-if-after")
        self.before_picture = picture("vle-what-if-before-map", min_width="300px")
        self.after_picture = picture("vle-what-if-after-map", min_width="300px")
        self.summary = W.HTML()
        self.summary.add_class("vle-what-if-summary")

        layers = len(attention_sites(self.model, "cross")) // 2
        heads = self.model.config.num_attention_heads
        self.heads = HeadGrid(layers, heads, on_toggle=lambda: self._intervene("toggle"))
        self.mode = W.ToggleButtons(options=["zero", "mean"], value="zero", description="ablate to",
                                    style={"button_width": "4.5em"})
        self.clear_heads = W.Button(description="Clear heads", icon="times")
        self.sweep_note = W.HTML()

        self.canvas = ClickableImage("vle-what-if-canvas", width="256px", on_click=self.click_at, on_box=self.blank)
        self.picked = W.HTML("click an object to pick it; drag a box to blank it")
        self.picked.add_class("vle-what-if-picked")
        self.remove_button = W.Button(description="Remove", icon="trash", disabled=True)
        self.remove_button.add_class("vle-remove")
        self.color = W.Dropdown(options=[], description="colour", layout=W.Layout(width="13em"), disabled=True)
        self.recolor_button = W.Button(description="Recolour", icon="paint-brush", disabled=True)
        self.move_button = W.ToggleButton(description="Move: click where", icon="arrows", disabled=True)
        self.reset_image = W.Button(description="Undo picture edits", icon="undo")

        self.after_question = W.Text(value=question, description="ask after", continuous_update=False,
                                     layout=W.Layout(width="28em"))
        self.after_question.add_class("vle-after-question")
        self.word = W.Dropdown(options=[], description="word", layout=W.Layout(width="13em"))
        self.replacement = W.Text(placeholder="new word", layout=W.Layout(width="9em"))
        self.replace_button = W.Button(description="Replace", layout=W.Layout(width="7em"))
        self.drop_button = W.Button(description="Drop", layout=W.Layout(width="6em"))

        self.patch_on = W.Checkbox(value=False, description="patch the fusion from a second example", indent=False)
        self.source_picker = ImagePicker("shapes_1", seeds=True)
        self.source_picker.source.remove_class("vle-image-source")  # "the" image menu of the tab stays the main one
        self.source_question = W.Text(value=question, description="its question", continuous_update=False,
                                      layout=W.Layout(width="24em"))
        hidden = hidden_sites(self.model)
        self.patch_site = W.Dropdown(options=[("every layer, both streams", "all")] + [(h, h) for h in hidden],
                                     description="layer output", layout=W.Layout(width="21em"))
        self.positions = W.ToggleButtons(options=[("all positions", "all"), ("class token", "cls")], value="all",
                                         style={"button_width": "7.5em"})

        self.run_button.on_click(lambda _: self.run())
        self.picker.on_change(self._image_changed)
        self.method.observe(lambda _: self._intervene("method"), names="value")
        self.mode.observe(lambda _: self._intervene("mode"), names="value")
        self.clear_heads.on_click(lambda _: (self.heads.clear(), self._intervene("clear")))
        self.remove_button.on_click(lambda _: self._edit(self.edits.remove))
        self.recolor_button.on_click(lambda _: self._edit(lambda: self.edits.recolor(self.color.value)))
        self.reset_image.on_click(lambda _: self._edit(self.edits.reset))
        self.after_question.observe(lambda _: self._words_changed(), names="value")
        self.replace_button.on_click(lambda _: self._reword("replace"))
        self.drop_button.on_click(lambda _: self._reword("drop"))
        for control in (self.patch_on, self.patch_site, self.positions, self.source_question):
            control.observe(lambda _: self._intervene("patch"), names="value")
        self.source_picker.on_change(lambda: self._intervene("patch"))
        self._image_changed()

        side = W.Layout(width="50%", min_width="320px", padding="0 0.5em")
        section = W.Layout(border="1px solid #ddd", padding="0.4em 0.6em", margin="0.4em 0.6em 0.4em 0")
        heads_box = W.VBox([W.HTML("<b>Heads</b>: Δ p(answer) with one attention head ablated (blue: it "
                                   "loses); click to ablate"), self.heads,
                            W.HBox([self.mode, self.clear_heads]), self.sweep_note], layout=section)
        objects_box = W.VBox([W.HTML("<b>Picture</b> (after)"), self.canvas, self.picked,
                              W.HBox([self.remove_button, self.move_button]), W.HBox([self.color, self.recolor_button]),
                              self.reset_image], layout=section)
        words_box = W.VBox([W.HTML("<b>Words</b>"), self.after_question,
                            W.HBox([self.word, self.replacement, self.replace_button, self.drop_button])],
                           layout=section)
        patch_box = W.VBox([W.HTML("<b>Patch</b>"), self.patch_on, self.source_picker, self.source_question,
                            self.patch_site, self.positions], layout=section)
        super().__init__([
            self.picker, W.HBox([self.question, self.method, self.run_button, method_note()]), self.status,
            W.HBox([W.VBox([self.before_text, self.before_picture], layout=side),
                    W.VBox([self.after_text, self.after_picture], layout=side)]),
            self.summary,
            W.HBox([W.VBox([heads_box, words_box]), W.VBox([objects_box, patch_box])]),
        ])
        self.add_class("vle-what-if")

    # -- heavy: the Run button ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """Answer and explain the question as asked, sweep its attention heads, then apply the interventions."""
        with self.status.run(self.run_button, steps=3, text="answering, explaining, sweeping the heads …") as status, \
                timed(self.timings, "run"):
            question = self.question.value.strip()
            if not question:
                raise ValueError("type a question first")
            image, scene, record = self.picker.image, self.picker.scene, self.picker.record
            inputs = self.session.prepare(image, question)
            logits = answer_logits(self.model, inputs)
            index = int(logits.argmax())
            explanation = self.session.explain(inputs, answer=index, method=self.method.value)
            status.step("sweeping the attention heads …")
            sweep = ablation_sweep(self.model, model_inputs(inputs), index, mode=self.mode.value,
                                   means=self._reference() if self.mode.value == "mean" else None)
            # nothing is replaced until everything succeeded: a failed run keeps the last good one on screen
            new_image = self.before is None or not same_picture(self.before["image"], image)
            old_question = None if self.before is None else self.before["question"]
            self.before = {"image": image, "name": self.picker.name, "question": question, "inputs": inputs,
                           "logits": logits, "index": index, "explanations": {self.method.value: explanation},
                           "truth": truth_of(scene, record, question)}
            self.sweep = {**sweep, "mode": self.mode.value}
            self.heads.show_effects(sweep["effects"])
            self.sweep_note.value = ""
            if new_image:
                self.edits.start(image, scene, record)
            if question != old_question:  # the after side (and a source that followed it) asks the new question
                with self.quietly():
                    if self.source_question.value.strip() in ("", old_question):
                        self.source_question.value = question
                    self.after_question.value = question
            self._refresh_words()
            self._render_before()
            status.step("the intervened run …")
            self.update_after()

    # -- the intervened run ------------------------------------------------------------------------------------------

    def _reference(self):
        if self._means is None:  # held-out shapes questions, as the command line's mean ablation uses
            self._means = shapes_reference_means(self.model, self.session.processor, attention_sites(self.model))
        return self._means

    def update_after(self) -> None:
        """Rerun the example with every intervention in place (raises; callers show the error)."""
        if self.before is None:
            return
        with timed(self.timings, "after"):
            question = self.after_question.value.strip()
            inputs = self.session.prepare(self.edits.image, question) if question else None
            if inputs is None:
                raise ValueError("the question asked after the change is empty")
            states = self._source_states() if self.patch_on.value else None  # recorded without interventions
            with ExitStack() as stack:
                heads = self.heads.ablated()
                if heads:
                    stack.enter_context(ablate(self.model, heads, mode=self.mode.value,
                                               means=self._reference() if self.mode.value == "mean" else None))
                if states is not None:
                    sites = None if self.patch_site.value == "all" else [self.patch_site.value]
                    stack.enter_context(patch(self.model, states, sites, self.positions.value))
                logits = answer_logits(self.model, inputs)
                index = int(logits.argmax())
                try:
                    explanation, why = self.session.explain(inputs, answer=index,
                                                            method=self.method.value), ""
                except Exception as error:  # noqa: BLE001  (the answer stands; the picture says why it is bare)
                    explanation, why = None, describe_error(error)
        self.after = {"image": self.edits.image, "question": question, "logits": logits, "index": index,
                      "explanation": explanation, "why": why, "heads": heads,
                      "truth": self.edits.truth(question) if self.before["truth"] is not None else None}
        self._render_after()

    def _source_states(self) -> dict:
        question = self.source_question.value.strip()
        if not question:
            raise ValueError("type the second example's question (the patch source)")
        image = self.source_picker.image
        key = (self.source_picker.name, question)
        if self._source is None or self._source[0] != key:
            inputs = self.session.prepare(image, question)
            self._source = (key, record_states(self.model, model_inputs(inputs)),
                            answer_logits(self.model, inputs))
        return self._source[1]

    def _intervene(self, what: str) -> None:
        """An intervention changed: rerun the after side, the error (if any) shown in the status line."""
        if self._quiet or self.before is None:
            return
        try:
            with timed(self.timings, what if what == "toggle" else "intervene"):
                if what == "method" and self.method.value not in self.before["explanations"]:
                    self.before["explanations"][self.method.value] = self.session.explain(
                        self.before["inputs"], answer=self.before["index"], method=self.method.value)
                    self._render_before()
                if what == "mode" and self.sweep is not None and self.sweep["mode"] != self.mode.value:
                    self.sweep_note.value = (f"<i>the grid shows the {self.sweep['mode']} sweep: press Run to sweep "
                                             f"with {self.mode.value} ablation</i>")
                self.update_after()
            self.status.show(f"after: {self.timings.get('after', 0):.0f} ms for the intervened run", "ok")
        except Exception as error:  # noqa: BLE001  (shown in the widget, which keeps the last good after side)
            self.status.show(describe_error(error), "error")

    # -- the picture: pick, remove, recolour, move, blank -------------------------------------------------------------

    def _image_changed(self) -> None:
        record = self.picker.record
        self.question.options = [q["question"] for q in record["questions"]] if record else []

    def click_at(self, x: float, y: float) -> None:
        """A click on the picture at image pixel (x, y): the destination of a move, or the object to pick."""
        if self.move_button.value and self.edits.picked is not None:
            self.move_button.value = False
            self._edit(lambda: self.edits.move((int(round(x)), int(round(y)))))
            return
        try:
            self.edits.pick(x, y)
        except Exception as error:  # noqa: BLE001
            self.status.show(describe_error(error), "error")
        self._show_canvas()

    def blank(self, box) -> None:
        """A box dragged on the picture: paint it with the image's background colour."""
        self._edit(lambda: self.edits.blank(box))

    def _edit(self, change) -> None:
        try:
            change()
        except Exception as error:  # noqa: BLE001  (the edit is refused, in words; nothing changed)
            self.status.show(describe_error(error), "error")
            return
        self._show_canvas()
        self._intervene("edit")

    def _show_canvas(self) -> None:
        edits = self.edits
        if edits.image is None:
            return
        width, height = edits.image.size
        scale = max(1, CANVAS_PX // max(width, height))
        self.canvas.show(render_edit_canvas(edits.image, scale=scale, boxes=edits.boxes, highlight=edits.picked_box),
                         (width, height))
        chosen = edits.picked_object
        self.picked.value = ("click an object to pick it; drag a box to blank it" if chosen is None else
                             f"picked: object {chosen.index}, the {chosen.size} {chosen.color} {chosen.shape}")
        if edits.scene is None:
            self.picked.value = "drag a box to blank it (objects can be picked in shapes scenes)"
        for control in (self.remove_button, self.color, self.recolor_button, self.move_button):
            control.disabled = chosen is None
        with self.quietly():
            self.color.options = edits.free_colors()

    # -- words ---------------------------------------------------------------------------------------------------------

    def _refresh_words(self) -> None:
        words = self.after_question.value.split()
        with self.quietly():
            self.word.options = [(f"{i}: {w}", i) for i, w in enumerate(words)]
            self.word.value = len(words) - 2 if len(words) > 1 else None  # the last word before the question mark

    def _words_changed(self) -> None:
        if self._quiet:
            return
        self._refresh_words()
        self._intervene("words")

    def _reword(self, how: str) -> None:
        from vle.edits import drop_word, replace_word

        try:
            if self.word.value is None:
                raise ValueError("pick a word of the question first")
            text = self.after_question.value
            self.after_question.value = (replace_word(text, self.word.value, self.replacement.value) if how == "replace"
                                         else drop_word(text, self.word.value))
        except Exception as error:  # noqa: BLE001
            self.status.show(describe_error(error), "error")

    # -- view ----------------------------------------------------------------------------------------------------------

    def _side_html(self, side: dict, title: str) -> str:
        names = self.model.config.id2label
        probabilities = side["logits"].softmax(-1)
        original = self.before["index"]
        answer, p = str(names[side["index"]]), float(probabilities[side["index"]])
        rows = [f"<div style='font-size:0.95em;color:#555'>{title}: {html.escape(side['question'])}</div>",
                f"<div style='font-size:1.3em'>answer: <b class='vle-answer-text'>{html.escape(answer)}</b> "
                f"<span class='vle-probability'>{p:.3f}</span></div>"]
        before = float(self.before["logits"].softmax(-1)[original])
        if side is self.after:  # the before side has the same lines, so that both pictures start at the same height
            change = float(probabilities[original]) - before
            rows.append(f"<div>p(“{html.escape(str(names[original]))}”): {before:.3f} → "
                        f"{float(probabilities[original]):.3f} (<b class='vle-delta'>{change:+.3f}</b>)</div>")
        else:
            rows.append(f"<div>p(“{html.escape(str(names[original]))}”): {before:.3f} as asked</div>")
        if side.get("why"):
            rows.append(f"<div style='color:#b00020'>no explanation: {html.escape(side['why'])}</div>")
        truth = side.get("truth")
        if self.before["truth"] is not None:
            rows.append(f"<div style='color:#555'>truth (scene graph): {html.escape(str(truth or '—'))}</div>")
        else:
            rows.append("<div>&nbsp;</div>")
        recovered = self._recovered() if side is self.after else ""
        rows.append(f"<div class='vle-recovered'>{recovered or '&nbsp;'}</div>")
        return "".join(rows)

    def _recovered(self) -> str:
        """With patching on and the source answering differently: how much of the logit difference it recovers."""
        if not self.patch_on.value or self._source is None:
            return ""
        source = self._source[2]
        clean_answer, corrupt_answer = int(source.argmax()), self.before["index"]
        if clean_answer == corrupt_answer:
            return "the source gives the same answer: no logit difference to recover"

        def difference(logits) -> float:
            return float(logits[clean_answer] - logits[corrupt_answer])
        share = recovered_fraction(difference(self.after["logits"]), difference(source),
                                   difference(self.before["logits"]))
        names = self.model.config.id2label
        clean, corrupt = (html.escape(str(names[i])) for i in (clean_answer, corrupt_answer))
        return f"patching recovers <b>{share:.0%}</b> of the logit difference “{clean}” (source) − “{corrupt}”"

    def _figure(self, explanation, image, title: str) -> bytes:
        figure, ax = fixed_axes(FIGSIZE)
        if explanation is None:  # the picture alone, at the same size as an explained one
            grid = self.model.config.patch_grid
            plot_patch_relevance(np.zeros((grid, grid)), image, signed=False, title=title, ax=ax)
        else:
            plot_patch_relevance(explanation.patch_scores, image, signed=explanation.signed, title=title, ax=ax)
        return figure_png(figure, self.dpi)

    def _render_before(self) -> None:
        e = self.before["explanations"][self.method.value]
        self.before_text.value = self._side_html(self.before, "before")
        self.before_picture.value = self._figure(e, self.before["image"], f"before · {e.target.answer}")

    def _render_after(self) -> None:
        with timed(self.timings, "render"):
            e, answer = self.after["explanation"], self.model.config.id2label[self.after["index"]]
            self.after_text.value = self._side_html(self.after, "after")
            self.after_picture.value = self._figure(e, self.after["image"], f"after · {answer}"
                                                    + ("" if e else " (not explained)"))
            self.summary.value = self._summary()
            self._show_canvas()

    def _summary(self) -> str:
        parts = [f"{site.removeprefix('fusion.')} head {', '.join(map(str, heads))} ablated ({self.mode.value})"
                 for site, heads in self.after["heads"].items()]
        parts += self.edits.describe()
        if self.after["question"] != self.before["question"]:
            parts.append(f"asked “{html.escape(self.after['question'])}”")
        if self.patch_on.value:
            parts.append(f"patched from {html.escape(self.source_picker.name)} "
                         f"({self.patch_site.value.removeprefix('fusion.')}, {self.positions.value} positions)")
        return "<b>after</b> = " + ("; ".join(parts) if parts else "no change yet: click a head, the picture, or "
                                    "edit the question below")


def same_picture(first, second) -> bool:
    return first.size == second.size and np.array_equal(np.asarray(first), np.asarray(second))
