"""Captum's methods on ``EmbeddingForward`` (saliency, input × gradient, GradientShap, integrated gradients) and
KernelSHAP, on tiny random models of each head and on the shipped VCR model.

Invariants, not pictures: fed its own embeddings the forward is the model, and its hooks are gone afterwards (also
after an exception); integrated gradients is complete, box tokens are inputs of their own, a contrast is the
difference of its two targets for the methods linear in the score, the weights' ``requires_grad`` flags come back,
the sampling methods are seeded without touching the caller's generators, and KernelSHAP is efficient.
"""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG

from vle import VLEConfig, VLEForPBC, VLEForPretraining, VLEForVCRQ2A, VLEForVQA
from vle.errors import InputError
from vle.explain import (ExplainInputs, ITMMatch, PBCPhrase, Session, TargetForward, VCRChoice, VCRContrast,
                         VQAAnswer, VQAContrast, explain, hook_count)
from vle.explain.embedding_forward import EmbeddingForward
from vle.explain.inputs import background_fill, forward
from vle.shapes import make_scene, make_vcr
from vle.vcr import build_vcr_inputs

ANSWERS = {0: "red", 1: "blue", 2: "circle"}
GRADIENT_METHODS = ("saliency", "input_x_gradient", "gradient_shap", "integrated_gradients")
NEW_METHODS = GRADIENT_METHODS + ("kernel_shap",)
FAST = {"integrated_gradients": {"n_steps": 8}, "gradient_shap": {"n_samples": 4},
        "kernel_shap": {"n_samples": 48, "patch_window": 2}}
SHIPPED_SEED = 1_000_002  # a held-out scene whose four choices each tag a different object (one box each)


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vqa(processor, image):
    torch.manual_seed(0)
    model = VLEForVQA(VLEConfig.tiny(id2label=ANSWERS)).eval()
    return model, ExplainInputs.build(processor, image, "what color is the circle ?")


@pytest.fixture(scope="module")
def heads(processor, image, vqa):
    """(model, inputs, target) of every head on tiny random models; the VCR item's third choice has one box of two."""
    torch.manual_seed(1)
    phrase = ExplainInputs.build(processor, image, "the red circle")
    ann = {"objects": ["person", "car"], "question": ["is", [0], "left", "of", [1], "?"],
           "answer_choices": [["yes"], ["no"], ["maybe"], [[1]]], "answer_label": 0}
    meta = {"boxes": [[0, 0, 10, 10, 1.0], [20, 20, 31, 31, 1.0]], "width": 32, "height": 32}
    vcr = build_vcr_inputs(processor, ann, image, meta, patch_size=8, max_length=16)
    return {"vqa": (*vqa, VQAAnswer(2)),
            "itm": (VLEForPretraining(VLEConfig.tiny()).eval(), phrase, ITMMatch()),
            "pbc": (VLEForPBC(VLEConfig.tiny()).eval(), phrase, PBCPhrase(phrase="the red circle")),
            "vcr": (VLEForVCRQ2A(VLEConfig.tiny(num_token_types=8)).eval(),
                    ExplainInputs.from_batch(dict(vcr), processor), VCRChoice(1))}


@pytest.fixture(scope="module")
def shipped():
    """The shipped Q->A model and a held-out shapes item: (model, inputs, right choice)."""
    session = Session.from_pretrained("vle-tiny-shapes-vcr-q2a", head="vcr_q2a")
    scene = make_scene(SHIPPED_SEED)
    annotation, metadata = make_vcr(scene, np.random.default_rng(0), "scene.png")
    inputs = session.prepare_vcr(annotation, scene.image, metadata)
    return session.model, inputs, annotation["answer_label"]


def plain_score(model, inputs, target) -> torch.Tensor:
    with torch.no_grad():
        return target.score(forward(model, inputs, target, use_image_features=False).logits)


# -- the forward ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["vqa", "itm", "pbc", "vcr"])
def test_fed_its_own_embeddings_the_forward_is_the_model(head, heads):
    model, inputs, target = heads[head]
    before = hook_count(model)
    f = EmbeddingForward(model, inputs, target)
    values = f.inputs()
    assert len(values) == (3 if head == "vcr" else 2) and [len(v) for v in values] == [1] * len(values)
    with torch.no_grad():
        single = f(*values)
        batch = f(*(torch.cat([v] * 3) for v in values))  # Captum's batches of steps: three copies, three scores
    torch.testing.assert_close(single, plain_score(model, inputs, target), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch, single.expand(3), atol=1e-5, rtol=1e-5)
    assert [v.shape for v in f.baselines()] == [v.shape for v in values]
    assert hook_count(model) == before


