"""``VCRExplorer``: visual commonsense reasoning on a scene: the 4 answers (Q→A), then the 4 rationales (QA→R) given
an answer, with the referenced boxes drawn, and an explanation of any one choice.

    from widgets import VCRExplorer
    VCRExplorer()      # the shipped vle-tiny-shapes-vcr-q2a / -qa2r models on a scene from pics/
"""

from __future__ import annotations

import copy

import ipywidgets as W

from viz import plot_patch_relevance, plot_token_strip, plot_vcr_choices, referenced_objects
from vle.explain import METHODS, Session, VCRChoice
from vle.explain.session import DEFAULT_METHOD

from ._common import (DPI, ImagePicker, RunsWhenShown, Status, describe_error, figure_png, fixed_axes, load_session,
                      method_note, picture, scene_names, scene_record, timed)

STAGES = {"answers (Q → A)": "q2a", "rationales (QA → R)": "qa2r"}
GIVEN = ("the correct answer", "the model's answer")
LETTERS = "ABCD"  # the choices as the choices' figure letters them


class VCRExplorer(RunsWhenShown, W.VBox):
    """``q2a`` / ``qa2r``: shipped names or folders of the two VCR models (loaded on the first Run)."""

    def __init__(self, q2a: str = "vle-tiny-shapes-vcr-q2a", qa2r: str = "vle-tiny-shapes-vcr-qa2r",
                 image: str | None = "shapes_0", dpi: int = DPI):

        self.model_names, self.dpi = {"q2a": q2a, "qa2r": qa2r}, dpi
        self.results: dict = {}  # task → {"inputs", "probabilities", "choices", "annotation"}
        self.explanations: dict = {}
        self._image = self._record = None
        self._methods = METHODS
        self.timings: dict[str, float] = {}

        scenes = [name for name in scene_names() if (scene_record(name) or {}).get("vcr")]
        self.picker = ImagePicker(image if image in scenes else None, scenes=scenes)
        self.given = W.Dropdown(options=GIVEN, value=GIVEN[0], description="rationale for")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("vle-run")
        self.status = Status()
        self.choices_q2a = picture("vle-vcr-q2a")
        self.choices_qa2r = picture("vle-vcr-qa2r")
        self.stage = W.ToggleButtons(options=list(STAGES), description="explain")
        self.choice = W.Dropdown(options=[(letter, i) for i, letter in enumerate(LETTERS)], value=0,
                                 description="choice")
        methods = Session.methods_for(VCRChoice(0))
        self.method = W.Dropdown(options=methods, value=DEFAULT_METHOD, description="method")
        self.opacity = W.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.heatmap = picture("vle-heatmap")
        self.tokens = picture("vle-tokens", min_width="16em")

        self.run_button.on_click(lambda _: self.run())
        self.stage.observe(lambda _: self.explain_pick(), names="value")
        for control in (self.choice, self.method):
            control.observe(lambda _: self.explain_choice(), names="value")
        self.opacity.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.picker, self.given]), self.run_button, self.status, self.choices_q2a,
                          self.choices_qa2r, W.HBox([self.stage, self.choice, self.method, method_note()]),
                          self.opacity, W.HBox([self.heatmap, self.tokens])])

    def _score(self, task: str, annotation: dict, image, record: dict) -> dict:
        session = load_session(self.model_names[task], f"vcr_{task}")
        self.status.context = f"weights in {session.dtype_choice}"
        inputs = session.prepare_vcr(annotation, image, record)
        key = "answer_choices" if task == "q2a" else "rationale_choices"
        return {"inputs": inputs, "probabilities": session.choices(inputs).numpy(), "choices": annotation[key],
                "annotation": annotation, "label": annotation["answer_label" if task == "q2a" else "rationale_label"],
                "session": session}

    def run(self) -> None:
        with self.status.run(self.run_button, steps=3, text="answering …") as status:
            record = self.picker.record
            if not record or "vcr" not in record:
                raise ValueError("pick a scene from pics/ with a VCR item (its JSON has a 'vcr' entry)")
            image = self.picker.image
            annotation = copy.deepcopy(record["vcr"])
            q2a = self._score("q2a", annotation, image, record)
            status.step("rationales …")
            if self.given.value == GIVEN[1]:  # condition the rationales on what the model answered
                annotation = {**annotation, "answer_label": int(q2a["probabilities"].argmax())}
            qa2r = self._score("qa2r", annotation, image, record)
            # nothing is replaced until both stages succeeded: a failed run keeps the last good one on screen
            self._image, self._record = image, record
            self.results = {"q2a": q2a, "qa2r": qa2r}
            self.explanations.clear()
            status.step("drawing …")
            names, boxes = annotation["objects"], self._record["boxes"]
            for task, view in (("q2a", self.choices_q2a), ("qa2r", self.choices_qa2r)):
                result = self.results[task]
                question = annotation["question"]
                if task == "qa2r":
                    question = question + ["→"] + annotation["answer_choices"][annotation["answer_label"]]
                figure = plot_vcr_choices(self._image, result["choices"], result["probabilities"], boxes,
                                          question=question, answer_label=result["label"], object_names=names,
                                          figsize=(11.2, 4.5))  # the scene about 390 pixels wide
                view.value = figure_png(figure, self.dpi)
            self.explain_pick()

    def explain_pick(self) -> None:
        """Explain the model's own pick for the current stage: why it chose what it chose is the first question,
        at every Run and when switching between answers and rationales (another choice is one menu away)."""
        task = STAGES[self.stage.value]
        if task not in self.results:
            return
        picked = int(self.results[task]["probabilities"].argmax())
        if self.choice.value != picked:
            self.choice.value = picked  # its observer explains it
        else:
            self.explain_choice()

    def explain_choice(self) -> None:
        task = STAGES[self.stage.value]
        if task not in self.results:
            return
        key = (task, self.choice.value, self.method.value)
        try:
            if key not in self.explanations:
                if self._methods[self.method.value].needs_image_tower:
                    self.status.show(f"{self.method.value} runs the image tower for every perturbation: wait …")
                result = self.results[task]
                target = VCRChoice(self.choice.value)
                self.explanations[key] = result["session"].explain(result["inputs"], target=target,
                                                                   method=self.method.value)
            self.explanation = self.explanations[key]
            picked = self.choice.value == int(self.results[task]["probabilities"].argmax())
            self.status.show(f"{self.method.value} for {task} choice {LETTERS[self.choice.value]}"
                             + (" (the model's pick)" if picked else ""))
            self.render()
        except Exception as error:  # noqa: BLE001
            self.status.show(describe_error(error), "error")

    def render(self) -> None:
        e = getattr(self, "explanation", None)
        if e is None:
            return
        with timed(self.timings, "render"):
            result = self.results[STAGES[self.stage.value]]
            annotation = result["annotation"]
            referenced = referenced_objects(annotation["question"], result["choices"][self.choice.value])
            boxes = [tuple(self._record["boxes"][i][:4]) + (f"{i}",) for i in referenced]
            figure, ax = fixed_axes()
            plot_patch_relevance(e.patch_scores, self._image, signed=e.signed, opacity=self.opacity.value,
                                 boxes=boxes, title=f"choice {LETTERS[e.target.choice]}", ax=ax)
            self.heatmap.value = figure_png(figure, self.dpi)
            self.tokens.value = figure_png(plot_token_strip(e.words, e.word_scores, signed=e.signed, width=5.0,
                                                            title="words of the choice"), self.dpi)
