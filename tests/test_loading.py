"""Checkpoints: original layout (transformers 4.2x), real key sets, round trips, Auto classes, clear errors."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from vle import (MissingHeadError, VLEConfig, VLEForITM, VLEForMLM, VLEForPBC, VLEForVCRQ2A, VLEForVQA, VLEModel,
                 extend_position_embedding)

SPEC = json.loads((Path(__file__).parent / "data" / "vle-state-dict-shapes.json").read_text())


def _original_state_dict(model, bare=False):
    """What the original code saved: ``vle.``-prefixed keys (or bare), plus the old persistent position_ids."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prefix = "" if isinstance(model, VLEModel) else "vle."
    grid = model.config.patch_grid
    state[f"{prefix}vision_model.vision_model.embeddings.position_ids"] = torch.arange(grid * grid + 1)[None]
    state[f"{prefix}text_model.embeddings.position_ids"] = torch.arange(64)[None]
    if bare:
        state = {k.removeprefix("vle."): v for k, v in state.items()}
    return state


def _write(folder, model, state, fmt="bin"):
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    if fmt == "bin":
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"))
    return str(folder)


def _outputs(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("cls", [VLEForVQA, VLEForITM, VLEForPBC, VLEForMLM])
@pytest.mark.parametrize("bare", [False, True])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_original_layout_loads_with_nothing_missing(tmp_path, config, cls, bare, fmt):
    model = cls(config).eval()
    state = _original_state_dict(model, bare)
    if cls is VLEForMLM:
        # the legacy head stores its own decoder copy; loading must tie it to the word embeddings anyway
        state["mlm_score.1.predictions.decoder.weight"] = torch.randn_like(state["mlm_score.1.predictions.decoder.weight"])
    folder = _write(tmp_path / "ckpt", model, state, fmt)
    loaded, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = dict(input_ids=torch.tensor([[1, 5, 9, 2]]), pixel_values=torch.randn(1, 3, 32, 32))
    # equal weights, so equal outputs up to the CPU kernels' summation order, which can depend on where a tensor's
    # memory lies (a safetensors load once gave 4e-9 here); a missing or misplaced weight moves them by far more
    torch.testing.assert_close(_outputs(model, inputs), _outputs(loaded, inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [VLEForVQA, VLEForMLM, VLEForVCRQ2A])
def test_save_load_round_trip_is_exact(tmp_path, config, cls):
    model = cls(config).eval()
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config.id2label == model.config.id2label


def test_head_checkpoint_loads_into_base_model_and_auto_classes(tmp_path, config):
    VLEForVQA(config).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is VLEConfig
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is VLEModel


def test_missing_head_is_named_unless_a_new_head_is_wanted(tmp_path, config):
    VLEForITM(config).save_pretrained(tmp_path)
    with pytest.raises(MissingHeadError, match=r"VLEForVQA head \(vqa_classifier.*itm_score"):
        VLEForVQA.from_pretrained(tmp_path)
    model = VLEForVQA.from_pretrained(tmp_path, init_new_head=True)
    assert model.vqa_classifier[3].out_features == 3


def test_unknown_extra_keys_are_reported_not_fatal(tmp_path, config):
    model = VLEForITM(config)
    state = _original_state_dict(model)
    state["mpc_head.weight"] = torch.zeros(3)
    folder = _write(tmp_path / "ckpt", model, state)
    _, info = VLEForITM.from_pretrained(folder, output_loading_info=True)
    assert "mpc_head.weight" in info["unexpected_keys"]


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json"):
        VLEModel.from_pretrained(str(tmp_path))


def test_checkpoint_position_table_wins_over_config_image_size(tmp_path, config):
    model = VLEForITM(config).eval()
    state = extend_position_embedding(_original_state_dict(model), patch_size=8, after=48)
    folder = _write(tmp_path / "ckpt", model, state)  # config still says 32
    loaded = VLEForITM.from_pretrained(folder)
    assert loaded.config.vision_config.image_size == 48
    assert loaded.vle.vision_model.vision_model.embeddings.position_embedding.weight.shape[0] == 37


def test_load_at_another_image_size(tmp_path, config):
    VLEForITM(config).save_pretrained(tmp_path)
    model = VLEForITM.from_pretrained(tmp_path, image_size=64).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 5, 2]]), pixel_values=torch.randn(1, 3, 64, 64))
    assert out.vle_output.image_embeds.shape[1] == 1 + 64


def _real_config(name):
    entry = SPEC[name]
    base = not name.startswith("vle-large")
    hidden, layers, heads = (768, 12, 12) if base else (1024, 24, 16)
    text = dict(model_type="deberta-v2", vocab_size=128100, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512,
                relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_biased_input=False, type_vocab_size=0,
                layer_norm_eps=1e-7)
    vision = dict(model_type="clip_vision_model", hidden_size=hidden, intermediate_size=4 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads, image_size=entry["image_size"],
                  patch_size=16 if base else 14, hidden_act="quick_gelu")
    settings = dict(text_config=text, vision_config=vision, hidden_size=hidden, num_attention_heads=hidden // 64,
                    intermediate_size=4 * hidden, num_token_types=entry["num_token_types"])
    if entry["num_answers"]:
        settings["id2label"] = {i: str(i) for i in range(entry["num_answers"])}
    return VLEConfig(**settings)


@pytest.mark.parametrize("name, cls", [
    ("vle-base-for-vqa", VLEForVQA), ("vle-base-for-vcr-q2a", VLEForVCRQ2A), ("vle-base (ITM head)", VLEForITM),
    ("vle-base (PBC head)", VLEForPBC), ("vle-base (MLM head)", VLEForMLM), ("vle-large-for-vqa", VLEForVQA),
])
def test_real_key_sets_and_shapes_on_meta_device(name, cls):
    with torch.device("meta"):
        model = cls(_real_config(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in SPEC[name]["keys"].items() if not k.endswith("position_ids")}
    assert ours == theirs


def test_new_mlm_head_on_a_checkpoint_without_one_is_usable(tmp_path, config):
    from vle import VLEForPretraining, VLEForVQA

    VLEForVQA(config).save_pretrained(tmp_path)
    model = VLEForPretraining.from_pretrained(tmp_path, init_new_head=True)
    assert not any(p.is_meta for p in model.parameters())
    logits = model(task="mlm", input_ids=torch.tensor([[1, 5, 2]]), pixel_values=torch.zeros(1, 3, 32, 32)).logits
    assert torch.isfinite(logits).all()