@pytest.mark.parametrize("head", ["vqa", "vcr"])
def test_the_forward_removes_its_hooks_after_an_exception(head, heads):
    model, inputs, target = heads[head]
    before = hook_count(model)
    f = EmbeddingForward(model, inputs, target)
    tokens, patches, *boxes = f.inputs()
    with pytest.raises(RuntimeError):  # the token hook cannot reshape one channel short
        f(tokens[..., :-1], patches, *boxes)
    assert hook_count(model) == before

    def boom(*_):
        raise RuntimeError("boom")
    mine = model.base_vle.cross_modal_image_layers[-1].register_forward_hook(boom)  # after every hook of f has run
    try:
        with pytest.raises(RuntimeError, match="boom"):
            f(tokens, patches, *boxes)
        assert hook_count(model) == before + 1
    finally:
        mine.remove()
    assert hook_count(model) == before


# -- VCR --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("contrast", [False, True])
def test_captum_integrated_gradients_on_the_forward_is_complete_for_vcr(contrast, shipped):
    model, inputs, label = shipped
    target = VCRContrast(label, (label + 1) % 4) if contrast else VCRChoice(label)
    f = EmbeddingForward(model, inputs, target)
    attributions, delta = CaptumIG(f).attribute(f.inputs(), baselines=f.baselines(), n_steps=32,
                                                internal_batch_size=5, return_convergence_delta=True)
    assert [a.shape for a in attributions] == [v.shape for v in f.inputs()]
    with torch.no_grad():
        change = float(f(*f.inputs()) - f(*f.baselines()))
    total = float(sum(a.sum() for a in attributions))
    assert abs(total - float(delta) - change) <= 1e-4 * max(1.0, abs(change))  # Captum: delta = total - change
    assert abs(float(delta)) <= 0.05 * abs(change), (float(delta), change)  # 32 Gauss-Legendre steps suffice


def test_integrated_gradients_explains_a_vcr_choice_with_its_boxes(shipped):
    model, inputs, label = shipped
    e = explain(model, inputs, VCRChoice(label), "integrated_gradients")
    choices, text_len = inputs.model_inputs["input_ids"].shape[1:]
    every = e.metadata["choice_token_scores"]
    assert e.box_scores.shape == (inputs.n_boxes,) == (1,) and np.abs(e.box_scores).min() > 1e-3
    assert every.shape == (choices, text_len)
    mask = inputs.model_inputs["attention_mask"][0, label].bool().cpu().numpy()
    np.testing.assert_allclose(every[label][mask], e.token_scores, rtol=1e-6)
    assert not np.delete(every, label, axis=0).any()  # a choice's score reads no other choice's text
    f = EmbeddingForward(model, inputs, VCRChoice(label))
    with torch.no_grad():
        change = float(f(*f.inputs()) - f(*f.baselines()))
    total = e.patch_scores.sum() + e.box_scores.sum() + e.token_scores.sum()
    assert abs(total - change) <= e.metadata["convergence_delta"] + 1e-4


def test_box_tokens_are_inputs_of_their_own_choice(shipped):
    model, inputs, label = shipped
    f = EmbeddingForward(model, inputs, VCRChoice(label))
    tokens, patches, boxes = f.inputs()
    blank = f.baselines()[2]
    assert not torch.equal(blank, boxes)
    scores = [EmbeddingForward(model, inputs, VCRChoice(c)) for c in range(boxes.shape[1])]  # each fuses one choice
    with torch.no_grad():
        before = torch.stack([g(tokens, patches, boxes)[0] for g in scores])
        for choice in range(boxes.shape[1]):
            changed = boxes.clone()
            changed[:, choice] = blank[:, choice]  # only this choice's box tokens: the blank image's
            moved = (torch.stack([g(tokens, patches, changed)[0] for g in scores]) - before).abs()
            assert moved[choice] > 1e-3, (choice, moved)
            assert float(np.delete(moved.numpy(), choice).max()) == 0.0


def test_a_vcr_target_fuses_its_own_choices_only(shipped):
    """Only the target's choices are fused, and their scores equal the model's over every choice."""
    model, inputs, label = shipped
    with torch.no_grad():
        logits = model(**inputs.model_inputs).logits[0]
        for target in (VCRChoice(label), VCRContrast(label, (label + 1) % 4), VCRContrast((label + 1) % 4, label)):
            f = EmbeddingForward(model, inputs, target)
            assert f.logits(*f.inputs()).shape == (1, len(target.sequences))
            torch.testing.assert_close(f(*f.inputs())[0], target.score(logits[None])[0], rtol=1e-5, atol=1e-5)


# -- every new method -------------------------------------------------------------------------------------------


