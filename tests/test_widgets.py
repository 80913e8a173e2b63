"""The explorers driven as a user would, by setting ``.value`` and calling ``.click()`` (no browser).

Answers are checked against the truth in the scene JSON and the model's own pipeline, never hard-coded. VCR runs on
tiny random VCR models saved here, so it does not wait for the shipped VCR checkpoints.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest

ipywidgets = pytest.importorskip("ipywidgets")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "vle" / "checkpoints"
needs_vqa = pytest.mark.skipif(not (SHIPPED / "vle-tiny-shapes-vqa" / "config.json").is_file(),
                               reason="the embedded VQA model is not shipped yet")
needs_pretrained = pytest.mark.skipif(not (SHIPPED / "vle-tiny-shapes" / "config.json").is_file(),
                                      reason="the embedded pretraining model is not shipped yet")


def scene(name: str = "shapes_0") -> dict:
    return json.loads((ROOT / "pics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def vqa():
    from widgets import VQAExplorer

    return VQAExplorer(image="shapes_0")


def ask(explorer, question: str):
    explorer.question.value = question
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    return explorer


@needs_vqa
def test_vqa_answers_match_the_pipeline_and_truth(vqa):
    from vle.pipelines import pipeline

    item = next(q for q in scene()["questions"] if q["family"] == "size")
    ask(vqa, item["question"])
    expected = pipeline("vqa", "vle-tiny-shapes-vqa")(image=str(ROOT / "pics" / "shapes_0.png"),
                                                      question=item["question"], top_k=vqa.top_k.value)
    assert [a["answer"] for a in vqa.answers] == [a["answer"] for a in expected]
    np.testing.assert_allclose([a["score"] for a in vqa.answers], [a["score"] for a in expected], atol=1e-5)
    assert expected[0]["answer"] in vqa.top_answer.value
    if expected[0]["answer"] == item["answer"]:  # the truth, when the model gets it right
        assert item["answer"] in vqa.top_answer.value
    assert bytes(vqa.heatmap.value).startswith(b"\x89PNG") and bytes(vqa.tokens.value).startswith(b"\x89PNG")


@needs_vqa
def test_only_compatible_methods_are_listed_and_layer_controls_follow(vqa):
    from vle.explain import METHODS, VQAAnswer

    ask(vqa, "what size is the green object ?")
    listed = set(vqa.method.options)
    assert listed == {name for name, cls in METHODS.items() if cls.supports(VQAAnswer(0))}
    assert "pbc" not in listed
    vqa.method.value = "raw_attention"
    assert vqa.layer.layout.display == "" and vqa.head.layout.display == ""
    picture = vqa.heatmap.value
    vqa.layer.value, vqa.head.value = 0, 1
    assert vqa.explanation.metadata["layer"] == 0 and vqa.explanation.metadata["head"] == 1
    assert vqa.heatmap.value != picture
    vqa.method.value = "rollout"
    assert vqa.layer.layout.display == "none" and vqa.explanation.method == "rollout"


def test_the_default_method_and_its_caveat_stand_beside_the_method_list():
    from widgets import VQAExplorer
    from widgets._common import method_note

    from vle.explain.session import DEFAULT_METHOD, DEFAULT_METHOD_NOTE

    explorer = VQAExplorer(image="shapes_0")
    assert explorer.method.value == DEFAULT_METHOD
    notes = [w for w in _descendants(explorer) if "vle-method-note" in getattr(w, "_dom_classes", ())]
    assert len(notes) == 1 and DEFAULT_METHOD in notes[0].value
    assert (notes[0].layout.display != "none") == bool(DEFAULT_METHOD_NOTE)
    if DEFAULT_METHOD_NOTE:
        assert DEFAULT_METHOD_NOTE.split(";")[0] in method_note().value


def _descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


@needs_vqa
def test_contrastive_target_and_view_only_changes_reuse_the_cache(vqa):
    ask(vqa, "what size is the green object ?")
    vqa.method.value = "coattention_relevance"
    vqa.contrast.value = vqa.answers[1]["index"]
    assert vqa.explanation.target.kind == "contrastive"
    cached = dict(vqa.explanations)
    hits = vqa.session.cache.hits
    before = vqa.heatmap.value
    vqa.opacity.value = 0.2
    vqa.grid_lines.value = True
    assert vqa.heatmap.value != before
    assert vqa.explanations == cached and vqa.session.cache.hits == hits  # no model call for a view change
    vqa.contrast.value = -1
    vqa.target.value = vqa.answers[1]["index"]  # another answer: a new explanation from the cached image features
    assert vqa.explanation.target.index == vqa.answers[1]["index"]
    assert vqa.explanation.metadata["image_features_cached"]


@needs_vqa
def test_slow_methods_wait_for_the_button(vqa):
    ask(vqa, "is there a blue circle ?")
    vqa.method.value = "occlusion"
    assert "press Run" in vqa.status.message.value and vqa.explanation.method != "occlusion"
    vqa.run_button.click()
    assert vqa.explanation.method == "occlusion" and vqa.explanation.signed


@needs_vqa
def test_errors_are_shown_in_the_widget_and_it_stays_usable(vqa, tmp_path):
    vqa.question.value = "   "
    vqa.run_button.click()
    assert "type a question" in vqa.status.message.value and not vqa.run_button.disabled
    vqa.picker.source.value = "(path)"
    vqa.picker.path.value = str(tmp_path / "missing.png")
    vqa.question.value = "is there a blue circle ?"
    vqa.run_button.click()
    assert "FileNotFoundError" in vqa.status.message.value
    vqa.picker.source.value = "shapes_1"
    ask(vqa, "is there a blue circle ?")
    assert vqa.answers


@needs_vqa
def test_upload_and_path_images(vqa):
    data = (ROOT / "pics" / "shapes_2.png").read_bytes()
    vqa.picker.source.value = "(upload)"
    vqa.picker.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(data), "content": data,
                                "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)},)
    ask(vqa, "what color is the circle ?")
    uploaded = [a["answer"] for a in vqa.answers]
    vqa.picker.source.value = "(path)"
    vqa.picker.path.value = str(ROOT / "pics" / "shapes_2.png")
    ask(vqa, "what color is the circle ?")
    assert [a["answer"] for a in vqa.answers] == uploaded


@needs_vqa
def test_llm_panel_without_and_with_a_backend(monkeypatch):
    from widgets import VQAExplorer

    for name in ("VLE_LLM_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    explorer = VQAExplorer(image="shapes_0")
    assert "No LLM backend is configured" in explorer.llm.setup.value and explorer.llm.ask_button.disabled
    ask(explorer, "what size is the green object ?")
    explorer.llm.configure(lambda prompt, **_: "B" if "Answer with" in prompt else "It is a big one.")
    explorer.llm.ask_button.click()
    result = explorer.llm.result
    assert explorer.llm.status.error is None, explorer.llm.status.message.value
    assert result.short_answer == explorer.answers[1]["answer"] and result.changed
    assert "changed the answer" in explorer.llm.output.value and result.caption in explorer.llm.output.value
    assert "It is a big one." in explorer.llm.output.value


@needs_vqa
def test_attention_explorer_both_directions():
    from widgets import AttentionExplorer
    from widgets.attention import DIRECTIONS

    explorer = AttentionExplorer()
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    layers, heads, text_len, image_len = explorer.maps["text_to_image"].shape
    assert explorer.maps["image_to_text"].shape == (layers, heads, image_len, text_len)
    np.testing.assert_allclose(explorer.maps["text_to_image"].sum(-1), 1.0, atol=1e-4)  # rows are distributions
    pictures = set()
    for direction in DIRECTIONS:
        explorer.direction.value = direction
        pictures.add(explorer.figure.value)
    explorer.direction.value = DIRECTIONS[0]
    explorer.layer.value, explorer.head.value = layers - 1, heads - 1
    pictures.add(explorer.figure.value)
    explorer.token.value = explorer.token.options[2][1]
    pictures.add(explorer.figure.value)
    assert len(pictures) == 5


@needs_vqa
def test_attention_explorer_picks_the_clicked_patch():
    from widgets import AttentionExplorer
    from widgets._clicks import click_event
    from widgets.attention import DIRECTIONS

    explorer = AttentionExplorer()
    explorer.run_button.click()
    grid, size = explorer.model.config.patch_grid, explorer._image.size  # shapes_0: 128 x 128, all seen by the model
    first = explorer.figure.value
    for kind in ("mousedown", "mouseup"):  # what ipyevents sends for a click on the small picture, shown 192 px wide
        explorer.patch_picker.handle(click_event(100, 20, size, (192, 192), kind))
    assert explorer.patch == (20 * grid // 128, 100 * grid // 128) and explorer.direction.value == DIRECTIONS[1]
    assert explorer.figure.value != first and explorer.status.error is None
    picked = explorer.figure.value
    for kind in ("mousedown", "mouseup"):
        explorer.patch_picker.handle(click_event(5, 120, size, (192, 192), kind))
    assert explorer.patch == (grid - 1, 0) and explorer.figure.value != picked


@needs_pretrained
def test_itm_explorer_match_pbc_and_zero_shot():
    from vle.pipelines import pipeline
    from widgets import ITMExplorer
    from widgets.itm import VIEWS

    explorer = ITMExplorer(image="shapes_0")
    assert explorer.phrase.value == scene()["caption"]["text"]
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    expected = pipeline("itm", "vle-tiny-shapes")(image=str(ROOT / "pics" / "shapes_0.png"), text=explorer.phrase.value)
    assert f"{expected['match_probability']:.3f}" in explorer.match.value
    for label in ("circle", "square", "triangle"):
        assert label in explorer.zero_shot.value
    pbc_picture = explorer.figure.value
    explorer.view.value = VIEWS[1]
    assert explorer.figure.value != pbc_picture


def test_vcr_explorer_on_tiny_models(tmp_path):
    from vle import VLEForVCRQ2A, VLEForVCRQA2R
    from vle.testing import save_tiny_model
    from widgets import VCRExplorer
    from widgets.vcr import STAGES

    for cls, name in ((VLEForVCRQ2A, "q2a"), (VLEForVCRQA2R, "qa2r")):
        save_tiny_model(cls, str(tmp_path / name), num_token_types=8)
    explorer = VCRExplorer(q2a=str(tmp_path / "q2a"), qa2r=str(tmp_path / "qa2r"))
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    for view in (explorer.choices_q2a, explorer.choices_qa2r):
        assert bytes(view.value).startswith(b"\x89PNG")
    np.testing.assert_allclose(explorer.results["q2a"]["probabilities"].sum(), 1.0, atol=1e-5)
    for stage, task in STAGES.items():  # each stage explains the model's own pick first
        explorer.stage.value = stage
        picked = int(explorer.results[task]["probabilities"].argmax())
        assert explorer.choice.value == explorer.explanation.target.choice == picked
    first, other = explorer.heatmap.value, (explorer.choice.value + 1) % 4
    explorer.choice.value = other
    assert explorer.explanation.target.choice == other and explorer.heatmap.value != first


def test_vcr_explorer_reports_a_missing_model():
    from widgets import VCRExplorer

    explorer = VCRExplorer(q2a="no-such-vcr-model")
    assert explorer._repr_mimebundle_()  # shown: the default run fails inside the widget, and it is still displayed
    assert "no-such-vcr-model" in explorer.status.message.value and not explorer.run_button.disabled
    explorer.run_button.click()
    assert "no-such-vcr-model" in explorer.status.message.value and not explorer.run_button.disabled


@needs_vqa
def test_method_comparison():
    from widgets import MethodComparison

    explorer = MethodComparison(methods=("rollout", "random"))
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    assert set(explorer.explanations) == {"rollout", "random"}
    assert bytes(explorer.figure.value).startswith(b"\x89PNG")
    explorer.methods.value = ("rollout",)
    explorer.run_button.click()
    assert "at least two methods" in explorer.status.message.value


@needs_vqa
def test_workbench_tabs():
    from widgets import workbench
    from widgets.app import TABS

    app = workbench(vcr_models=("no-such-vcr-model", "no-such-vcr-model"))
    assert len(app.children) == len(TABS) and app.titles == tuple(TABS)


@needs_vqa
def test_every_tab_shows_its_default_example_when_first_opened(monkeypatch):
    import widgets.dataset
    from widgets import workbench

    monkeypatch.setattr(widgets.dataset, "DEFAULT_SCENES", 2)  # the dataset tab's first run: a small one
    app = workbench()
    main_picture = {"VQAExplorer": "heatmap", "AttentionExplorer": "figure", "ITMExplorer": "figure",
                    "VCRExplorer": "heatmap", "MethodComparison": "figure", "DatasetExplorer": "overview",
                    "WhatIfExplorer": "after_picture"}
    pictures = [getattr(explorer, main_picture[type(explorer).__name__]) for explorer in app.children]
    assert not any(picture.value for picture in pictures)  # nothing runs while the app is built
    app._repr_mimebundle_()  # what IPython calls to display it, in a notebook and in Voilà
    for index, explorer in enumerate(app.children):
        app.selected_index = index
        assert explorer.status.error is None, explorer.status.message.value
        assert "done" in explorer.status.message.value and bytes(pictures[index].value).startswith(b"\x89PNG")
        assert not any(picture.value for picture in pictures[index + 1:])  # tabs not opened yet have not run
    first = pictures[0].value
    app.selected_index = 0
    app._repr_mimebundle_()
    assert pictures[0].value is first  # once: showing a tab again keeps what is there


@needs_vqa
def test_explain_command_writes_a_self_contained_report(tmp_path, capsys):
    from vle.cli import main

    item = next(q for q in scene()["questions"] if q["family"] == "size")
    out = tmp_path / "report.html"
    assert main(["explain", str(ROOT / "pics" / "shapes_0.png"), item["question"], "--method", "rollout",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    page = out.read_text()
    assert printed["method"] == "rollout" and printed["answers"][0]["answer"] in page
    assert "data:image/png;base64," in page and "http" not in page.split("<body", 1)[-1].replace("http-equiv", "")
    assert main(["explain", str(ROOT / "pics" / "shapes_0.png"), item["question"], "--method", "pbc",
                 "--out", str(out)]) == 2
    assert "cannot explain" in capsys.readouterr().err


def test_a_new_tab_is_one_registration():
    import ipywidgets as W

    from widgets import workbench
    from widgets.app import TABS, register_tab

    register_tab("Notes", lambda models: W.HTML(f"notes on {models.vqa}"))
    try:
        app = workbench(vqa_model="no-such-model", pretrained_model="no-such-model",
                        vcr_models=("no-such-model", "no-such-model"))
        assert app.titles[-1] == "Notes" and app.children[-1].value == "notes on no-such-model"
        assert "explorer unavailable" in app.children[0].value  # a broken explorer says why in its own tab
    finally:
        TABS.pop("Notes")
