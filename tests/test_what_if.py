"""The "What if" explorer driven as a user would: ``.value`` and ``.click()`` on its controls, and the ipyevents
handler of its picture called with the event dicts the browser sends. Every after side is checked against the engine
(``ablate``, ``patch``, the counterfactual scenes and edits) run directly, never against hard-coded answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("ipyevents")

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "vle" / "checkpoints" / "vle-tiny-shapes-vqa" / "config.json").is_file(),
                                reason="the embedded VQA model is not shipped yet")
QUESTION = "what size is the green object ?"  # shapes_0: the model answers "large", and two heads carry it


@pytest.fixture
def explorer():
    from widgets import WhatIfExplorer

    explorer = WhatIfExplorer(seed=0, question=QUESTION)
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    return explorer


def click(explorer, x, y, shown=(288, 288)):
    from widgets._clicks import click_event

    size = explorer.canvas.size
    for kind in ("mousedown", "mouseup"):
        explorer.canvas.handle(click_event(x, y, size, shown, kind))


def drag(explorer, start, end, shown=(288, 288)):
    from widgets._clicks import click_event

    size = explorer.canvas.size
    explorer.canvas.handle(click_event(*start, size, shown, "mousedown"))
    explorer.canvas.handle(click_event(*end, size, shown, "mouseup"))


def engine_answer(explorer, image, question, *contexts):
    """(top index, logits) of the model on image + question, inside the given intervention contexts."""
    from contextlib import ExitStack

    inputs = explorer.session.prepare(image, question)
    with ExitStack() as stack, torch.no_grad():
        for context in contexts:
            stack.enter_context(context)
        logits = explorer.model(**inputs.model_inputs).logits[0].float()
    return int(logits.argmax()), logits


def shown_answer(explorer) -> str:
    return explorer.model.config.id2label[explorer.after["index"]]


def test_run_shows_before_and_after_and_the_sweep(explorer):
    assert explorer.before["index"] == explorer.after["index"]
    assert "vle-answer-text'>large<" in explorer.before_text.value  # the truth of shapes_0, which the model gives
    assert "truth (scene graph): large" in explorer.before_text.value
    for picture in (explorer.before_picture, explorer.after_picture, explorer.canvas.image):
        assert bytes(picture.value).startswith(b"\x89PNG")
    effects = explorer.sweep["effects"]
    assert len(effects) == len(explorer.heads.buttons) == 32  # 4 sites kinds x 2 layers x 4 heads
    worst = min(effects, key=lambda e: e["delta"])
    assert explorer.heads.buttons[worst["site"], worst["head"]].description == f"{worst['delta']:+.2f}"


def test_toggling_a_head_reruns_the_after_side_as_ablate_does(explorer):
    from vle.explain.interventions import ablate

    worst = min(explorer.sweep["effects"], key=lambda e: e["delta"])
    before = explorer.before_picture.value
    explorer.heads.buttons[worst["site"], worst["head"]].click()
    index, logits = engine_answer(explorer, explorer.edits.image, QUESTION,
                                  ablate(explorer.model, {worst["site"]: [worst["head"]]}))
    assert explorer.after["index"] == index
    p = float(logits.softmax(-1)[explorer.before["index"]])
    assert p == pytest.approx(worst["probability"], abs=1e-4)  # the sweep's cell said so
    assert f"{p:.3f} (<b class='vle-delta'>" in explorer.after_text.value
    assert explorer.after_picture.value != explorer.before_picture.value and explorer.before_picture.value == before
    assert "toggle" in explorer.timings and explorer.heads.ablated() == {worst["site"]: [worst["head"]]}
    explorer.heads.buttons[worst["site"], worst["head"]].click()  # again: restored
    assert explorer.heads.ablated() == {} and explorer.after["index"] == explorer.before["index"]


def test_two_heads_and_mean_ablation_and_clear(explorer):
    from vle.explain.interventions import ablate

    chosen = {"fusion.text.0.cross_attention": [1], "fusion.image.1.self_attention": [0]}
    for site, heads in chosen.items():
        explorer.heads.buttons[site, heads[0]].click()
    explorer.mode.value = "mean"
    index, logits = engine_answer(explorer, explorer.edits.image, QUESTION,
                                  ablate(explorer.model, chosen, mode="mean", means=explorer._reference()))
    assert explorer.after["index"] == index
    torch.testing.assert_close(explorer.after["logits"], logits, atol=1e-4, rtol=1e-4)
    assert "press Run to sweep" in explorer.sweep_note.value
    explorer.clear_heads.click()
    assert explorer.heads.ablated() == {}
    torch.testing.assert_close(explorer.after["logits"], explorer.before["logits"], atol=1e-5, rtol=1e-5)


def test_clicking_an_object_and_removing_it(explorer):
    from vle.shapes.counterfactual import remove_object
    from vle.shapes.world import make_scene

    scene = make_scene(0)
    green = next(o for o in scene.objects if o.color == "green")
    click(explorer, *green.center)
    assert explorer.edits.picked == green.index and "green" in explorer.picked.value
    assert not explorer.remove_button.disabled
    explorer.remove_button.click()
    assert explorer.status.error is None and "error" not in explorer.status.message.value
    expected = remove_object(scene, green.index).image
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(expected))
    index, _ = engine_answer(explorer, expected, QUESTION)
    assert explorer.after["index"] == index
    assert "no longer applies" in explorer.after_text.value  # there is no green object to ask about
    assert "green triangle removed" in explorer.summary.value


def test_recolour_and_move_and_a_refused_move(explorer):
    from vle.shapes.counterfactual import move_object, recolor_object, remove_object
    from vle.shapes.world import make_scene

    scene = make_scene(0)
    red = next(o for o in scene.objects if o.color == "red")
    click(explorer, *red.center)
    assert list(explorer.color.options) == []  # shapes_0 uses all six colours
    explorer.remove_button.click()
    scene = remove_object(scene, red.index)
    green = next(o for o in scene.objects if o.color == "green")
    click(explorer, *green.center)
    assert list(explorer.color.options) == ["red"]
    explorer.color.value = "red"
    explorer.recolor_button.click()
    scene = recolor_object(scene, green.index, "red")
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(scene.image))
    assert explorer.after["index"] == engine_answer(explorer, scene.image, QUESTION)[0]
    blue = next(o for o in scene.objects if o.color == "blue")
    click(explorer, *blue.center)
    explorer.move_button.value = True
    click(explorer, 60, 20)
    scene = move_object(scene, blue.index, (60, 20))
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(scene.image))
    click(explorer, 60, 20)  # picked again where it is now
    explorer.move_button.value = True
    other = next(o for o in scene.objects if o.color == "orange")
    click(explorer, *other.center)  # onto the orange square: refused, in words
    assert "would touch" in explorer.status.message.value and "Traceback" not in explorer.status.message.value
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(scene.image))  # nothing changed


def test_dragging_a_box_blanks_it(explorer):
    from vle.edits import blank_box
    from vle.shapes.world import make_scene

    drag(explorer, (90, 30), (115, 58))
    box = explorer.edits.boxes[-1]
    assert box[0] in (89, 90) and box[2] in (115, 116)
    expected = blank_box(make_scene(0).image, box)
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(expected))
    assert explorer.after["index"] == engine_answer(explorer, expected, QUESTION)[0]
    assert "unknown (a region was painted over)" in explorer.after_text.value
    explorer.reset_image.click()
    assert np.array_equal(np.asarray(explorer.after["image"]), np.asarray(make_scene(0).image))


def test_word_edits(explorer):
    words = QUESTION.split()
    explorer.word.value = words.index("green")
    explorer.replacement.value = "red"
    explorer.replace_button.click()
    assert explorer.after_question.value == QUESTION.replace("green", "red")
    assert explorer.after["index"] == engine_answer(explorer, explorer.edits.image, explorer.after_question.value)[0]
    assert "truth (scene graph): small" in explorer.after_text.value  # shapes_0's red square is small
    explorer.word.value = words.index("size")
    explorer.drop_button.click()
    assert explorer.after_question.value == "what is the red object ?"
    explorer.after_question.value = ""
    assert "empty" in explorer.status.message.value


def test_patch_from_a_second_example(explorer):
    from vle.explain.interventions import patch, record_states
    from widgets._what_if_state import model_inputs

    source_question = "what color is the circle ?"  # shapes_1: another scene and another answer
    explorer.source_picker.source.value = "shapes_1"
    explorer.source_question.value = source_question
    explorer.positions.value = "cls"
    explorer.patch_on.value = True
    assert explorer.status.error is None and "error" not in explorer.status.message.value
    source = explorer.session.prepare(explorer.source_picker.image, source_question)
    states = record_states(explorer.model, model_inputs(source))
    _, logits = engine_answer(explorer, explorer.edits.image, QUESTION, patch(explorer.model, states, None, "cls"))
    torch.testing.assert_close(explorer.after["logits"], logits, atol=1e-4, rtol=1e-4)
    assert "logit difference" in explorer.after_text.value
    explorer.patch_site.value = "fusion.text.1.hidden"
    _, logits = engine_answer(explorer, explorer.edits.image, QUESTION,
                              patch(explorer.model, states, ["fusion.text.1.hidden"], "cls"))
    torch.testing.assert_close(explorer.after["logits"], logits, atol=1e-4, rtol=1e-4)
    explorer.positions.value = "all"  # the texts differ in length: refused, in words
    assert "lengths differ" in explorer.status.message.value


def test_bad_input_shows_in_the_status(explorer, tmp_path):
    from PIL import Image

    explorer.remove_button.click()  # nothing picked: the button is disabled in the browser; here it says why
    assert "click an object" in explorer.status.message.value
    path = tmp_path / "plain.png"
    Image.new("RGB", (64, 48), (200, 200, 200)).save(path)
    explorer.picker.source.value = "(path)"
    explorer.picker.path.value = str(path)
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    click(explorer, 10, 10)
    assert "shapes scenes only" in explorer.status.message.value
    drag(explorer, (5, 5), (30, 20))  # any picture: a box is painted over
    assert explorer.edits.boxes and "painted over" in explorer.summary.value
    explorer.picker.path.value = str(tmp_path / "missing.png")
    explorer.run_button.click()
    assert explorer.status.error is not None and not explorer.run_button.disabled


def test_a_head_toggle_records_what_it_cost(explorer):
    """Not a timed assertion (benchmarks print numbers): the explorer keeps what a click cost."""
    worst = min(explorer.sweep["effects"], key=lambda e: e["delta"])
    explorer.heads.buttons[worst["site"], worst["head"]].click()
    assert set(explorer.timings) >= {"run", "after", "render", "toggle"}
    assert explorer.timings["toggle"] >= explorer.timings["after"] > 0
