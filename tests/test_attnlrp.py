"""AttnLRP: every rule conserves where it should, the softmax's share is accounted for, no operation of any head
runs without a rule, the model is left as it was, and the relevance is faithful to first order."""

import numpy as np
import pytest
import torch

from vle import VLEConfig, VLEForITM, VLEForVQA
from vle.explain import ExplainInputs, ITMMatch, VQAAnswer, VQAContrast, explain
from vle.explain.embedding_forward import EmbeddingForward
from vle.explain.lrp import attnlrp_rules
from vle.testing import tiny_processor

ADDITIVE = ("bias", "position_embedding", "class_embedding", "token_type_embeddings", "rel_embeddings")


def _model(cls=VLEForVQA, constants=True, **kwargs):
    torch.manual_seed(0)
    model = cls(VLEConfig.tiny(**kwargs)).eval()
    if not constants:  # no additive constant absorbs relevance
        with torch.no_grad():
            for name, p in model.named_parameters():
                if any(key in name for key in ADDITIVE):
                    p.zero_()
    return model


@pytest.fixture(scope="module")
def example():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return ExplainInputs.build(tiny_processor(), image, "what color is the big circle ?")


@pytest.mark.parametrize("rule", ["cp", "attnlrp"])
def test_relevance_is_conserved_without_additive_constants(rule, example):
    """CP-LRP conserves exactly; AttnLRP's softmax rule absorbs a share of its own, which the ledger accounts for."""
    model = _model(constants=False, id2label={0: "red", 1: "blue"})
    for target in (VQAAnswer(0), VQAContrast(1, 0)):
        m = explain(model, example, target, "attnlrp", softmax_rule=rule).metadata
        absorbed = m["softmax_absorbed"] if rule == "attnlrp" else 0.0
        assert m["relevance_sum"] + absorbed == pytest.approx(m["score"], rel=1e-4, abs=1e-6), target
        assert abs(m["score"]) > 1e-3


def test_every_operation_has_a_rule(example):
    for cls, target in ((VLEForVQA, VQAAnswer(0)), (VLEForITM, ITMMatch())):
        model = _model(cls, id2label={0: "red", 1: "blue"})
        assert explain(model, example, target, "attnlrp").metadata["unhandled"] == []


def test_the_model_is_left_as_it_was(example):
    model = _model(id2label={0: "red", 1: "blue"})
    flags = [p.requires_grad for p in model.parameters()]
    forwards = {m: m.forward for m in model.modules()}
    with torch.no_grad():
        before = model(**example.model_inputs).logits
    with pytest.raises(RuntimeError, match="boom"), attnlrp_rules(model):
        raise RuntimeError("boom")
    explain(model, example, VQAAnswer(0), "attnlrp")
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all("forward" not in m.__dict__ for m in model.modules()) and forwards.keys() == dict(
        (m, None) for m in model.modules()).keys()
    with torch.no_grad():
        torch.testing.assert_close(model(**example.model_inputs).logits, before)


def test_rules_change_only_the_backward(example):
    model = _model(id2label={0: "red", 1: "blue"})
    forward = EmbeddingForward(model, example, VQAAnswer(0))
    plain = forward(*forward.inputs())
    with attnlrp_rules(model):
        ruled = forward(*(v.clone().requires_grad_() for v in forward.inputs()))
    torch.testing.assert_close(ruled.detach(), plain, rtol=1e-5, atol=1e-6)


def test_bad_softmax_rule(example):
    from vle.errors import InputError

    with pytest.raises(InputError, match="softmax_rule must be one of attnlrp, cp"):
        explain(_model(id2label={0: "red", 1: "blue"}), example, VQAAnswer(0), "attnlrp", softmax_rule="x")


def test_shipped_models_relevance(example):
    """On the shipped VQA model: no operation without a rule, and removing the most relevant patches costs the answer
    more than removing the least relevant ones."""
    from vle.explain import Session
    from vle.explain.faithfulness import auc, perturbation_curve
    from vle.shapes import make_scene

    session = Session.from_pretrained("vle-tiny-shapes-vqa", head="vqa")
    pos, neg = [], []
    for seed in range(1_000_003, 1_000_011):
        inputs = session.with_features(session.prepare(make_scene(seed).image, "what color is the circle ?"))
        e = session.explain(inputs, method="attnlrp")
        assert e.metadata["unhandled"] == [] and np.isfinite(e.patch_scores).all()
        for order, into in (("pos", pos), ("neg", neg)):
            into.append(auc(perturbation_curve(session.model, inputs, e.target, e.patch_scores, "image", order)))
    assert np.mean(pos) < np.mean(neg) - 0.1


def test_vcr_choices_and_boxes():
    from vle.explain import Session, VCRContrast
    from vle.shapes import make_scene, make_vcr

    session = Session.from_pretrained("vle-tiny-shapes-vcr-q2a", head="vcr_q2a")
    scene = make_scene(1_000_003)
    annotation, metadata = make_vcr(scene, np.random.default_rng(0), "scene.png")
    e = explain(session.model, session.prepare_vcr(annotation, scene.image, metadata), VCRContrast(1, 0), "attnlrp")
    m = e.metadata
    assert m["unhandled"] == [] and m["choice_token_scores"].shape[0] == 4 and len(e.box_scores) > 0
    assert np.abs(m["choice_token_scores"][[0, 1]]).sum(-1).min() > 0  # both choices of the contrast carry relevance
