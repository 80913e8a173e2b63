"""Shapes-world training: tokenizer, batches, loss goes down, deterministic resume; shipped models and their
accuracy on a small held-out sample (the full evaluation is `vle-workbench evaluate`, a benchmark)."""

import numpy as np
import pytest
import torch

from vle import VLEForPretraining, VLEForVQA
from vle.hub import shipped_models
from vle.shapes import ANSWERS, NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, make_scene, world_corpus
from vle.explain.recorder import Recorder
from vle.shapes.data import (PRETRAINING_TASKS, ScenePool, color_token_ids, color_words, normalize, vcr_batch,
                             vqa_batch)
from vle.shapes.evaluate import SHIPPED, _vqa
from vle.shapes.train import (RECIPES, Stage, WordGrounding, _relation_loss, _word_grounding_loss, add_sincos_positions,
                              build_processor, shapes_config, sincos_positions, train, train_stage)
from vle.shapes.world import object_patches


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return build_processor(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def pool():
    return ScenePool(0, 12)


def test_tokenizer_round_trip(processor):
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == "DebertaV2Tokenizer"
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    for sentence in list(world_corpus(5, seed=123)):
        ids = tokenizer(sentence)["input_ids"]
        assert tokenizer.unk_token_id not in ids, sentence
        assert tokenizer.decode(ids, skip_special_tokens=True) == sentence


def test_pixels_match_the_processor(processor):
    scene = make_scene(5)
    expected = processor.preprocess_images(scene.image)
    actual = normalize(torch.from_numpy(np.array(scene.pixels)).permute(2, 0, 1)[None])
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_every_batch_builder_runs_on_the_model(processor, pool):
    config = shapes_config(len(processor.tokenizer), **{"hidden": 32, "layers": RECIPES["smoke"].layers})
    model = VLEForPretraining(config)
    rng = np.random.default_rng(0)
    for task, builder in PRETRAINING_TASKS.items():
        assert torch.isfinite(model(task=task, **builder(pool, processor, rng, np.array([0, 5, 7]))).loss), task
    batch = vqa_batch(pool, processor, rng, np.array([1, 2]))
    assert len(batch["vqa_labels"]) == 2
    vcr = vcr_batch(pool, processor, rng, np.array([3, 4]))
    assert vcr["input_ids"].shape[:2] == (2, 4) and vcr["labels"].shape == (2,)


def test_a_few_steps_lower_the_loss(processor, pool):
    torch.manual_seed(0)
    model = VLEForVQA(shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)).train()
    batch = vqa_batch(pool, processor, np.random.default_rng(0), np.arange(12))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_color_words_name_their_objects(processor, pool):
    index = np.array([0, 3])
    questions = [f"is the {pool.scenes[0].objects[0].color} object left of the {pool.scenes[0].objects[1].color} "
                 "object ?", "what color is the square ?"]
    ids = processor.tokenize(questions)["input_ids"]
    words = color_words(pool, color_token_ids(processor.tokenizer), index, ids)
    assert words["rows"].tolist() == [0, 0]  # the second question names no colour
    for k, (row, column) in enumerate(zip(words["rows"].tolist(), words["columns"].tolist())):
        obj = pool.scenes[0].objects[k]
        assert processor.tokenizer.convert_ids_to_tokens(int(ids[row, column])) == "▁" + obj.color
        assert words["patches"][k].tolist() == object_patches(pool.scenes[0], obj.index).reshape(-1).tolist()
        assert words["centers"][k].tolist() == pytest.approx([c / 128 for c in obj.center])


def test_sincos_positions_tell_every_patch_apart():
    pattern = sincos_positions(8, 32)
    assert pattern.shape == (64, 32)
    assert torch.cdist(pattern, pattern).add(torch.eye(64)).min() > 0.1
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positions(8, 30)


