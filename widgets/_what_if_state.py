"""The "What if" explorer's picture edits and the scene-graph truth, apart from its widgets: ``Edits`` keeps the
edited scene (objects removed, moved, recoloured: ``vle.shapes.counterfactual``), the boxes painted over
(``vle.edits.blank_box``) and the picked object, and draws the edited picture once per change.
"""

from __future__ import annotations

import torch

from vle.edits import blank_box
from vle.errors import InputError
from vle.shapes.counterfactual import move_object, object_at, reanswer, recolor_object, remove_object
from vle.shapes.tasks_vqa import RELATIONAL_FAMILIES, VQA_FAMILIES, VQAExample
from vle.shapes.world import COLORS

NO_ANSWER = "none (no longer applies)"


def model_inputs(inputs) -> dict:
    """The model inputs of prepared ``ExplainInputs`` with its cached image features in place of the pixels (the
    interventions' functions run the model on such a dict; the image tower is not run again)."""
    batch = {k: v for k, v in inputs.model_inputs.items() if k != "pixel_values"}
    return {**batch, "image_features": inputs.image_features}


def answer_logits(model, inputs):
    """(answers,) float32 VQA logits of one full run of the fusion (every position of both streams: the lengths a
    patch of recorded layer outputs must match, which the pooled-only shortcut of ``Session.logits`` shortens)."""
    with torch.no_grad():
        return model(**model_inputs(inputs)).logits[0].float()


def truth_of(scene, record: dict | None, question: str) -> str | None:
    """The answer ``scene``'s graph gives to ``question`` (one of the shapes-world templates), ``NO_ANSWER`` when the
    question does not apply to it, or None for other images and questions."""
    if scene is None:
        return None
    known = [q["family"] for q in (record or {}).get("questions", []) if q["question"] == question]
    for family in known + [f for f in VQA_FAMILIES if f not in known]:
        example = VQAExample(question, "", family, family in RELATIONAL_FAMILIES, ())
        try:
            answered = reanswer(scene, example)
        except InputError:  # not this family's template
            continue
        return NO_ANSWER if answered is None else answered.answer
    return None


class Edits:
    """The picture after the edits: ``image`` (PIL), ``scene`` (the edited scene graph, None for other images),
    ``boxes`` painted over, ``picked`` (an object index)."""

    def __init__(self):
        self.original = self.original_scene = self.scene = self.image = self.record = None
        self.boxes: list[tuple[int, int, int, int]] = []
        self.picked: int | None = None
        self.log: list[str] = []

    def start(self, image, scene, record) -> None:
        self.original, self.original_scene, self.record = image, scene, record
        self.reset()

    def reset(self) -> None:
        self.scene, self.boxes, self.picked, self.log = self.original_scene, [], None, []
        self.image = self.original

    def _redraw(self) -> None:
        image = self.scene.image if self.scene is not None else self.original
        for box in self.boxes:
            image = blank_box(image, box)
        self.image = image

    def _needs_scene(self):
        if self.scene is None:
            raise InputError("objects can be picked, removed, recoloured and moved in shapes scenes only; drag a box "
                             "to paint a region over")
        if self.picked is None:
            raise InputError("click an object in the picture first")

    @property
    def picked_object(self):
        return None if self.scene is None or self.picked is None else self.scene.objects[self.picked]

    @property
    def picked_box(self):
        chosen = self.picked_object
        return None if chosen is None else chosen.box

    def free_colors(self) -> list[str]:
        return [] if self.scene is None else [c for c in COLORS if c not in {o.color for o in self.scene.objects}]

    def pick(self, x: float, y: float) -> None:
        if self.scene is None:
            raise InputError("objects can be picked in shapes scenes only; drag a box to paint a region over")
        self.picked = object_at(self.scene, x, y)

    def remove(self) -> None:
        self._needs_scene()
        chosen = self.picked_object
        self.scene, self.picked = remove_object(self.scene, self.picked), None
        self.log.append(f"the {chosen.color} {chosen.shape} removed")
        self._redraw()

    def recolor(self, color: str) -> None:
        self._needs_scene()
        chosen = self.picked_object
        self.scene = recolor_object(self.scene, self.picked, color)
        self.log.append(f"the {chosen.color} {chosen.shape} made {color}")
        self._redraw()

    def move(self, center: tuple[int, int]) -> None:
        self._needs_scene()
        chosen = self.picked_object
        self.scene = move_object(self.scene, self.picked, center)
        self.log.append(f"the {chosen.color} {chosen.shape} moved to {center}")
        self._redraw()

    def blank(self, box) -> None:
        if self.image is None:
            raise InputError("press Run first")
        box = tuple(int(v) for v in box)
        blank_box(self.image, box)  # checked before it is kept
        self.boxes.append(box)
        self.log.append(f"box {box} painted over")
        self._redraw()

    def describe(self) -> list[str]:
        return list(self.log)

    def truth(self, question: str) -> str | None:
        if self.boxes:
            return "unknown (a region was painted over)"
        return truth_of(self.scene, self.record, question)

