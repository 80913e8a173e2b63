"""Pipelines and the console command on tiny saved models."""

import json

import numpy as np
import pytest
from PIL import Image

from vle import VLEForITM, VLEForPBC, VLEForVCRQ2A, VLEForVQA
from vle.cli import main
from vle.pipelines import pipeline
from vle.testing import save_tiny_model

from .test_vcr import ANNOTATION, META


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_model(VLEForVQA, root / "vqa", id2label={0: "red", 1: "blue", 2: "circle"})
    save_tiny_model(VLEForITM, root / "itm")
    save_tiny_model(VLEForPBC, root / "pbc")
    save_tiny_model(VLEForVCRQ2A, root / "vcr", num_token_types=8)
    image = root / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(image)
    return root


def test_vqa_top_k_single_and_batched(folders):
    pipe = pipeline("vqa", str(folders / "vqa"))
    image = str(folders / "scene.png")
    answers = pipe(image=image, question="what color is the circle?", top_k=3)
    assert [a["answer"] for a in answers] and abs(sum(a["score"] for a in answers) - 1) < 1e-5
    assert answers == sorted(answers, key=lambda a: -a["score"])
    batched = pipe([{"image": image, "question": "what color is the circle?"},
                    {"image": Image.open(image), "question": "a red"}], top_k=3)
    assert [a["answer"] for a in batched[0]] == [a["answer"] for a in answers]
    assert [a["score"] for a in batched[0]] == pytest.approx([a["score"] for a in answers], abs=1e-6)


def test_itm_pbc_classify(folders):
    image = str(folders / "scene.png")
    itm = pipeline("itm", str(folders / "itm"))(image=image, text="a red circle")
    assert 0 <= itm["match_probability"] <= 1 and isinstance(itm["match"], bool)
    pbc = pipeline("pbc", str(folders / "pbc"))(image=image, text="the red circle")
    assert pbc["scores"].shape == (4, 4) and abs(pbc["scores"].sum() - 1) < 1e-5
    assert pbc["image"].size == (56, 40)
    ranked = pipeline("classify", str(folders / "itm"))(image=image, candidate_labels=["circle", "square", "cat"])
    assert {r["label"] for r in ranked} == {"circle", "square", "cat"}
    assert abs(sum(r["score"] for r in ranked) - 1) < 1e-5


def test_vcr_pipeline(folders):
    result = pipeline("vcr_q2a", str(folders / "vcr"))(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                                        metadata=META)
    assert len(result["probabilities"]) == 4 and 0 <= result["choice"] < 4


def test_pipeline_input_errors(folders):
    pipe = pipeline("vqa", str(folders / "vqa"))
    with pytest.raises(ValueError, match="missing: question"):
        pipe(image=str(folders / "scene.png"))
    with pytest.raises(ValueError, match="question is empty"):
        pipe(image=str(folders / "scene.png"), question="")
    with pytest.raises(ValueError, match="unknown task"):
        pipeline("captioning", str(folders / "vqa"))


def test_cli_commands(folders, capsys, tmp_path):
    image = str(folders / "scene.png")
    assert main(["vqa", image, "what color is it?", "--model", str(folders / "vqa"), "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["itm", image, "a red circle", "--model", str(folders / "itm")]) == 0
    assert "match_probability" in json.loads(capsys.readouterr().out)
    out = tmp_path / "overlay.png"
    assert main(["pbc", image, "the red circle", "--model", str(folders / "pbc"), "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["classify", image, "circle", "square", "--model", str(folders / "itm")]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    (tmp_path / "ann.json").write_text(json.dumps(ANNOTATION))
    (tmp_path / "meta.json").write_text(json.dumps({**META, "width": 56, "height": 40}))  # the scene is 56x40
    assert main(["vcr", str(tmp_path / "ann.json"), "--image", image, "--metadata", str(tmp_path / "meta.json"),
                 "--model", str(folders / "vcr")]) == 0
    assert "choice" in json.loads(capsys.readouterr().out)


def test_cli_errors_are_clear(folders, capsys):
    assert main(["vqa", str(folders / "nope.png"), "q", "--model", str(folders / "vqa")]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert main(["vqa", str(folders / "scene.png"), "q", "--model", "not-a-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
