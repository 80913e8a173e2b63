"""Forward semantics of VLEModel and the heads: shapes, invariants, and a naive re-implementation of the spec."""

import math

import pytest
import torch
import torch.nn.functional as F

from vle import (VLEConfig, VLEForITM, VLEForMLM, VLEForMPC, VLEForPBC, VLEForPretraining, VLEForVCRQ2A, VLEForVCRQA2R,
                 VLEForVQA, VLEModel)


def _inputs(batch=2, length=6, size=32):
    input_ids = torch.randint(4, 100, (batch, length))
    input_ids[:, 0], input_ids[:, -1] = 1, 2
    return dict(input_ids=input_ids, pixel_values=torch.randn(batch, 3, size, size),
                attention_mask=torch.ones(batch, length, dtype=torch.long))


def test_output_shapes(config):
    out = VLEModel(config).eval()(**_inputs())
    assert out.pooler_output.shape == (2, 2 * config.hidden_size)
    assert out.text_embeds.shape == (2, 6, config.hidden_size)
    assert out.image_embeds.shape == (2, 1 + config.patch_grid ** 2, config.hidden_size)


def _reference_fusion(model: VLEModel, input_ids, pixel_values, attention_mask):
    """The spec's forward (§4.1), written out naively and independently of the module code."""
    vis = model.vision_model.vision_model
    h = vis(pixel_values=pixel_values).last_hidden_state
    image = model.image_projection_layer(vis.post_layernorm(h)) + model.token_type_embeddings.weight[1]
    text = model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    text = model.text_projection_layer(text) + model.token_type_embeddings.weight[0]
    neg = torch.finfo(text.dtype).min
    text_bias = (1 - attention_mask[:, None, None, :].float()) * neg
    image_bias = torch.zeros(image.shape[0], 1, 1, image.shape[1])

    def attend(block, hidden, other, bias):
        heads = model.config.num_attention_heads
        d = hidden.shape[-1] // heads
        q = block.self.query(hidden).unflatten(-1, (heads, d)).transpose(1, 2)
        k = block.self.key(other).unflatten(-1, (heads, d)).transpose(1, 2)
        v = block.self.value(other).unflatten(-1, (heads, d)).transpose(1, 2)
        p = (q @ k.transpose(-1, -2) / math.sqrt(d) + bias).softmax(-1)
        ctx = (p @ v).transpose(1, 2).flatten(2)
        return block.output.LayerNorm(block.output.dense(ctx) + hidden)

    def layer(module, hidden, other, self_bias, other_bias):
        hidden = attend(module.attention, hidden, hidden, self_bias)
        hidden = attend(module.crossattention, hidden, other, other_bias)
        ffn = module.output.dense(F.gelu(module.intermediate.dense(hidden)))
        return module.output.LayerNorm(ffn + hidden)

    x, y = text, image
    for tl, il in zip(model.cross_modal_text_layers, model.cross_modal_image_layers):
        x, y = layer(tl, x, y, text_bias, image_bias), layer(il, y, x, image_bias, text_bias)
    pooled = torch.cat([torch.tanh(model.cross_modal_text_pooler.dense(x[:, 0])),
                        torch.tanh(model.cross_modal_image_pooler.dense(y[:, 0]))], -1)
    return pooled, x, y


def test_matches_naive_reference(config):
    model = VLEModel(config).eval()
    inputs = _inputs()
    inputs["attention_mask"][1, -2:] = 0
    with torch.no_grad():
        out = model(**inputs)
        pooled, x, y = _reference_fusion(model, **inputs)
    torch.testing.assert_close(out.pooler_output, pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.image_embeds, y, rtol=1e-5, atol=1e-5)


def test_eager_equals_fast_path_and_attention_rows_sum_to_one(config):
    model = VLEModel(config).eval()
    inputs = _inputs()
    with torch.no_grad():
        fast = model(**inputs)
        eager = model(**inputs, output_attentions=True)
    torch.testing.assert_close(fast.pooler_output, eager.pooler_output, rtol=1e-5, atol=1e-5)
    groups = {
        "vision_attentions": config.vision_config.num_hidden_layers,
        "text_attentions": config.text_config.num_hidden_layers,
        "fusion_text_self_attentions": config.num_hidden_layers,
        "fusion_text_cross_attentions": config.num_hidden_layers,
        "fusion_image_self_attentions": config.num_hidden_layers,
        "fusion_image_cross_attentions": config.num_hidden_layers,
    }
    for name, layers in groups.items():
        maps = getattr(eager, name)
        assert len(maps) == layers, name
        for probs in maps:
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=1e-5, atol=1e-5)
    text_len, image_len = 6, 1 + config.patch_grid ** 2
    assert eager.fusion_text_cross_attentions[0].shape == (2, config.num_attention_heads, text_len, image_len)
    assert eager.fusion_image_cross_attentions[0].shape == (2, config.num_attention_heads, image_len, text_len)


