"""Explanation engine on tiny random models: recorder, targets, result type, every method on every head it supports.

Invariants, not pictures: attention rows sum to one, hooks are gone afterwards (also after an exception), IG is
complete up to its reported delta, explanations are deterministic, and unsupported pairs fail with a clear message.
"""

import gc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG

from vle import VLEConfig, VLEForPBC, VLEForPretraining, VLEForVCRQ2A, VLEForVQA
from vle.explain import (METHODS, ExplainInputs, Session, Explanation, ITMMatch, PBCPhrase, Recorder, TargetForward,
                         VCRChoice, VCRContrast, VQAAnswer, VQAContrast, explain, hook_count, merge_words)
from vle.explain.methods.coattention import head_weighted, rows_normalized
from vle.explain.methods.propagation import fusion_maps, propagate, read_out
from vle.testing import tiny_processor
from vle.vcr import build_vcr_inputs

ANSWERS = {0: "red", 1: "blue", 2: "circle"}
QUESTION = "what color is the circle ?"


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def vqa():
    torch.manual_seed(0)
    return VLEForVQA(VLEConfig.tiny(id2label=ANSWERS)).eval()


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(processor, image):
    return ExplainInputs.build(processor, image, QUESTION)


def vcr_inputs(processor):
    ann = {"objects": ["person", "car"], "question": ["is", [0], "left", "of", [1], "?"],
           "answer_choices": [["yes"], ["no"], ["maybe"], [[1]]], "answer_label": 0}
    meta = {"boxes": [[0, 0, 10, 10, 1.0], [20, 20, 31, 31, 1.0]], "width": 32, "height": 32}
    batch = build_vcr_inputs(processor, ann, np.zeros((32, 32, 3), np.uint8), meta, patch_size=8, max_length=16)
    return ExplainInputs.from_batch(dict(batch), processor)


# -- recorder ---------------------------------------------------------------------------------------------------


def test_recorder_names_shapes_and_rows_sum_to_one(vqa, inputs):
    before = hook_count(vqa)
    with Recorder(vqa, hidden=True) as rec:
        vqa(**inputs.model_inputs)
    text_len, image_len, heads = inputs.text_len, 17, 4
    expected = {
        "vision.0.attention": (1, heads, image_len, image_len), "text.1.attention": (1, heads, text_len, text_len),
        "fusion.text.0.self_attention": (1, heads, text_len, text_len),
        "fusion.text.1.cross_attention": (1, heads, text_len, image_len),
        "fusion.image.0.self_attention": (1, heads, image_len, image_len),
        "fusion.image.1.cross_attention": (1, heads, image_len, text_len),
        "fusion.image.1.hidden": (1, image_len, 32), "fusion.text.0.hidden": (1, text_len, 32),
    }
    for name, shape in expected.items():
        assert tuple(rec[name].shape) == shape, name
    assert len([n for n in rec.names() if n.endswith("attention")]) == 2 + 2 + 4 * 2
    for name in rec.names():
        if name.endswith("attention"):
            torch.testing.assert_close(rec[name].sum(-1), torch.ones(rec[name].shape[:-1]))
    assert hook_count(vqa) == before and vqa.config._attn_implementation == "sdpa"


def test_recorder_matches_output_attentions_and_changes_nothing(vqa, inputs):
    plain = vqa(**inputs.model_inputs).logits
    with Recorder(vqa) as rec:
        recorded = vqa(**inputs.model_inputs).logits
    reference = vqa(**inputs.model_inputs, output_attentions=True).vle_output
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rec["fusion.text.1.cross_attention"], reference.fusion_text_cross_attentions[1])
    torch.testing.assert_close(rec["text.0.attention"], reference.text_attentions[0])
    torch.testing.assert_close(rec.stack("vision.{}.attention"), torch.stack(reference.vision_attentions))


def test_a_recorder_with_gradients_is_freed_with_its_graph(vqa, inputs):
    """Hooks that live in the autograd graph must not hold the recorder, which holds the graph: the collector cannot
    see a cycle through the graph, and every gradient explanation would leak it (0.6 GB a call at the vle-base shape)."""
    with Recorder(vqa, hidden=True, grads=True) as rec:
        output = vqa(**inputs.model_inputs)
    rec.backward(output.logits[0, 2])
    assert rec.grads["fusion.text.0.cross_attention"].abs().sum() > 0 and rec.grads["vision.0.attention"] is not None
    alive = weakref.ref(rec)
    del rec, output
    gc.collect()
    assert alive() is None


