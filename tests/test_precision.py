"""dtype "auto", bfloat16 weights and batched inference, on tiny random models built here: the choice is the one
documented and visible, every path runs in bfloat16 and agrees with float32, and batches answer as single calls."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vle import VLEForITM, VLEForPBC, VLEForVQA
from vle import precision as precision_module
from vle.cli import main
from vle.errors import InputError
from vle.explain import METHODS, Session, TopAnswer, VQAAnswer
from vle.pipelines import pipeline
from vle.precision import WIDE_FROM_HIDDEN, resolve_dtype
from vle.testing import save_tiny_model

ANSWERS = {i: f"answer{i}" for i in range(12)}
QUESTIONS = ["what color is the circle ?", "is there a red square ?", "how many objects are there ?"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    save_tiny_model(VLEForVQA, str(root / "vqa"), id2label=ANSWERS)
    save_tiny_model(VLEForITM, str(root / "itm"))
    save_tiny_model(VLEForPBC, str(root / "pbc"))
    return root


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [(rng.random((40, 48, 3)) * 255).astype(np.uint8) for _ in range(3)]


# -- the choice -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
def test_auto_picks_bfloat16_only_for_a_wide_model_on_fast_hardware(monkeypatch, fast):
    monkeypatch.setattr(precision_module, "has_fast_bfloat16", lambda device="cpu": fast)
    wide = {"hidden_size": 768, "text_config": {"hidden_size": 768}, "vision_config": {"hidden_size": 1024}}
    narrow = {"hidden_size": WIDE_FROM_HIDDEN // 2, "text_config": {"hidden_size": 768}}
    assert resolve_dtype("auto", wide) == (torch.bfloat16 if fast else torch.float32)
    assert resolve_dtype("auto", narrow) == torch.float32  # the narrowest part decides
    assert resolve_dtype("float32", wide) == torch.float32 and resolve_dtype("bfloat16", narrow) == torch.bfloat16
    with pytest.raises(InputError, match="dtype must be one of auto, float32, bfloat16"):
        resolve_dtype("half", wide)


def test_weights_load_in_the_chosen_type_and_the_choice_is_visible(folders):
    assert VLEForVQA.from_pretrained(str(folders / "vqa")).dtype == torch.float32  # the library default stays
    model = VLEForVQA.from_pretrained(str(folders / "vqa"), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert pipeline("vqa", str(folders / "vqa")).dtype_choice == "float32 (auto)"  # 32 wide: float32 everywhere
    forced = pipeline("vqa", str(folders / "vqa"), dtype="bfloat16")
    assert forced.dtype_choice == "bfloat16" and forced.model.dtype == torch.bfloat16
    assert Session.from_pretrained(str(folders / "vqa"), dtype="bfloat16").dtype_choice == "bfloat16"
    loaded = VLEForVQA.from_pretrained(str(folders / "vqa"))
    assert pipeline("vqa", loaded, forced.processor, dtype="bfloat16").model.dtype == torch.bfloat16


def test_the_command_line_takes_dtype_and_says_what_ran(folders, images, capsys, tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(images[0]).save(path)
    assert main(["vqa", str(path), "what color ?", "--model", str(folders / "vqa"), "--dtype", "bfloat16",
                 "--json", "--top-k", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dtype"] == "bfloat16" and len(printed["result"]) == 2
    assert main(["vqa", str(path), "what color ?", "--model", str(folders / "vqa"), "--top-k", "2"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)  # without --json the output is as before
    with pytest.raises(SystemExit) as refused:
        main(["vqa", str(path), "what color ?", "--dtype", "half"])
    assert refused.value.code == 2


# -- bfloat16 agrees with float32 -----------------------------------------------------------------------------------

def test_bfloat16_logits_follow_float32(folders, images):
    f32 = pipeline("vqa", str(folders / "vqa"), dtype="float32")
    bf16 = pipeline("vqa", str(folders / "vqa"), dtype="bfloat16")
    for image in images:
        for question in QUESTIONS:
            a = f32.preprocess({"image": image, "question": question})
            logits32 = f32._forward(dict(a))["logits"]
            logits16 = bf16._forward(dict(a))["logits"]
            relative = float((logits16 - logits32).norm() / logits32.norm())
            assert relative < 0.05, relative


def test_every_method_runs_in_bfloat16_and_ranks_patches_as_float32(folders, images):
    f32 = Session.from_pretrained(str(folders / "vqa"), dtype="float32")
    bf16 = Session.from_pretrained(str(folders / "vqa"), dtype="bfloat16")
    target = VQAAnswer(3)
    for name, cls in METHODS.items():
        if not cls.supports(target) or name == "random":
            continue
        a = f32.explain(images[0], QUESTIONS[0], target=target, method=name)
        b = bf16.explain(images[0], QUESTIONS[0], target=target, method=name)
        assert b.patch_scores.dtype == np.float64 and np.isfinite(b.patch_scores).all(), name
        # a random 32-wide model's attention maps are nearly flat, so their ranks are mostly ties broken by rounding:
        # the maps must agree in value, and in rank where they are not flat
        relative = np.linalg.norm(a.patch_scores - b.patch_scores) / np.linalg.norm(a.patch_scores)
        agreement = spearmanr(a.patch_scores.ravel(), b.patch_scores.ravel()).statistic
        assert relative < 0.1 or agreement > 0.8, (name, relative, agreement)


# -- batches answer as single calls ---------------------------------------------------------------------------------

@pytest.mark.parametrize("task, folder, key", [("vqa", "vqa", "question"), ("itm", "itm", "text"),
                                               ("pbc", "pbc", "text")])
def test_a_batch_answers_as_single_calls(folders, images, task, folder, key):
    pipe = pipeline(task, str(folders / folder))
    # repeated images (the tower runs once for them) and texts of different lengths (padded to the longest)
    examples = [{"image": images[i % 2], key: QUESTIONS[i % 3]} for i in range(5)]
    batched = pipe(examples, batch_size=4)
    single = [pipe(example) for example in examples]
    for got, want in zip(batched, single):
        if task == "vqa":
            assert [a["answer"] for a in got] == [a["answer"] for a in want]
            np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want], atol=1e-5)
        elif task == "itm":
            assert got["match_probability"] == pytest.approx(want["match_probability"], abs=1e-5)
        else:
            np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


def test_the_session_asks_in_batches_and_answers_and_explains_in_one_forward(folders, images):
    session = Session.from_pretrained(str(folders / "vqa"))
    many = session.ask_many([images[0], images[1], images[0]], QUESTIONS, top_k=3, batch_size=2)
    for image, question, answers in zip([images[0], images[1], images[0]], QUESTIONS, many):
        _, single = session.ask(image, question, top_k=3)
        assert [a["index"] for a in answers] == [a["index"] for a in single]
    inputs, answers, explanation = session.ask_and_explain(images[1], QUESTIONS[1], top_k=3)
    assert explanation.target == VQAAnswer(answers[0]["index"], answers[0]["answer"])
    again = session.explain(inputs, target=explanation.target)
    np.testing.assert_allclose(explanation.patch_scores, again.patch_scores, atol=1e-6)
    with pytest.raises(InputError, match="one image per question"):
        session.ask_many([images[0]], QUESTIONS)
    assert TopAnswer().label == "the top answer"