def test_batch_equals_single_and_padding_changes_nothing(config):
    model = VLEForVQA(config).eval()
    inputs = _inputs()
    with torch.no_grad():
        batched = model(**inputs).logits
        singles = torch.cat([model(**{k: v[i:i + 1] for k, v in inputs.items()}).logits for i in range(2)])
        padded = {k: v.clone() for k, v in inputs.items()}
        padded["input_ids"] = torch.cat([inputs["input_ids"], torch.zeros(2, 3, dtype=torch.long)], 1)
        padded["attention_mask"] = torch.cat([inputs["attention_mask"], torch.zeros(2, 3, dtype=torch.long)], 1)
        with_padding = model(**padded).logits
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, with_padding, rtol=1e-5, atol=1e-5)


def _vcr_inputs(batch=2, choices=4, length=8):
    ids = torch.randint(4, 100, (batch, choices, length))
    mask = torch.ones_like(ids)
    mask[:, 1, -3:] = 0
    patch_ids = [[[[0, 1, 4, 5], [10]] if c % 2 else [[3]] for c in range(choices)] for _ in range(batch)]
    ext = [[([2, 3], [0, 2, 2, 0, 3]) if c % 2 else ([2], [0, 0, 2]) for c in range(choices)] for _ in range(batch)]
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                pixel_values=torch.randn(batch, 3, 32, 32), patch_ids=patch_ids, extend_token_type_ids=ext)


@pytest.mark.parametrize("cls", [VLEForVCRQ2A, VLEForVCRQA2R])
def test_batched_vcr_equals_per_choice_runs(config, cls):
    model = cls(config).eval()
    inputs = _vcr_inputs()
    head = getattr(model, cls.head_name)
    with torch.no_grad():
        out = model(**inputs, labels=torch.tensor([0, 3]))
        for b in range(2):
            for c in range(4):
                single = model.vle(input_ids=inputs["input_ids"][b, c][None], pixel_values=inputs["pixel_values"][b][None],
                                   attention_mask=inputs["attention_mask"][b, c][None],
                                   patch_ids=[inputs["patch_ids"][b][c]],
                                   extend_token_type_ids=([inputs["extend_token_type_ids"][b][c][0]],
                                                          [inputs["extend_token_type_ids"][b][c][1]]))
                torch.testing.assert_close(out.logits[b, c], head(single.pooler_output)[0, 0], rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (2, 4) and out.loss.ndim == 0


def test_vcr_runs_image_tower_once_per_image(config):
    model = VLEForVCRQ2A(config).eval()
    calls = []
    handle = model.vle.vision_model.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(**_vcr_inputs())
    handle.remove()
    assert len(calls) == 1


def test_box_tokens_are_mean_of_patches_and_padded(config):
    model = VLEModel(config).eval()
    inputs = _inputs()
    out = model(**inputs, patch_ids=[[[0, 1]], [[2], [3, 4]]], extend_token_type_ids=([[2], [2, 3]], [[0, 2], [0]]))
    assert out.image_embeds.shape[1] == 1 + config.patch_grid ** 2 + 2
    assert out.image_mask[0].tolist()[-2:] == [1, 0] and out.image_mask[1].tolist()[-2:] == [1, 1]


def test_bad_vcr_inputs_get_clear_errors(config):
    model = VLEModel(config).eval()
    with pytest.raises(ValueError, match="extend_token_type_ids"):
        model(**_inputs(), patch_ids=[[[0]], [[1]]])
    with pytest.raises(ValueError, match="covers no patch"):
        model(**_inputs(), patch_ids=[[[]], [[1]]], extend_token_type_ids=([[2], [2]], [[0], [0]]))
    with pytest.raises(ValueError, match="token type"):
        model(**_inputs(), patch_ids=[[[0]], [[1]]], extend_token_type_ids=([[99], [2]], [[0], [0]]))


def test_other_image_size_interpolates_position_embeddings(config):
    model = VLEForITM(config).eval()
    inputs = _inputs(size=48)
    with torch.no_grad():
        on_the_fly = model(**inputs).logits
        model.vle.resize_image(48)
        resized = model(**inputs).logits
    assert model.config.vision_config.image_size == 48
    torch.testing.assert_close(on_the_fly, resized, rtol=1e-5, atol=1e-5)


def test_heads_losses_and_shapes(config):
    inputs = _inputs()
    vqa = VLEForVQA(config)(**inputs, vqa_labels=[[0], [1, 2]], vqa_scores=[[1.0], [0.3, 0.6]])
    assert vqa.logits.shape == (2, 3) and vqa.loss.item() > 0
    itm = VLEForITM(config)(**inputs, itm_labels=torch.tensor([0, 1]))
    assert itm.logits.shape == (2, 2)
    pbc = VLEForPBC(config)(**inputs, pbc_labels=torch.zeros(2, 16, dtype=torch.long))
    assert pbc.logits.shape == (2, 16, 2)
    mlm_model = VLEForMLM(config)
    mlm = mlm_model(**inputs, mlm_labels=torch.full((2, 6), -100).index_fill_(1, torch.tensor([2]), 5))
    assert mlm.logits.shape == (2, 6, config.text_config.vocab_size) and torch.isfinite(mlm.loss)
    predictions = mlm_model.mlm_score[1].predictions
    assert predictions.decoder.weight is mlm_model.vle.text_model.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    mpc_config = VLEConfig.tiny(mpc_labels=["circle", "square", "triangle"])
    mpc = VLEForMPC(mpc_config)(**inputs, patch_ids=[[[0, 1]], [[5], [6, 7]]], mpc_labels=[[2, -100], [0, 1]])
    assert mpc.logits.shape == (2, 2, 3) and torch.isfinite(mpc.loss)


def test_mpc_masks_only_the_listed_patches(config):
    model = VLEForMPC(VLEConfig.tiny(mpc_labels=["a", "b"]))
    pixels = torch.randn(1, 3, 32, 32)
    masked = model.mask_patches(pixels, [[[5]]])  # row 1, col 1 of a 4x4 grid of 8-pixel patches
    assert masked[0, :, 8:16, 8:16].abs().sum() == 0
    masked[0, :, 8:16, 8:16] = pixels[0, :, 8:16, 8:16]
    assert torch.equal(masked, pixels)


def test_precomputed_image_features_skip_the_tower(config):
    model = VLEForVQA(config).eval()
    inputs = _inputs()
    with torch.no_grad():
        features = model.vle.get_image_features(inputs["pixel_values"])
        direct = model(**inputs).logits
        cached = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       image_features=features).logits
    torch.testing.assert_close(direct, cached)