def test_recorder_removes_hooks_after_an_exception(vqa, inputs):
    before = hook_count(vqa)  # transformers may keep hooks of its own
    with pytest.raises(RuntimeError, match="boom"):
        with Recorder(vqa, hidden=True, grads=True):
            vqa(**inputs.model_inputs)
            assert hook_count(vqa) > before
            raise RuntimeError("boom")
    clip = vqa.base_vle.vision_model.vision_model.config
    assert hook_count(vqa) == before and vqa.config._attn_implementation == "sdpa"
    assert clip._attn_implementation == "sdpa"


def test_recorder_gradients_and_filter(vqa, inputs):
    with Recorder(vqa, grads=True, only=["fusion.*"]) as rec:
        vqa(**inputs.model_inputs).logits[0, 1].backward()
    vqa.zero_grad()
    assert rec.names() and all(n.startswith("fusion.") for n in rec.names())
    grads = rec.stack("fusion.text.{}.cross_attention", grads=True)
    assert grads.shape == rec.stack("fusion.text.{}.cross_attention").shape and grads.abs().sum() > 0
    with pytest.raises(KeyError, match="nothing recorded"):
        rec["vision.0.attention"]
    with pytest.raises(ValueError, match="unknown attention families"):
        Recorder(vqa, attentions=["audio"])