def test_word_grounding_loss_trains_the_attention_onto_the_named_object(processor, pool):
    torch.manual_seed(0)
    model = VLEForVQA(shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)).train()
    add_sincos_positions(model, 3.0)
    probe = WordGrounding(32, processor.tokenizer)
    index = np.arange(12)
    batch = vqa_batch(pool, processor, np.random.default_rng(0), index, families=["left_of"])
    words = color_words(pool, probe.color_ids, index, batch["input_ids"])
    assert len(words["rows"]) >= 12
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=3e-3)
    masses = []
    for _ in range(30):
        with Recorder(model, attentions=("fusion",), hidden=True, only=["fusion.text.0.*"], detach=False) as rec:
            model(**batch)
        loss = _word_grounding_loss(probe, rec, words)
        attention = rec["fusion.text.0.cross_attention"][words["rows"], 0, words["columns"], 1:65]
        masses.append(float((attention * words["patches"]).sum(-1).mean().detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert masses[0] < 0.1 and masses[-1] > 0.5  # from about the object's share of the patches


def test_relation_loss_reads_the_offset_of_the_first_named_object_from_the_second(processor):
    probe = WordGrounding(4, processor.tokenizer)
    torch.nn.init.zeros_(probe.relation.weight)
    torch.nn.init.zeros_(probe.relation.bias)
    centers = torch.tensor([[0.1, 0.2], [0.7, 0.4], [0.5, 0.5], [0.9, 0.1], [0.3, 0.3], [0.0, 0.0]])
    # row 0 names two objects, row 1 one (no pair), row 2 three (the first two make the pair)
    words = {"rows": torch.tensor([0, 0, 1, 2, 2, 2]), "centers": centers}
    pooled = torch.randn(3, 8)
    offsets = torch.stack([centers[0] - centers[1], centers[3] - centers[4]])
    torch.testing.assert_close(_relation_loss(probe, pooled, words), 10 * offsets.pow(2).mean())
    # a probe that reads the offsets exactly has no loss
    probe.relation.bias.data = torch.tensor([1.0, 0.0])
    probe.relation.weight.data[:, 0] = torch.tensor([0.0, 1.0])
    pooled = torch.zeros(3, 8)
    pooled[:, 0] = torch.tensor([offsets[0, 1], 0.0, offsets[1, 1]])
    words["centers"] = centers.clone()
    words["centers"][[0, 3], 0] = centers[[1, 4], 0] + 1.0  # x offsets of 1, matching the bias
    assert float(_relation_loss(probe, pooled, words)) < 1e-10
    assert float(_relation_loss(probe, pooled, {"rows": torch.tensor([0, 1]), "centers": centers[:2]})) == 0
    with pytest.raises(ValueError, match="word_grounding_weight"):
        Stage("vqa", 1, 1e-3, 2, relation_weight=1.0)


def test_interrupted_stage_resumes_exactly(tmp_path, processor, pool, monkeypatch):
    import vle.shapes.train as training

    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    stage = Stage("vqa", 6, 1e-3, 4, grounding_weight=1.0)  # the auxiliary head's state must resume too
    straight = VLEForVQA.from_pretrained(train_stage(stage, config, pool, processor, str(tmp_path / "a"),
                                                     checkpoint_every=2))
    real_loss = training._loss

    def crash_at_step_5(stage, model, pool, processor, rng, step, *rest):
        if step == 5:
            raise KeyboardInterrupt
        return real_loss(stage, model, pool, processor, rng, step, *rest)

    monkeypatch.setattr(training, "_loss", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_stage(stage, config, pool, processor, str(tmp_path / "b"), checkpoint_every=2)
    assert (tmp_path / "b" / "vqa" / "train_state.pt").is_file()
    monkeypatch.setattr(training, "_loss", real_loss)
    resumed = VLEForVQA.from_pretrained(train_stage(stage, config, pool, processor, str(tmp_path / "b"),
                                                    checkpoint_every=2))
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_one_task_can_be_trained_in_several_stages(tmp_path, processor, pool):
    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    first = Stage("vqa-relations", 3, 1e-3, 4, families=("left_of", "above"), word_grounding_weight=1.0,
                  relation_weight=1.0)
    then = Stage("vqa", 3, 1e-3, 4, init_from="vqa-relations")
    assert (first.task, then.task, Stage("vcr-q2a-long", 1, 1e-3, 2).task) == ("vqa", "vqa", "vcr-q2a")
    train_stage(first, config, pool, processor, str(tmp_path))
    relations = VLEForVQA.from_pretrained(str(tmp_path / "vqa-relations"))
    final = VLEForVQA.from_pretrained(train_stage(then, config, pool, processor, str(tmp_path)))
    # three Adam steps at 1e-3 move each weight by at most about 3e-3: the second stage went on from the first
    drift = max((weight - relations.state_dict()[name]).abs().max().item()
                for name, weight in final.state_dict().items())
    assert 0 < drift < 0.01
    assert final.config.id2label == relations.config.id2label
    with pytest.raises(ValueError, match="'caption'"):
        Stage("caption", 1, 1e-3, 2).task


def test_evidence_patches_mark_the_objects_an_answer_depends_on(processor, pool):
    from vle.shapes.data import evidence_patches

    batch = vqa_batch(pool, processor, np.random.default_rng(3), np.arange(6), with_evidence=True)
    assert batch["evidence_patches"].shape == (6, 64)
    assert all(row.sum() > 0 for row in batch["evidence_patches"])  # every question has evidence
    scene = pool.scenes[0]
    both = evidence_patches(scene, [0, 1])
    assert both.sum() >= max(object_patches(scene, 0).sum(), object_patches(scene, 1).sum())
    assert (both.reshape(8, 8).astype(bool) == (object_patches(scene, 0) | object_patches(scene, 1))).all()


def test_smoke_recipe_writes_hfl_layout_checkpoints(tmp_path):
    timings = train(str(tmp_path), recipe="smoke")
    assert set(timings) >= {"pretrained", "vqa", "vcr-q2a", "vcr-qa2r", "total"}
    for stage in ("pretrained", "vqa", "vcr-q2a", "vcr-qa2r"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / stage).iterdir()}
    assert VLEForVQA.from_pretrained(str(tmp_path / "vqa")).config.id2label == dict(enumerate(ANSWERS))


NOT_SHIPPED = pytest.mark.skipif(not set(SHIPPED.values()) <= set(shipped_models()),
                                 reason="the embedded checkpoints are not installed (python -m vle.shapes.ship RUN_DIR)")


@NOT_SHIPPED
def test_every_shipped_checkpoint_loads_by_name():
    import vle

    assert set(SHIPPED.values()) <= set(shipped_models())
    for cls in (vle.VLEForITM, vle.VLEForPBC, vle.VLEForMLM, vle.VLEForMPC, vle.VLEForPretraining):
        cls.from_pretrained("vle-tiny-shapes")
    vle.VLEForVQA.from_pretrained("vle-tiny-shapes-vqa")
    vle.VLEForVCRQ2A.from_pretrained("vle-tiny-shapes-vcr-q2a")
    vle.VLEForVCRQA2R.from_pretrained("vle-tiny-shapes-vcr-qa2r")


@NOT_SHIPPED
def test_shipped_vqa_model_on_a_small_held_out_sample():
    from vle.processing_vle import VLEProcessor

    pool = ScenePool(2_000_000, 40)
    with torch.inference_mode():
        by_family, _ = _vqa(VLEForVQA.from_pretrained("vle-tiny-shapes-vqa"),
                            VLEProcessor.from_pretrained("vle-tiny-shapes-vqa"), pool, 2_000_000, 64)
    nonrelational = np.mean([by_family[f] for f in NONRELATIONAL_FAMILIES])
    relational = np.mean([by_family[f] for f in RELATIONAL_FAMILIES])
    # A regression guard, not the targets (0.99 / 0.94, not reached yet): the shipped model measured 0.864 /
    # 0.520 on the full evaluation (200 scenes); 40 scenes leave room for sampling noise.
    assert nonrelational >= 0.78, by_family
    assert relational >= 0.42, by_family
    assert by_family["shape"] >= 0.9 and by_family["size"] >= 0.9 and by_family["exists"] >= 0.9, by_family