@pytest.mark.parametrize("cls", [VLEForVQA, VLEForITM, VLEForVCRQ2A])
def test_pooled_only_gives_the_same_logits_and_gradients(config, cls):
    """Training's shortcut: the last fusion layer updates only the class tokens, so the pooled pair, the logits and
    every gradient equal the full forward's; the token states it skipped are None."""
    model = cls(config).eval()
    inputs = _vcr_inputs() if cls is VLEForVCRQ2A else _inputs()
    labels = torch.tensor([0, 3]) if cls is VLEForVCRQ2A else None
    runs = []
    for pooled_only in (False, True):
        model.zero_grad()
        out = model(**inputs, pooled_only=pooled_only)
        (out.logits.square().sum() if labels is None else model(**inputs, labels=labels).loss).backward()
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, full_grads), (fast, fast_grads) = runs
    torch.testing.assert_close(fast.logits, full.logits, rtol=1e-5, atol=1e-6)
    assert fast.vle_output.text_embeds is None and fast.vle_output.image_embeds is None
    if labels is None:
        assert full_grads.keys() == fast_grads.keys()
        for name, grad in full_grads.items():
            torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pooled_only_refuses_what_needs_token_states(config):
    inputs = _inputs()
    pretraining = VLEForPretraining(config)
    assert [pretraining.reads_pooled_only(t) for t in ("itm", "pbc", "mlm", "mpc")] == [True, False, False, False]
    assert VLEForVQA(config).reads_pooled_only() and not VLEForPBC(config).reads_pooled_only()
    with pytest.raises(ValueError, match="PBC reads the fused token states"):
        VLEForPBC(config)(**inputs, pooled_only=True)
    with pytest.raises(ValueError, match="MLM reads the fused token states"):
        VLEForMLM(config)(**inputs, pooled_only=True)
    with pytest.raises(ValueError, match="output_attentions"):
        VLEModel(config)(**inputs, pooled_only=True, output_attentions=True)