def contrast_cases(heads, shipped):
    vqa, vqa_inputs, _ = heads["vqa"]
    model, inputs, label = shipped
    other = (label + 1) % 4
    return {"vqa": (vqa, vqa_inputs, VQAContrast(0, 1), VQAAnswer(0), VQAAnswer(1)),
            "vcr": (model, inputs, VCRContrast(label, other), VCRChoice(label), VCRChoice(other))}


def scores_of(e, head, boxes=True):
    """Every score of an explanation: patches and boxes, and every choice's tokens for VCR (whose token scores are
    the explained choice's only). ``boxes=False``: zeros for the boxes (those of a VCR choice other than the
    contrast's first, which the first choice's box tokens do not reach)."""
    text = e.metadata["choice_token_scores"] if head == "vcr" else e.token_scores
    return np.concatenate([e.patch_scores.ravel(), e.box_scores if boxes else 0 * e.box_scores, np.ravel(text)])


@pytest.mark.filterwarnings("ignore:integrated_gradients. convergence delta")  # 8 steps: complete or not, linear
@pytest.mark.parametrize("head", ["vqa", "vcr"])
@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_contrast_is_the_difference_of_its_targets(method, head, heads, shipped):
    """For the methods linear in the score (input × gradient, integrated gradients with its fixed path, GradientShap
    with its seeded samples, KernelSHAP's least-squares fit with its seeded coalitions) a contrast's scores are the
    difference of the two targets' scores; saliency's absolute gradients obey the triangle inequality instead.
    KernelSHAP on a VCR item removes the explained choice's words, so its two choices have different features and
    only the contrast's shape is checked."""
    model, inputs, contrast, first, second = contrast_cases(heads, shipped)[head]
    options = FAST.get(method, {})
    e = explain(model, inputs, contrast, method, **options)
    assert e.patch_scores.shape == (model.config.patch_grid,) * 2 and len(e.token_scores) == len(e.tokens)
    assert np.isfinite(e.patch_scores).all() and np.isfinite(e.token_scores).all()
    if method == "kernel_shap" and head == "vcr":
        return
    a, b = (explain(model, inputs, target, method, **options) for target in (first, second))
    if method != "kernel_shap":
        assert e.box_scores.shape == (inputs.for_target(contrast).n_boxes,)
    contrast_scores, a_scores, b_scores = scores_of(e, head), scores_of(a, head), scores_of(b, head, head != "vcr")
    scale = max(np.abs(a_scores).max(), np.abs(b_scores).max())
    assert scale > 0
    if method == "saliency":
        assert (contrast_scores >= 0).all() and (contrast_scores <= a_scores + b_scores + 1e-6 * scale).all()
    else:
        np.testing.assert_allclose(contrast_scores, a_scores - b_scores, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_restore_requires_grad_and_leave_the_weights_without_gradients(method, vqa):
    torch.manual_seed(0)
    model = VLEForVQA(VLEConfig.tiny(id2label=ANSWERS)).eval()
    inputs = vqa[1]
    model.base_vle.text_model.requires_grad_(False)  # a caller's own mix of flags
    flags = [p.requires_grad for p in model.parameters()]
    hooks = hook_count(model)

    class Failing(VQAAnswer):
        def score(self, logits):
            raise RuntimeError("the score fails")

    explain(model, inputs, VQAAnswer(1), method, **FAST.get(method, {}))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError, match="the score fails"):
        explain(model, inputs, Failing(1), method, **FAST.get(method, {}))
    assert [p.requires_grad for p in model.parameters()] == flags and hook_count(model) == hooks


@pytest.mark.parametrize("method", ["gradient_shap", "kernel_shap"])
def test_sampling_methods_are_seeded_and_leave_the_callers_generators_alone(method, vqa):
    model, inputs = vqa
    np.random.seed(123)
    torch.manual_seed(123)
    numpy_state, torch_state = np.random.get_state(), torch.get_rng_state()
    first, second = (explain(model, inputs, VQAAnswer(1), method, **FAST[method]) for _ in range(2))
    np.testing.assert_array_equal(first.patch_scores, second.patch_scores)
    np.testing.assert_array_equal(first.token_scores, second.token_scores)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
    other = explain(model, inputs, VQAAnswer(1), method, **FAST[method], seed=1)
    assert not np.array_equal(other.patch_scores, first.patch_scores)  # the seed is what fixes the samples


