"""Shapes-world training: tokenizer, batches, loss goes down, deterministic resume; shipped models and their
accuracy on a small held-out sample (the full evaluation is `vle-workbench evaluate`, a benchmark)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vle import VLEForPretraining, VLEForVQA
from vle.hub import shipped_models
from vle.shapes import ANSWERS, NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, make_scene, world_corpus
from vle.shapes.data import (PRETRAINING_TASKS, VCR_MAX_LENGTH, ScenePool, color_token_ids, color_words, normalize,
                             vcr_batch, vqa_batch)
from vle.shapes.evaluate import SHIPPED, _vqa
from vle.shapes.auxiliary import PATCH_READOUTS, ObjectPointers, PatchProbe
from vle.shapes.train import (OBJECTIVES, RECIPES, TASK_MODELS, Stage, build_processor, run_models, shapes_config,
                              stage_modules, train, train_stage, train_step)
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
    # padded only to the batch's longest text, which the trimmed columns never cut
    lengths = vcr["attention_mask"].sum(-1)
    assert vcr["input_ids"].shape[2] == int(lengths.max()) < VCR_MAX_LENGTH
    assert all(len(types) <= vcr["input_ids"].shape[2] for item in vcr["extend_token_type_ids"] for _, types in item)


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


def test_patch_probe_reads_what_each_patch_shows(pool):
    truth = pool.patch_truth(np.array([0, 1]))
    assert truth["color"].shape == (2, 64) and truth["position"].shape == (2, 64, 2)
    assert truth["center"].sum(1).tolist() == [len(pool.scenes[0].objects), len(pool.scenes[1].objects)]
    # a probe whose outputs are the truth itself (one-hot logits, logit of the exact position) has almost no loss
    probe = PatchProbe(sum(PATCH_READOUTS.values()))
    torch.nn.init.eye_(probe.read.weight)
    torch.nn.init.zeros_(probe.read.bias)
    parts = [20 * F.one_hot(truth[name], classes).float() for name, classes in PATCH_READOUTS.items()
             if name != "position"]
    exact = torch.cat(parts + [torch.logit(truth["position"].clamp(1e-4, 1 - 1e-4))], dim=-1)
    with torch.no_grad():
        assert float(probe.loss(exact, truth)) < 1e-6
        assert float(probe.loss(torch.zeros_like(exact), truth)) > 1.0


def test_patch_loss_makes_the_image_tower_object_centric(processor, pool):
    torch.manual_seed(0)
    model = VLEForVQA(shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)).train()
    probe = PatchProbe(32)
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=3e-3)
    index = np.arange(12)
    pixels, truth = normalize(pool.pixels[index]), pool.patch_truth(index)
    losses = []
    for _ in range(40):
        loss = probe.loss(model.vle.get_image_features(pixels)[:, 1:], truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_pointer_losses_read_the_named_objects_in_their_order(processor):
    pointers = ObjectPointers(4, processor.tokenizer)
    for layer in (pointers.word, pointers.pooled):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    centers = torch.tensor([[0.1, 0.2], [0.7, 0.4], [0.5, 0.5], [0.9, 0.1], [0.3, 0.3], [0.6, 0.8]])
    # row 0 names two objects, row 1 one, row 2 three (the first two are read from the pooled pair)
    words = {"rows": torch.tensor([0, 0, 1, 2, 2, 2]), "columns": torch.tensor([1, 2, 1, 1, 2, 3]),
             "centers": centers}
    states, pooled = torch.randn(3, 5, 4), torch.randn(3, 8)
    c = centers - 0.5
    expected = c.pow(2).mean() + c[[0, 2, 3]].pow(2).mean() + c[[1, 4]].pow(2).mean()
    torch.testing.assert_close(pointers.loss(states, pooled, words), 10 * expected)
    pooled = torch.zeros(3, 8)
    # probes that read the centres exactly have no loss
    states = torch.zeros(3, 5, 4)
    states[words["rows"], words["columns"], :2] = c
    pointers.word.weight.data[:, :2] = torch.eye(2)
    pooled = torch.zeros(3, 8)
    pooled[:, :4] = torch.cat([c[[0, 2, 3]], torch.stack([c[1], torch.zeros(2), c[4]])], dim=1)
    pointers.pooled.weight.data[:, :6] = torch.eye(6)
    with torch.no_grad():
        assert float(pointers.loss(states, pooled, words)) < 1e-10
        # the subject's centre is read from the last two outputs; rows without a subject (NaN) are left out
        subjects = torch.tensor([[0.5, 0.5], [float("nan")] * 2, [0.75, 0.25]])
        pooled[2, 4:6] = torch.tensor([0.25, -0.25])
        assert float(pointers.loss(states, pooled, words, subjects)) < 1e-10
        subjects[0] = torch.tensor([0.6, 0.5])
        torch.testing.assert_close(pointers.loss(states, pooled, words, subjects), torch.tensor(10 * 0.01 / 4))
    empty = {"rows": torch.zeros(0, dtype=torch.long), "columns": torch.zeros(0, dtype=torch.long),
             "centers": torch.zeros(0, 2)}
    assert float(pointers.loss(states, pooled, empty)) == 0


def test_a_joint_stage_trains_every_head_on_one_encoder(tmp_path, processor, pool):
    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    stage = Stage("joint", 7, 1e-3, 4, schedule=tuple(OBJECTIVES), patch_weight=1.0, pointer_weight=1.0)
    assert stage.tasks == ("pretraining", "vqa", "vcr_q2a", "vcr_qa2r")
    folders = train_stage(stage, config, pool, processor, str(tmp_path))
    assert folders == {task: str(tmp_path / "joint" / task) for task in stage.tasks}
    encoders = [cls.from_pretrained(folders[task]).vle.state_dict() for task, cls in TASK_MODELS.items()]
    for name, weight in encoders[0].items():
        for other in encoders[1:]:
            torch.testing.assert_close(other[name], weight, msg=name)
    with pytest.raises(ValueError, match="'caption'"):
        Stage("joint", 1, 1e-3, 2, schedule=("vqa", "caption"))
    with pytest.raises(ValueError, match="VCR families \\['nearest'\\]"):
        Stage("vcr", 1, 1e-3, 2, schedule=("vcr_q2a",), vcr_families=("nearer", "nearest"))
    with pytest.raises(ValueError, match="VQA families"):
        Stage("vqa", 1, 1e-3, 2, families=("colour",))


def test_texts_sharing_a_scene_run_the_image_tower_once(processor, pool, monkeypatch):
    import vle.shapes.train as training

    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    shared = Stage("joint", 8, 1e-3, 6, schedule=("vqa", "itm", "pbc", "mlm", "mpc"), patch_weight=1.0,
                   pointer_weight=1.0, texts_per_image=3)
    alone = Stage("joint", 8, 1e-3, 6, schedule=shared.schedule, patch_weight=1.0, pointer_weight=1.0)
    torch.manual_seed(0)
    models, aux, _, _ = stage_modules(shared, config, processor, "")
    tower_batches = []
    models["pretraining"].vle.vision_model.register_forward_hook(
        lambda module, args, out: tower_batches.append(len(args[0])))
    real_batch = training._batch
    for objective in shared.schedule:
        batch, index = real_batch(objective, shared, pool, processor, np.random.default_rng(1), aux)
        assert len(index) == 6
        # MPC masks one object per text, so its texts never share an image
        assert (len(set(index)) == 2) == (objective != "mpc"), (objective, index)
        monkeypatch.setattr(training, "_batch", lambda *args: (dict(batch), index))
        tower_batches.clear()
        losses = {stage.texts_per_image: training._loss(stage, objective, models, aux, pool, processor, None, 0)
                  for stage in (shared, alone)}
        assert tower_batches == ([6, 6] if objective == "mpc" else [2, 6]), objective
        # the same losses as running the tower on every text's copy of the image
        assert losses[3].keys() == losses[1].keys()
        for name in losses[1]:
            torch.testing.assert_close(losses[3][name], losses[1][name], msg=f"{objective}: {name}")
    with pytest.raises(ValueError, match="texts_per_image 4 .* batch_size 6"):
        Stage("joint", 1, 1e-3, 6, texts_per_image=4)


def test_interrupted_stage_resumes_exactly(tmp_path, processor, pool, monkeypatch):
    import vle.shapes.train as training

    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    # the auxiliary modules' state must resume too
    stage = Stage("vqa", 6, 1e-3, 4, schedule=("vqa", "itm"), patch_weight=1.0, pointer_weight=1.0, pointer_from=3,
                  grounding_weight=1.0)
    straight = VLEForVQA.from_pretrained(train_stage(stage, config, pool, processor, str(tmp_path / "a"),
                                                     checkpoint_every=2)["vqa"])
    real_loss = training._loss

    def crash_at_step_5(stage, objective, models, aux, pool, processor, rng, step):
        if step == 5:
            raise KeyboardInterrupt
        return real_loss(stage, objective, models, aux, pool, processor, rng, step)

    monkeypatch.setattr(training, "_loss", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_stage(stage, config, pool, processor, str(tmp_path / "b"), checkpoint_every=2)
    assert (tmp_path / "b" / "vqa" / "train_state.pt").is_file()
    monkeypatch.setattr(training, "_loss", real_loss)
    resumed = VLEForVQA.from_pretrained(train_stage(stage, config, pool, processor, str(tmp_path / "b"),
                                                    checkpoint_every=2)["vqa"])
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_a_stage_goes_on_from_an_earlier_one(tmp_path, processor, pool):
    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    first = Stage("vqa-relations", 3, 1e-3, 4, families=("left_of", "above"), pointer_weight=1.0)
    then = Stage("vqa", 3, 1e-3, 4, init_from="vqa-relations")
    train_stage(first, config, pool, processor, str(tmp_path))
    relations = VLEForVQA.from_pretrained(str(tmp_path / "vqa-relations" / "vqa"))
    final = VLEForVQA.from_pretrained(train_stage(then, config, pool, processor, str(tmp_path))["vqa"])
    # three Adam steps at 1e-3 move each weight by at most about 3e-3: the second stage went on from the first
    drift = max((weight - relations.state_dict()[name]).abs().max().item()
                for name, weight in final.state_dict().items())
    assert 0 < drift < 0.01
    assert final.config.id2label == relations.config.id2label
    with pytest.raises(FileNotFoundError, match="'nowhere'"):
        train_stage(Stage("vqa-2", 1, 1e-3, 2, init_from="nowhere"), config, pool, processor, str(tmp_path))


def test_evidence_patches_mark_the_objects_an_answer_depends_on(processor, pool):
    from vle.shapes.data import evidence_patches

    batch = vqa_batch(pool, processor, np.random.default_rng(3), np.arange(6), with_evidence=True)
    assert batch["evidence_patches"].shape == (6, 64)
    assert all(row.sum() > 0 for row in batch["evidence_patches"])  # every question has evidence
    scene = pool.scenes[0]
    both = evidence_patches(scene, [0, 1])
    assert both.sum() >= max(object_patches(scene, 0).sum(), object_patches(scene, 1).sum())
    assert (both.reshape(8, 8).astype(bool) == (object_patches(scene, 0) | object_patches(scene, 1))).all()


def _gradients_averaged_over_two_processes():
    from vle.shapes import parallel

    rank, _ = parallel.world()
    module = torch.nn.ModuleDict({name: torch.nn.Linear(2, 1, bias=False) for name in ("both", "first", "neither")})
    module["both"].weight.grad = torch.full((1, 2), rank + 1.0)
    if rank == 0:
        module["first"].weight.grad = torch.tensor([[4.0, -2.0]])
    losses = parallel.average(module, {"b": torch.tensor(rank * 2.0), "a": torch.tensor(1.0)})
    return ({name: None if p.grad is None else p.grad.tolist() for name, p in module.named_parameters()},
            {name: float(value) for name, value in losses.items()})


def test_processes_average_their_gradients_and_losses():
    from vle.shapes import parallel

    gradients, losses = parallel.launch(_gradients_averaged_over_two_processes, 2)
    # a parameter only one process reached gets the mean with zero for the other; one none reached keeps no gradient
    assert gradients == {"both.weight": [[1.5, 1.5]], "first.weight": [[2.0, -1.0]], "neither.weight": None}
    assert losses == {"a": 1.0, "b": 1.0}
    assert parallel.world() == (0, 1) and parallel.launch(lambda: 7, 1) == 7


def test_data_parallel_training_applies_the_mean_of_the_processes_gradients(tmp_path, processor, monkeypatch):
    import dataclasses

    import vle.shapes.train as training
    from vle.shapes import parallel

    stage = Stage("vqa", 1, 1e-3, 8, patch_weight=1.0, pointer_weight=1.0)
    recipe = training.Recipe("tiny", (stage,), pool_size=16, hidden=32, layers=RECIPES["smoke"].layers)
    train(str(tmp_path), recipe=recipe, processes=2)
    trained_in_two = VLEForVQA.from_pretrained(str(tmp_path / "vqa" / "vqa"))
    # the same step here: each process's half batch (drawn from seed, step and rank), the mean of their gradients
    config = shapes_config(len(processor.tokenizer), hidden=32, layers=recipe.layers)
    pool, half = ScenePool(0, 16), dataclasses.replace(stage, batch_size=4)
    gradients = []
    for rank in (0, 1):
        monkeypatch.setattr(parallel, "world", lambda rank=rank: (rank, 2))
        torch.manual_seed(0)
        models, aux, trained, _ = stage_modules(half, config, processor, "")
        losses = training._loss(half, "vqa", models, aux, pool, processor, np.random.default_rng([0, 0, rank]), 0)
        sum(losses.values()).backward()
        gradients.append({name: p.grad for name, p in trained.named_parameters() if p.grad is not None})
    assert gradients[0]["vqa.vqa_classifier.3.weight"].ne(gradients[1]["vqa.vqa_classifier.3.weight"]).any()
    torch.manual_seed(0)
    models, _, trained, optimizer = stage_modules(half, config, processor, "")
    for name, param in trained.named_parameters():
        if name in gradients[0] or name in gradients[1]:
            param.grad = sum(g.get(name, torch.zeros_like(param)) for g in gradients) / 2
    torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
    optimizer.step()
    for name, weight in models["vqa"].state_dict().items():
        torch.testing.assert_close(trained_in_two.state_dict()[name], weight, msg=name)


def test_data_parallel_training_refuses_batches_that_do_not_split(tmp_path):
    from vle.shapes.train import Recipe, default_processes, share_of_batch

    vcr = Stage("vcr", 1, 1e-3, 8, schedule=("vcr_q2a",))
    assert share_of_batch(vcr, 2).batch_size == 4
    with pytest.raises(ValueError, match="batch_size 8 does not split over 4 processes .*VCR items"):
        share_of_batch(vcr, 4)
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        train(str(tmp_path), recipe="full", processes=3)
    with pytest.raises(ValueError, match="processes must be at least 1"):
        train(str(tmp_path), recipe="full", processes=0)
    assert 1 <= default_processes("full") <= 8
    assert default_processes("smoke") == 1  # its batch of 4 holds a single VCR item
    # an error in a process stops the run and names the problem
    broken = Recipe("broken", (Stage("vqa", 1, 1e-3, 4, init_from="nowhere"),), pool_size=8, hidden=32,
                    layers=RECIPES["smoke"].layers)
    with pytest.raises(Exception, match="'nowhere'"):
        train(str(tmp_path / "broken"), recipe=broken, processes=2)


def test_smoke_recipe_writes_hfl_layout_checkpoints(tmp_path):
    timings = train(str(tmp_path), recipe="smoke")
    assert set(timings) >= {"joint", "vqa", "vcr", "total"}
    models = run_models(str(tmp_path))
    assert models == {"pretraining": str(tmp_path / "joint" / "pretraining"), "vqa": str(tmp_path / "vqa" / "vqa"),
                      "vcr_q2a": str(tmp_path / "vcr" / "vcr_q2a"), "vcr_qa2r": str(tmp_path / "joint" / "vcr_qa2r")}
    for folder in models.values():
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in Path(folder).iterdir()}
    assert VLEForVQA.from_pretrained(models["vqa"]).config.id2label == dict(enumerate(ANSWERS))
    with pytest.raises(FileNotFoundError, match="models.json"):
        run_models(str(tmp_path / "joint"))


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
    # A regression guard: on the full evaluation (200 scenes) the shipped model measured 0.992 non-relational and
    # 0.967 relational (0.990 / 0.972 on 1,000 other scenes); 40 other scenes leave room for sampling noise.
    assert nonrelational >= 0.95, by_family
    assert relational >= 0.9, by_family
    assert by_family["left_of"] >= 0.9 and by_family["above"] >= 0.9, by_family


@NOT_SHIPPED
def test_shipped_q2a_model_binds_its_tags_and_compares_distances():
    """The shipped Q->A model on held-out 'nearer' items: each tag word's first-layer attention lies on its own box
    (0.998 measured; 0.016 before the tag losses), and the model picks the nearer of two tagged objects (0.85 on 400
    scenes; chance, 0.47, before)."""
    from vle import VLEForVCRQ2A
    from vle.explain.recorder import Recorder
    from vle.processing_vle import VLEProcessor
    from vle.shapes.auxiliary import tag_boxes

    model = VLEForVCRQ2A.from_pretrained("vle-tiny-shapes-vcr-q2a").eval()
    processor = VLEProcessor.from_pretrained("vle-tiny-shapes-vcr-q2a")
    pool = ScenePool(5_000_000, 80)
    index = np.array([i for i, scene in enumerate(pool.scenes) if len(scene.objects) >= 4])
    batch = vcr_batch(pool, processor, np.random.default_rng(5), index, families=("nearer",))
    labels = batch.pop("labels")
    with Recorder(model, attentions=("fusion",), only=["fusion.text.0.cross_attention"]) as recorder, \
            torch.inference_mode():
        logits = model(**batch).logits
    attention = recorder["fusion.text.0.cross_attention"]
    tags = tag_boxes(batch["extend_token_type_ids"], attention.shape[-1])
    on_own_box = attention[tags["rows"], :, tags["columns"], tags["boxes"]].mean(-1)  # head mean per tag word
    assert len(index) >= 30 and float(on_own_box.mean()) > 0.9, float(on_own_box.mean())
    accuracy = float((logits.argmax(-1) == labels).double().mean())
    assert accuracy >= 0.7, accuracy  # a guard with room for the sampling noise of ~50 items


@pytest.mark.parametrize("processes", [1, 2])
def test_training_time_benchmark_projects_every_stage(processes):
    """benchmarks/bench_train.py times the real training step of each stage (from the shipped checkpoints where a
    stage starts from an earlier one), in one process or data-parallel as training runs, and projects the recipe's
    time."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_train.py"), "--steps", "1", "--threads",
                           str(processes), "--processes", str(processes)], capture_output=True, text=True, cwd=root,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{processes} threads in {processes} process" in done.stdout
    lines = done.stdout.splitlines()
    for stage in RECIPES["full"].stages:
        assert any(line.strip().startswith(f"{stage.name} steps") for line in lines), done.stdout
    joint = RECIPES["full"].stages[0]
    assert f"joint steps {joint.pointer_from}-{joint.steps}" in done.stdout  # the pointer losses' phase is timed apart
    total = next(line for line in lines if "projected total" in line)
    assert float(total.split()[2]) > 0