def test_tapped_attention_has_the_gradients_of_the_eager_attention():
    """The fusion blocks' in-place backward (used while a recorder keeps gradients) gives the autograd gradients of
    queries, keys and values, and hands the probabilities' own gradient to the tap."""
    from vle.explain.recorder import _TappedAttention
    from vle.modeling_vle import attention_probabilities

    generator = torch.Generator().manual_seed(0)
    query, key, value, weight = (torch.randn(2, 3, n, 8, generator=generator, requires_grad=True)
                                 for n in (5, 7, 7, 5))
    mask = torch.zeros(2, 1, 1, 7)
    mask[1, ..., -2:] = torch.finfo(torch.float32).min  # the second item has two padded keys
    probs = attention_probabilities(query, key, mask, 8 ** -0.5)
    probs.retain_grad()
    (probs @ value * weight).sum().backward()
    expected = [probs.grad] + [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    tapped = {}
    out, tapped_probs = _TappedAttention.apply(query, key, value, mask, 8 ** -0.5,
                                               lambda grad, p: tapped.update(grad=grad.clone(), probs=p))
    (out * weight).sum().backward()
    torch.testing.assert_close(tapped_probs, probs.detach())
    for got, want in zip([tapped["grad"], query.grad, key.grad, value.grad], expected):
        torch.testing.assert_close(got, want)


def test_recorder_backward_equals_a_full_backward(vqa, inputs):
    with torch.enable_grad(), Recorder(vqa, attentions=("fusion",), hidden=True, grads=True) as full:
        vqa(**inputs.model_inputs).logits[0, 1].backward()
    vqa.zero_grad()
    with torch.enable_grad(), Recorder(vqa, attentions=("fusion",), hidden=True, grads=True) as lean:
        score = vqa(**inputs.model_inputs).logits[0, 1]
    lean.backward(score)  # after the block: no parameter gradients, every recorded tensor's gradient
    assert all(p.grad is None for p in vqa.parameters())
    assert set(lean.grads) == set(full.grads) == set(lean.names())
    for name in full.grads:
        torch.testing.assert_close(lean.grads[name], full.grads[name])
    with pytest.raises(RuntimeError, match="keeps no gradients"):
        Recorder(vqa).backward(score)


def test_recorder_keeps_only_the_gradients_asked_for(vqa, inputs):
    with torch.enable_grad(), Recorder(vqa, attentions=("fusion",), hidden=True, grads=True) as every:
        score = vqa(**inputs.model_inputs).logits[0, 1]
    every.backward(score)
    with torch.enable_grad(), Recorder(vqa, attentions=("fusion",), hidden=True,
                                       grads=["fusion.*.cross_attention", "fusion.image.1.hidden"]) as some:
        score = vqa(**inputs.model_inputs).logits[0, 1]
    some.backward(score)
    assert set(some.names()) == set(every.names())  # every map is still recorded
    assert set(some.grads) == {n for n in every.grads if n.endswith("cross_attention")} | {"fusion.image.1.hidden"}
    for name in some.grads:
        torch.testing.assert_close(some.grads[name], every.grads[name])


def test_recorder_skips_the_tower_with_image_features(vqa, inputs):
    features = vqa.base_vle.get_image_features(inputs.model_inputs["pixel_values"])
    kwargs = {k: v for k, v in inputs.model_inputs.items() if k != "pixel_values"}
    with Recorder(vqa) as rec:
        vqa(**kwargs, image_features=features)
    assert not any(n.startswith("vision.") for n in rec.names()) and "fusion.image.0.self_attention" in rec


# -- targets, words, result -------------------------------------------------------------------------------------


def test_targets_read_logits():
    logits = torch.tensor([[1.0, 3.0, 0.5]])
    assert float(VQAAnswer(1).score(logits)) == 3.0
    assert float(VQAContrast(1, 0).score(logits)) == 2.0
    assert float(ITMMatch(False).score(logits[:, :2])) == -2.0
    assert VCRContrast(2, 0).sequences == (2, 0) and float(VCRChoice(2).probability(logits)) < 0.2
    assert float(PBCPhrase(patches=(1,)).score(torch.tensor([[[0.0, 1.0], [0.0, 5.0]]]))) == 5.0
    for target in (VQAContrast(1, 0, "red", "blue"), ITMMatch(), PBCPhrase((1, 2), "a red circle"), VCRContrast(1, 3)):
        assert type(target).from_dict(target.to_dict()) == target and target.label


def test_merge_words():
    words, scores, index = merge_words(["[CLS]", "▁h", "ow", "▁", "m", "any", "▁?", "[SEP]"], [9, 1, 2, 3, 4, 5, 6, 9],
                                       {"[CLS]", "[SEP]"})
    assert words == ("how", "many", "?") and scores == [3.0, 12.0, 6.0] and index == [-1, 0, 0, 1, 1, 1, 2, -1]


def make_explanation(**overrides):
    fields = dict(patch_scores=np.arange(4.0).reshape(2, 2), box_scores=np.zeros(0), tokens=("[CLS]", "▁red", "[SEP]"),
                  token_scores=np.array([0.0, 2.0, 0.0]), words=("red",), word_scores=np.array([2.0]),
                  target=VQAAnswer(0, "red"), method="rollout", signed=False, metadata={"seconds": 0.1})
    return Explanation(**{**fields, **overrides})


def test_explanation_validates_saves_and_loads(tmp_path):
    explanation = make_explanation(metadata={"maps": np.ones((2, 3)), "note": "x"})
    assert explanation.modality_share == {"image": 0.75, "text": 0.25}
    with pytest.raises(ValueError, match="one score per token"):
        make_explanation(token_scores=np.zeros(2))
    with pytest.raises(ValueError, match="signed=False"):
        make_explanation(patch_scores=-np.ones((2, 2)))
    with pytest.raises(ValueError, match="rows, cols"):
        make_explanation(patch_scores=np.ones(4))
    with pytest.raises(Exception):
        explanation.method = "other"
    assert not explanation.patch_scores.flags.writeable
    explanation.save(tmp_path / "e.npz")
    loaded = Explanation.load(tmp_path / "e.npz")
    assert loaded == explanation and loaded.target.label == 'answer "red"'
    np.testing.assert_array_equal(loaded.metadata["maps"], np.ones((2, 3)))


# -- methods ----------------------------------------------------------------------------------------------------


def head_cases(processor, image):
    torch.manual_seed(1)
    pretraining = VLEForPretraining(VLEConfig.tiny()).eval()
    pbc = VLEForPBC(VLEConfig.tiny()).eval()
    vcr = VLEForVCRQ2A(VLEConfig.tiny(num_token_types=8)).eval()
    phrase = ExplainInputs.build(processor, image, "the red circle")
    return {"itm": (pretraining, phrase, ITMMatch()), "pbc": (pbc, phrase, PBCPhrase(phrase="the red circle")),
            "vcr": (vcr, vcr_inputs(processor), VCRContrast(1, 0))}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_every_supported_head(method, vqa, inputs, processor, image):
    cases = {"vqa": (vqa, inputs, VQAAnswer(2, "circle")), **head_cases(processor, image)}
    for head, (model, example, target) in cases.items():
        if not METHODS[method].supports(target):
            with pytest.raises(ValueError, match=f"method '{method}'"):
                explain(model, example, target, method)
            continue
        e = explain(model, example, target, method)
        assert e.patch_scores.shape == (4, 4) and e.method == method and e.signed == METHODS[method].signed, head
        assert e.box_scores.shape == ((2,) if head == "vcr" else (0,))
        assert len(e.tokens) == len(e.token_scores) and len(e.words) == len(e.word_scores) > 0
        assert (e.signed or e.patch_scores.min() >= 0) and np.isfinite(e.metadata["target_score"])


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"pbc"}))
def test_methods_are_deterministic(method, vqa, inputs):
    first, second = (explain(vqa, inputs, VQAContrast(0, 1), method) for _ in range(2))
    np.testing.assert_allclose(first.patch_scores, second.patch_scores, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(first.token_scores, second.token_scores, rtol=1e-6, atol=1e-9)


def test_unsupported_pairs_say_what_works(vqa, inputs, processor, image):
    with pytest.raises(ValueError, match="explains PBC targets.*Methods for this target: .*coattention_relevance"):
        explain(vqa, inputs, VQAAnswer(0), "pbc")
    with pytest.raises(ValueError, match="VLEForVQA has no ITM head"):
        explain(vqa, inputs, ITMMatch(), "rollout")
    with pytest.raises(ValueError, match="unknown explanation method 'lime'"):
        explain(vqa, inputs, VQAAnswer(0), "lime")
    with pytest.raises(ValueError, match="has no option steps; its options: n_steps=32"):
        explain(vqa, inputs, VQAAnswer(0), "integrated_gradients", steps=3)


def test_integrated_gradients_is_complete_within_its_delta(vqa, inputs):
    from vle.explain.inputs import background_fill
    from vle.explain.embedding_forward import text_baseline

    target = VQAAnswer(1)
    forward = TargetForward(vqa, inputs, target)
    ids, pixels = inputs.model_inputs["input_ids"], inputs.model_inputs["pixel_values"]
    with torch.no_grad():
        change = float(forward() - forward(input_ids=text_baseline(ids, inputs.special_ids, 0),
                                           pixel_values=background_fill(pixels)))
    deltas = []
    for steps, batch in ((8, 3), (32, 8)):
        e = explain(vqa, inputs, target, "integrated_gradients", n_steps=steps, internal_batch_size=batch)
        total = e.patch_scores.sum() + e.token_scores.sum()
        assert abs(total - change) <= e.metadata["convergence_delta"] + 1e-4
        deltas.append(e.metadata["convergence_delta"])
    assert deltas[1] <= deltas[0] + 1e-6


def test_captum_attribute_runs_through_the_forward_wrapper(vqa, inputs):
    forward = TargetForward(vqa, inputs, VQAAnswer(2))
    pixels = inputs.model_inputs["pixel_values"]
    attribution, delta = CaptumIG(lambda p: forward(pixel_values=p)).attribute(
        pixels, baselines=torch.zeros_like(pixels), n_steps=8, internal_batch_size=4, return_convergence_delta=True)
    assert attribution.shape == pixels.shape and torch.isfinite(attribution).all() and delta.numel() == 1


def test_relevance_rules_follow_the_attended_patch():
    text_len, image_len, target_patch = 3, 6, 4
    eye = lambda n: torch.eye(n) * 0.0  # noqa: E731  (self-attention carries no relevance here)
    cross = torch.zeros(text_len, image_len)
    cross[0, 1 + target_patch] = 1.0  # the text CLS reads one patch
    weighted = {"ts": [eye(text_len)], "tc": [cross], "is": [eye(image_len)], "ic": [torch.zeros(image_len, text_len)]}
    image, text = read_out(propagate(weighted))
    assert int(image.argmax()) == target_patch and float(image[target_patch]) > 0 and text.abs().sum() == 0


def test_a_new_question_on_the_same_image_skips_the_image_tower(vqa, processor, image):
    calls = []
    handle = vqa.base_vle.vision_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        session = Session(vqa, processor)
        session.explain(image, QUESTION, answer="red")
        before = len(calls)
        second = session.explain(image, "is there a blue circle ?", answer="blue")
        assert len(calls) == before and session.cache.hits >= 1 and second.metadata["image_features_cached"]
        session.explain(image, "is there a blue circle ?", answer="blue", method="integrated_gradients", n_steps=4)
        assert len(calls) > before  # IG needs the gradient through the image tower
    finally:
        handle.remove()


def test_rollout_is_class_agnostic_and_relevance_is_not(vqa, inputs):
    rollouts = [explain(vqa, inputs, VQAAnswer(k), "rollout").patch_scores for k in (0, 1)]
    np.testing.assert_allclose(*rollouts)
    relevance = [explain(vqa, inputs, VQAAnswer(k), "coattention_relevance").patch_scores for k in (0, 1)]
    assert not np.allclose(*relevance)


def test_coattention_weightings(vqa, inputs, tmp_path):
    """The default keeps |∇A ⊙ A| with rows scaled to one and composes the cross-attention rule; Chefer et al.'s
    positive part and transposed rule stay options away."""
    default = explain(vqa, inputs, VQAAnswer(0), "coattention_relevance")
    chefer = explain(vqa, inputs, VQAAnswer(0), "coattention_relevance", weighting="positive", normalize_rows=False,
                     cross_rule="chefer")
    assert (default.metadata["weighting"], default.metadata["normalize_rows"]) == ("absolute", True)
    assert default.metadata["cross_rule"] == "composed" and chefer.metadata["cross_rule"] == "chefer"
    assert chefer.metadata["weighting"] == "positive" and not np.allclose(default.patch_scores, chefer.patch_scores)
    assert (default.patch_scores >= 0).all() and (chefer.patch_scores >= 0).all()
    default.save(tmp_path / "e.npz")
    assert type(default).load(tmp_path / "e.npz").metadata["normalize_rows"] is True
    with pytest.raises(ValueError, match="weighting must be one of absolute, positive, got 'signed'"):
        explain(vqa, inputs, VQAAnswer(0), "coattention_relevance", weighting="signed")
    for method in ("coattention_relevance", "rollout"):
        with pytest.raises(ValueError, match="cross_rule must be one of composed, chefer, got 'lrp'"):
            explain(vqa, inputs, VQAAnswer(0), method, cross_rule="lrp")


def test_coattention_weighs_cross_attention_by_default(vqa, inputs):
    """Only the cross-attention maps are gradient-weighted by default; Chefer et al. weigh every map."""
    default = explain(vqa, inputs, VQAAnswer(0), "coattention_relevance")
    every = explain(vqa, inputs, VQAAnswer(0), "coattention_relevance", gradient_weighted="all")
    assert default.metadata["gradient_weighted"] == "cross" and every.metadata["gradient_weighted"] == "all"
    assert not np.allclose(default.patch_scores, every.patch_scores)
    # by hand: |∇A ⊙ A| over heads, rows to one, for the cross maps; the head mean for the self maps; text-CLS seed
    maps, weighted, _, _ = fusion_maps(vqa, inputs, VQAAnswer(0), grads=True, grad_reduce=head_weighted())
    weighted = rows_normalized(weighted)
    by_hand = {f: [a[0].mean(0) for a in maps[f]] if f in ("ts", "is") else [m[0] for m in weighted[f]]
               for f in maps}
    image, _ = read_out(propagate(by_hand), "text")
    text_seeded = explain(vqa, inputs, VQAAnswer(0), "coattention_relevance", seed="text")
    np.testing.assert_allclose(text_seeded.patch_scores.reshape(-1), image.clamp(min=0).numpy(), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="gradient_weighted must be one of cross, all, got 'self'"):
        explain(vqa, inputs, VQAAnswer(0), "coattention_relevance", gradient_weighted="self")


def test_raw_attention_options_and_maps(vqa, inputs):
    e = explain(vqa, inputs, VQAAnswer(0), "raw_attention", layer=0, head=2)
    assert e.metadata["text_to_image"].shape == (2, 4, inputs.text_len, 17)
    np.testing.assert_allclose(e.patch_scores.reshape(-1), e.metadata["text_to_image"][0, 2, 0, 1:], rtol=1e-6)
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        explain(vqa, inputs, VQAAnswer(0), "raw_attention", layer=5)


def test_lazy_maps_equal_the_eager_forward_maps(vqa, inputs):
    """Without gradients the recorder keeps the fused kernels and computes maps on read; they are the eager maps."""
    with Recorder(vqa) as lazy:
        vqa(**inputs.model_inputs)
    assert lazy.lazy
    with torch.enable_grad(), Recorder(vqa, grads=True) as eager:
        vqa(**inputs.model_inputs)
    assert not eager.lazy and set(lazy.names()) == set(eager.names())
    for name in eager.names():
        torch.testing.assert_close(lazy[name], eager[name].detach(), atol=1e-5, rtol=1e-4)


def test_integrated_gradients_in_bfloat16_stays_close_to_float32(vqa, inputs):
    target = VQAAnswer(1)
    full = explain(vqa, inputs, target, "integrated_gradients", n_steps=16)
    low = explain(vqa, inputs, target, "integrated_gradients", n_steps=16, precision="bfloat16")
    assert low.metadata["precision"] == "bfloat16" and low.patch_scores.dtype == full.patch_scores.dtype
    scale = np.abs(full.patch_scores).max()
    assert np.abs(low.patch_scores - full.patch_scores).max() <= 0.1 * scale
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, got 'half'"):
        explain(vqa, inputs, target, "integrated_gradients", precision="half")


def test_integrated_gradients_auto_settings_take_bfloat16_and_a_small_batch_only_for_wide_models(
        vqa, inputs, monkeypatch):
    from vle.explain.methods import integrated_gradients as ig

    wide = SimpleNamespace(config=SimpleNamespace(hidden_size=ig.WIDE_FROM_HIDDEN))
    cpu = torch.device("cpu")
    monkeypatch.setattr(ig, "has_fast_bfloat16", lambda device: True)
    assert ig.resolve_precision("auto", wide, cpu) == "bfloat16"
    assert ig.resolve_precision("auto", vqa, cpu) == "float32"  # a narrow model: bfloat16 would be slower
    assert ig.resolve_precision("float32", wide, cpu) == "float32"  # an explicit choice wins
    monkeypatch.setattr(ig, "has_fast_bfloat16", lambda device: False)
    assert ig.resolve_precision("auto", wide, cpu) == "float32"
    assert ig.resolve_precision("bfloat16", vqa, cpu) == "bfloat16"
    # the internal batch: small for a wide model on the CPU only
    assert ig.resolve_batch("auto", wide, cpu) == 2 and ig.resolve_batch("auto", vqa, cpu) == 8
    assert ig.resolve_batch("auto", wide, torch.device("cuda")) == 8 and ig.resolve_batch(3, wide, cpu) == 3
    # the metadata names what was used, not the options
    auto = explain(vqa, inputs, VQAAnswer(1), "integrated_gradients", n_steps=4)
    assert auto.metadata["precision"] == "float32" and auto.metadata["internal_batch_size"] == 8
    with pytest.raises(ValueError, match="internal_batch_size must be a positive integer or 'auto', got 0"):
        explain(vqa, inputs, VQAAnswer(1), "integrated_gradients", internal_batch_size=0)


def test_the_read_out_weighs_the_two_cls_rows_by_their_shares(vqa, processor, image):
    relevance = propagate({f: [torch.rand(n, m).softmax(-1)] for f, (n, m) in
                           {"ts": (3, 3), "tc": (3, 6), "is": (6, 6), "ic": (6, 3)}.items()})
    text_only, image_only = read_out(relevance, "text"), read_out(relevance, "image")
    mixed = read_out(relevance, {"text": 0.25, "image": 0.75})
    for part in range(2):
        assert torch.allclose(mixed[part], 0.25 * text_only[part] + 0.75 * image_only[part])
    with pytest.raises(ValueError, match="seed must be one of"):
        read_out(relevance, "pooled")
    e = Session(vqa, processor).explain(image, QUESTION, answer="red")
    shares = e.metadata["cls_shares"]
    assert set(shares) == {"text", "image"} and abs(sum(shares.values()) - 1) < 1e-6 and min(shares.values()) >= 0