@pytest.mark.parametrize("method, options, fragment", [
    ("gradient_shap", {"stdevs": -1}, "stdevs must be a finite number >= 0, got -1"),
    ("gradient_shap", {"stdevs": float("nan")}, "stdevs must be a finite number >= 0, got nan"),
    ("gradient_shap", {"n_samples": 0}, "option n_samples must be at least 1, got 0"),
    ("kernel_shap", {"n_samples": 0}, "option n_samples must be at least 1, got 0"),
])
def test_bad_sampling_options_name_the_option(method, options, fragment, vqa):
    model, inputs = vqa
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(InputError, match=fragment):
        explain(model, inputs, VQAAnswer(0), method, **options)
    assert [p.requires_grad for p in model.parameters()] == flags


def test_kernel_shap_is_efficient_and_leaves_special_tokens_out(vqa):
    """One window over the whole image, six words and the special tokens (the tiny vocabulary reads "?" as "▁" and
    [UNK], a special token): 2**8 coalitions, so the scores add up to f(input) - f(every feature absent); special
    tokens score zero."""
    model, inputs = vqa
    target = VQAAnswer(1)
    e = explain(model, inputs, target, "kernel_shap", n_samples=400, patch_window=4)
    special = np.array([token in inputs.special_tokens for token in inputs.tokens])
    assert e.metadata["words"] == (~special).sum() == 6
    assert not e.token_scores[special].any() and e.token_scores[~special].all()
    assert e.metadata["windows"] == 1 and len(np.unique(e.patch_scores)) == 1
    f = TargetForward(model, inputs, target)
    with torch.no_grad():
        absent = f(pixel_values=background_fill(inputs.model_inputs["pixel_values"]),
                   text_keep=torch.as_tensor(special, dtype=torch.float32)[None])
        change = float(f() - absent)
    total = e.patch_scores.sum() + e.token_scores.sum()
    assert abs(total - change) <= 0.02 * abs(change), (total, change)


def test_edge_windows_share_their_value_among_the_patches_they_hold(vqa):
    """3 × 3 windows on a 4 × 4 grid: the edge windows hold 3, 3 and 1 patches; each patch gets its share, so the
    patch scores add up to the windows' occlusion drops."""
    model, inputs = vqa
    e = explain(model, inputs, VQAAnswer(1), "occlusion", patch_window=3)
    corner, edge = e.patch_scores[3, 3], e.patch_scores[0, 3]
    assert e.patch_scores[:3, 3] == pytest.approx([edge] * 3) and corner != pytest.approx(edge)
    f, pixels = TargetForward(model, inputs, VQAAnswer(1)), inputs.model_inputs["pixel_values"]
    patch = model.config.patch_size
    corner_hidden, edge_hidden = pixels.clone(), pixels.clone()
    corner_hidden[..., 3 * patch:, 3 * patch:] = background_fill(pixels)[..., 3 * patch:, 3 * patch:]
    edge_hidden[..., :3 * patch, 3 * patch:] = background_fill(pixels)[..., :3 * patch, 3 * patch:]
    with torch.no_grad():
        drops = [float(f() - f(pixel_values=hidden)) for hidden in (corner_hidden, edge_hidden)]
    assert e.metadata["windows"] == 4 and [corner, 3 * edge] == pytest.approx(drops, rel=1e-4, abs=1e-6)


def test_kernel_shap_on_a_vcr_item_scores_no_special_token(shipped):
    model, inputs, label = shipped
    e = explain(model, inputs, VCRChoice(label), "kernel_shap", n_samples=32, patch_window=4)
    special = np.array([token in inputs.special_tokens for token in e.tokens])
    assert special.any() and not e.token_scores[special].any() and np.abs(e.token_scores[~special]).max() > 0
    assert not e.box_scores.any()  # box tokens follow their patches here: no score of their own


def test_vcr_choices_with_different_box_counts():
    """Choices that tag different numbers of objects: every method scores the explained choice's own boxes, for a
    choice and for contrasts either way (the model pads the fused choices' box rows to the most of them)."""
    session = Session.from_pretrained("vle-tiny-shapes-vcr-q2a", head="vcr_q2a")
    scene = make_scene(1_000_004)
    annotation, metadata = make_vcr(scene, np.random.default_rng(1_000_004), "scene.png")
    inputs = session.prepare_vcr(annotation, scene.image, metadata)
    counts = [len(boxes) for boxes in inputs.model_inputs["patch_ids"][0]]
    few, most = int(np.argmin(counts)), int(np.argmax(counts))
    assert counts[few] < counts[most]
    for method, options in (("raw_attention", {}), ("gradcam", {}), ("attnlrp", {}), ("saliency", {}),
                            ("integrated_gradients", {"n_steps": 4})):
        for target in (VCRChoice(few), VCRContrast(few, most), VCRContrast(most, few)):
            e = explain(session.model, inputs, target, method, **options)
            assert e.box_scores.shape == (counts[target.sequences[0]],), (method, target)