def test_vcr_probe_reports_families_margins_and_tag_binding():
    """benchmarks/probe_vcr.py runs on the shipped Q->A model and prints every section; the margins it bins by are
    those the generator guarantees (no spatial item is closer than TIE_PX)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from probe_vcr import item_margin
    finally:
        sys.path.remove(str(root / "benchmarks"))
    from vle.shapes.tasks_common import TIE_PX
    from vle.shapes.tasks_vcr import make_vcr
    from vle.shapes.world import make_scene

    margins = {"nearer": [], "extreme": []}
    for seed in range(60):
        for family in margins:
            try:
                annotation, _ = make_vcr(make_scene(seed), np.random.default_rng(seed), "s.png", question_family=family)
            except ValueError:
                continue
            margins[family].append(item_margin(make_scene(seed), annotation))
    assert all(len(m) > 10 and min(m) >= TIE_PX for m in margins.values()), margins

    done = subprocess.run([sys.executable, str(root / "benchmarks" / "probe_vcr.py"), "--n", "12", "--threads", "1"],
                          capture_output=True, text=True, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for heading in ("accuracy by family", "held-out accuracy by margin", "tag binding", "nearer, link by link"):
        assert heading in done.stdout, done.stdout
    binding = done.stdout.split("tag binding")[1].splitlines()
    assert sum(line.split()[0].isdigit() for line in binding[2:4]) == 2, done.stdout  # one row per fusion layer


def test_tag_losses_read_the_real_attention_and_the_nearer_geometry(processor):
    """The binding loss recomputes, for the tag words alone, exactly the first fusion layer's text→image attention
    the model ran; the role offsets are [x] - [a] and [y] - [a] of the scene; a stage with tag_weight trains them."""
    from vle import VLEForVCRQ2A
    from vle.explain.recorder import Recorder
    from vle.shapes.auxiliary import TagLosses, last_call, tag_boxes
    from vle.shapes.data import nearer_offsets
    from vle.shapes.tasks_vcr import make_vcr

    pool = ScenePool(40, 24)  # scenes with 4+ objects are common enough for "nearer" items
    config = shapes_config(len(processor.tokenizer), hidden=32, layers=RECIPES["smoke"].layers)
    torch.manual_seed(0)
    model = VLEForVCRQ2A(config).eval()
    batch = vcr_batch(pool, processor, np.random.default_rng(0), np.arange(6), with_roles=True,
                      families=("nearer",))
    roles = batch.pop("nearer_roles")
    batch.pop("labels")
    attention = model.vle.cross_modal_text_layers[0].crossattention.self
    with last_call(attention) as inputs, \
            Recorder(model, attentions=("fusion",), only=["fusion.text.0.cross_attention"]) as recorder:
        model(**batch)
    hidden, context, mask = inputs["args"][:3]
    grid = context.shape[1] - max(len(types) for item in batch["extend_token_type_ids"] for types, _ in item)
    tags = tag_boxes(batch["extend_token_type_ids"], context.shape[1])
    assert len(tags["rows"]) > 6 * 4 * 2  # every choice names at least two objects
    real = recorder["fusion.text.0.cross_attention"][tags["rows"], :, tags["columns"], tags["boxes"]]
    with torch.no_grad():
        torch.testing.assert_close(TagLosses.own_box_attention(attention, hidden, context, mask, tags), real)
    # every tag word's box token carries the tag's token type
    for row, column, box in zip(*(tags[k].tolist() for k in ("rows", "columns", "boxes"))):
        box_types, text_types = batch["extend_token_type_ids"][row // 4][row % 4]
        assert box_types[box - grid] == text_types[column] >= 2
    # the offsets: one near and one far choice per "nearer" item, mirror images in their roles
    assert len(roles["rows"]) >= 2 and len(roles["rows"]) % 2 == 0
    offsets = roles["offsets"].view(-1, 2, 4)
    torch.testing.assert_close(offsets[:, 0, :2], offsets[:, 1, 2:])
    nearer = offsets[:, :, :2].norm(dim=-1) < offsets[:, :, 2:].norm(dim=-1)  # is x nearer to a than y is?
    assert (nearer.sum(1) == 1).all()
    annotation, _ = make_vcr(pool.scenes[0], np.random.default_rng(0), "s.png", question_family="color")
    assert nearer_offsets(pool.scenes[0], annotation, annotation["answer_choices"][0]) is None

    # trained with tag_weight, the binding loss falls
    stage = Stage("vcr", 12, 3e-3, 16, schedule=("vcr_q2a",), tag_weight=1.0, vcr_families=("nearer",))
    models, aux, trained, optimizer = stage_modules(stage, config, processor, "unused")
    losses = [train_step(stage, models, aux, trained, optimizer, pool, processor, 0, step)["tags"].item()
              for step in range(stage.steps)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
