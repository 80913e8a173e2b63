"""The explanation engine on a GPU: a model moved to CUDA explains what it explains on the CPU.

Skipped where no CUDA device is present (CI has none); on a GPU machine: ``pytest tests/test_cuda.py``. TF32 is
switched off so that CUDA and the CPU compute the same float32 products.
"""

import copy

import numpy as np
import pytest
import torch

from vle import VLEConfig, VLEForVQA
from vle.explain import METHODS, ExplainInputs, Session, VQAAnswer, explain
from vle.shapes.faithfulness import examples, faithfulness
from vle.explain.targets import vqa_answer
from vle.processing_vle import VLEProcessor
from vle.testing import tiny_processor

from .test_explain import ANSWERS, QUESTION, head_cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True, scope="module")
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_same_explanation(cpu, gpu, what):
    for field in ("patch_scores", "box_scores", "token_scores", "word_scores"):
        a, b = getattr(cpu, field), getattr(gpu, field)
        assert isinstance(b, np.ndarray) and a.shape == b.shape, (what, field)
        atol = max(1e-3 * float(np.abs(a).max(initial=0.0)), 1e-6)  # float noise where every score is zero
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=atol, err_msg=f"{what}: {field}")
    assert cpu.tokens == gpu.tokens and cpu.words == gpu.words, what
    assert gpu.metadata["target_score"] == pytest.approx(cpu.metadata["target_score"], rel=1e-3, abs=1e-4), what


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_every_head_gives_the_cpu_scores(method):
    processor = tiny_processor()
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    torch.manual_seed(0)
    vqa = VLEForVQA(VLEConfig.tiny(id2label=ANSWERS)).eval()
    cases = {"vqa": (vqa, ExplainInputs.build(processor, image, QUESTION), VQAAnswer(2, "circle")),
             **head_cases(processor, image)}
    for head, (model, inputs, target) in cases.items():
        if not METHODS[method].supports(target):
            continue
        cpu = explain(model, inputs, target, method)
        gpu = explain(copy.deepcopy(model).cuda(), inputs, target, method)  # CPU inputs: explain moves them
        assert_same_explanation(cpu, gpu, f"{method} on {head}")


@pytest.fixture(scope="module")
def shipped():
    model = VLEForVQA.from_pretrained("vle-tiny-shapes-vqa").eval()
    return model, VLEProcessor.from_pretrained("vle-tiny-shapes-vqa")


def test_the_explainer_on_the_gpu_answers_and_explains_as_on_the_cpu(shipped):
    model, processor = shipped
    _, example, inputs = next(examples(1_000_003, 1, processor))
    cpu_explainer, gpu_explainer = Session(model, processor), Session(copy.deepcopy(model).cuda(), processor)
    target = cpu_explainer.default_target(inputs)  # the top answer
    assert gpu_explainer.default_target(inputs) == target  # CPU inputs: the session moves them
    for name in ("coattention_relevance", "rollout", "integrated_gradients"):
        cpu = explain(cpu_explainer.model, inputs, target, name, cache=cpu_explainer.cache)
        gpu = explain(gpu_explainer.model, inputs, target, name, cache=gpu_explainer.cache)
        assert_same_explanation(cpu, gpu, f"{name} on {example.question}")


def test_faithfulness_on_the_gpu_matches_the_cpu(shipped):
    model, processor = shipped
    methods = ("random", "rollout", "coattention_relevance", "occlusion")
    cpu = faithfulness(n=3, methods=methods, model=model, processor=processor, progress=False)
    gpu = faithfulness(n=3, methods=methods, model=copy.deepcopy(model).cuda(), processor=processor, progress=False)
    for name in methods:
        for key in ("pointing_game", "relevance_mass", "pos_auc_image", "neg_auc_image", "pos_auc_text"):
            assert gpu[name][key] == pytest.approx(cpu[name][key], abs=1e-3), (name, key)


def test_a_bfloat16_model_explains_close_to_float32(shipped):
    """Half-precision weights (as large checkpoints are often run): the propagation itself runs in float32."""
    model, processor = shipped
    gpu32, gpu16 = copy.deepcopy(model).cuda(), copy.deepcopy(model).cuda().to(torch.bfloat16)
    for _, example, inputs in examples(1_000_003, 8, processor):
        with torch.no_grad():
            target = vqa_answer(gpu32, int(gpu32(**inputs.to("cuda").model_inputs).logits.argmax()))
        for name in ("coattention_relevance", "rollout"):
            full, half = explain(gpu32, inputs, target, name), explain(gpu16, inputs, target, name)
            assert np.isfinite(half.patch_scores).all(), name
            correlation = np.corrcoef(full.patch_scores.ravel(), half.patch_scores.ravel())[0, 1]
            assert correlation > 0.9, (name, example.question, correlation)
