"""Training the tiny shapes-world VLE: a tokenizer, then stages that train one shared encoder on any mix of VLE's
objectives (pretraining: ITM, PBC, MLM, MPC; fine-tuning: VQA, VCR Q2A, VCR QA2R). Seeded, resumable, with progress
bars; checkpoints in the hfl layout.

    vle-workbench train --out runs/shapes [--recipe full|teaching] [--seed 0]

A stage writes one model per task it trains, ``OUT/<stage>/<task>/`` (config.json with id2label, model.safetensors,
processor files), all on the same encoder, and keeps ``OUT/<stage>/train_state.pt`` while it runs, so an interrupted
run picks up where it stopped. ``OUT/models.json`` names each task's final folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from ..configuration_vle import VLEConfig
from ..modeling_vle import HEADS
from ..processing_vle import VLEProcessor
from ..tokenization import train_sentencepiece
from . import parallel
from .auxiliary import ObjectPointers, PatchProbe, TagLosses, grounding_head, grounding_loss, last_call, tag_boxes
from .data import HELD_OUT_SEED, PRETRAINING_TASKS, ScenePool, color_words, vcr_batch, vqa_batch
from .tasks import ANSWERS, MPC_CLASSES, NONRELATIONAL_FAMILIES, VCR_FAMILIES, VQA_FAMILIES, world_corpus

IMAGE_SIZE, PATCH_SIZE = 128, 16
TINY_LAYERS = {"vision": 3, "text": 2, "fusion": 2}  # transformer layers of each tower and of the fusion
# the models a stage can train, and the objectives each one's heads learn
TASK_MODELS = {task: HEADS[task] for task in ("pretraining", "vqa", "vcr_q2a", "vcr_qa2r")}
OBJECTIVES = {"itm": "pretraining", "pbc": "pretraining", "mlm": "pretraining", "mpc": "pretraining", "vqa": "vqa",
              "vcr_q2a": "vcr_q2a", "vcr_qa2r": "vcr_qa2r"}
LEGACY_TASK_NAMES = {"pretrained": "pretraining", "vcr-q2a": "vcr_q2a", "vcr-qa2r": "vcr_qa2r"}  # runs made before
VCR_CHOICES = 4  # a VCR item is four texts on one image: its batches hold a quarter as many items


@dataclass(frozen=True)
class Stage:
    """``schedule`` lists objectives (keys of ``OBJECTIVES``); step ``s`` trains ``schedule[s % len(schedule)]``, so
    repeating an objective gives it more turns. Every model of the stage shares one encoder."""

    name: str
    steps: int
    lr: float
    batch_size: int
    schedule: tuple[str, ...] = ("vqa",)
    init_from: str | None = None  # an earlier stage whose encoder (and heads, where it has them) this one starts from
    families: tuple[str, ...] | None = None  # VQA families to draw from (None: all)
    vcr_families: tuple[str, ...] | None = None  # VCR families to draw from (None: any that applies)
    inventory_share: float = 0.0  # VQA: share of training-only inventory questions
    # weights of the training-only losses of ``auxiliary``: the dense patch loss on the image tower, the pointer
    # losses of texts that name objects by colour (VQA and ITM), and the evidence grounding of VQA answers
    patch_weight: float = 0.0
    pointer_weight: float = 0.0
    grounding_weight: float = 0.0
    tag_weight: float = 0.0  # VCR: each tag word's first-layer attention on its box, and the "nearer" role offsets
    # the step from which the pointer losses are on: from the start they crowd out every family that needs no
    # position; once the patch probe has made the image tower object-centric they teach left of / above quickly and
    # cost the other families nothing (docs/shapes-world.md)
    pointer_from: int = 0
    # texts drawn per scene in the batches of VQA, ITM, PBC and MLM (``batch_size // texts_per_image`` scenes): the
    # image tower, the largest part of a step, then runs once per scene and its features are shared by the texts.
    # MPC (each text masks its own object) and VCR (four choices per scene already) ignore it. No recipe uses it: it
    # makes a run faster, but the families that compare distances then stall (they seem to need many scenes per
    # batch, not only many questions; docs/shapes-world.md)
    texts_per_image: int = 1

    def __post_init__(self):
        unknown = [o for o in self.schedule if o not in OBJECTIVES]
        if unknown or not self.schedule:
            raise ValueError(f"stage {self.name!r}: unknown objectives {unknown or '(none given)'}; "
                             f"choose from {', '.join(OBJECTIVES)}")
        for kind, given, known in (("VQA", self.families, VQA_FAMILIES), ("VCR", self.vcr_families, VCR_FAMILIES)):
            unknown = [f for f in given or () if f not in known]
            if unknown or given == ():
                raise ValueError(f"stage {self.name!r}: unknown {kind} families {unknown or '(none given)'}; "
                                 f"choose from {', '.join(known)}")
        if self.texts_per_image < 1 or self.batch_size % self.texts_per_image:
            raise ValueError(f"stage {self.name!r}: texts_per_image {self.texts_per_image} must be at least 1 and "
                             f"divide batch_size {self.batch_size}")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The models the stage trains and writes, in ``TASK_MODELS`` order."""
        return tuple(t for t in TASK_MODELS if t in {OBJECTIVES[o] for o in self.schedule})


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    pool_size: int = 8000
    hidden: int = 128
    layers: dict = field(default_factory=lambda: dict(TINY_LAYERS))


def weighted_families(weights: dict[str, int]) -> tuple[str, ...]:
    """Every VQA family once, and ``weights[f]`` times where given: a stage draws uniformly from the tuple."""
    return tuple(f for f in VQA_FAMILIES for _ in range(weights.get(f, 1)))


# The relational families that need an argmin over distances (nearest, farthest, nearest colour) and counting by
# shape (same shape) learn slowly while the image tower is still becoming object-centric, and stall in the joint
# stage. Drawn this often in a short stage at its end, at a lower learning rate, they climb while the other families
# keep their accuracy (docs/shapes-world.md).
FINISH_FAMILIES = weighted_families({"nearest": 2, "farthest": 4, "nearest_color": 3, "same_shape": 3})

# "Is [a] nearer to [b] or to [c] ?" compares three tagged objects, which needs each tag bound to its box in the first
# fusion layer; the tag losses teach that, and the comparison then needs these items often (half of them)
TAG_FAMILIES = ("color", "shape", "extreme", "nearer", "nearer", "nearer")

RECIPES = {
    # the recipe of the shipped checkpoints: every objective on one encoder, VQA in 7 turns of 16, ITM in 3, Q2A in 2;
    # then VQA (5 turns of 8, the slow relational families drawn more often), ITM (2) and VCR Q2A (1) finish together
    # (the ITM turns keep the pretraining heads in step with the encoder the finish changes); then VCR Q2A alone, and
    # VCR Q2A with the tag losses. Why each stage exists: docs/shapes-world.md
    "full": Recipe("full", (
        Stage("joint", 9000, 5e-4, 64, schedule=("vqa", "itm", "vqa", "vcr_q2a", "vqa", "itm", "vqa", "pbc", "vqa",
                                                 "vcr_q2a", "vqa", "itm", "vqa", "mlm", "vcr_qa2r", "mpc"),
              patch_weight=1.0, pointer_weight=1.0, pointer_from=4000),
        Stage("finish", 4400, 3e-4, 64, schedule=("vqa", "itm", "vqa", "vqa", "vcr_q2a", "vqa", "itm", "vqa"),
              init_from="joint", families=FINISH_FAMILIES, patch_weight=1.0, pointer_weight=1.0),
        # VCR Q2A alone on its own copy of the finished encoder, so the other models keep theirs: it lifts the
        # "which object is the <extreme> ?" items; "is [a] nearer to [b] or to [c] ?" needs the next stage
        Stage("vcr", 800, 2e-4, 64, schedule=("vcr_q2a",), init_from="finish"),
        # Left alone, a tag finds its box only in the last fusion layer, too late to compare tagged objects, and
        # "nearer" stays at chance; the tag losses bind every tag in the first layer, and the comparison then needs
        # the longer stage
        Stage("vcr-tags", 2000, 5e-4, 64, schedule=("vcr_q2a",), init_from="vcr", tag_weight=1.0,
              vcr_families=TAG_FAMILIES),
    )),
    # minutes on a laptop CPU: VQA from scratch, non-relational questions only
    "teaching": Recipe("teaching", (
        Stage("vqa", 2200, 1e-3, 64, families=NONRELATIONAL_FAMILIES, patch_weight=1.0),
    ), pool_size=4000),
    # seconds: for tests
    "smoke": Recipe("smoke", (
        Stage("joint", 14, 1e-3, 4, schedule=tuple(OBJECTIVES), patch_weight=1.0, pointer_weight=1.0, pointer_from=7),
        Stage("vqa", 4, 1e-3, 4, init_from="joint", grounding_weight=1.0),
        Stage("vcr", 4, 1e-3, 8, schedule=("vcr_q2a",), init_from="vqa", tag_weight=1.0, vcr_families=("nearer",)),
    ), pool_size=16, hidden=32, layers={"vision": 1, "text": 1, "fusion": 1}),
}


def shapes_config(vocab_size: int, hidden: int = 128, layers: dict | None = None) -> VLEConfig:
    """The tiny VLE of the shapes world: 128-pixel images in 16-pixel patches (an 8×8 grid)."""
    layers = layers or TINY_LAYERS
    heads = max(1, hidden // 32)
    text = dict(model_type="deberta-v2", vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers["text"],
                num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=128,
                relative_attention=True, position_buckets=32, norm_rel_ebd="layer_norm", share_att_key=True,
                pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_biased_input=False,
                type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    vision = dict(model_type="clip_vision_model", hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers["vision"], num_attention_heads=heads, image_size=IMAGE_SIZE,
                  patch_size=PATCH_SIZE, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return VLEConfig(text_config=text, vision_config=vision, hidden_size=hidden, num_hidden_layers=layers["fusion"],
                     num_attention_heads=heads, intermediate_size=2 * hidden, num_token_types=8,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, mpc_labels=list(MPC_CLASSES),
                     initializer_range=0.05,  # sharper initial attention than BERT's 0.02 helps a model this small
                     id2label=dict(enumerate(ANSWERS)))


def build_processor(out_dir: str, seed: int = 0) -> VLEProcessor:
    """Train the world's SentencePiece tokenizer (DeBERTa-v3 layout) and pair it with a 128-pixel CLIP processor.

    The tokenizer is word-level: every word of the world is one token (a unigram model of this small vocabulary split
    'what' into three pieces and 'above' into four, which a model this small must first learn to put together), and
    a word the world never uses is [UNK]."""

    tokenizer = train_sentencepiece(world_corpus(1500, seed=seed), os.path.join(out_dir, "tokenizer"),
                                    vocab_size=100, seed=seed, model_type="word")
    tokenizer.model_max_length = 128
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return VLEProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _models_for(stage: Stage, config: VLEConfig, out_dir: str) -> dict[str, torch.nn.Module]:
    """One model per task of the stage, all on one encoder (the first model's)."""
    models = {}
    for task in stage.tasks:
        if stage.init_from:
            models[task] = TASK_MODELS[task].from_pretrained(_source(out_dir, stage.init_from, task),
                                                             init_new_head=True)
        else:
            models[task] = TASK_MODELS[task](config)
    # the pretraining model comes first when present: its MLM decoder is tied to its own encoder's word embeddings
    shared = next(iter(models.values())).vle
    for model in models.values():
        model.vle = shared
    return models


def _source(out_dir: str, stage: str, task: str) -> str:
    """The folder of ``stage``'s model for ``task``, or of any of its models when it did not train that task (a new
    head then starts on its encoder)."""
    folders = [os.path.join(out_dir, stage, t) for t in (task, *TASK_MODELS)]
    found = [f for f in folders if os.path.isfile(os.path.join(f, "config.json"))]
    if not found:
        raise FileNotFoundError(f"stage {stage!r} has no finished model in {os.path.join(out_dir, stage)}: "
                                "train it first (init_from must name an earlier stage)")
    return found[0]


class _Auxiliary(torch.nn.Module):
    """The training-only modules a stage's weights ask for (see ``auxiliary``)."""

    def __init__(self, stage: Stage, config: VLEConfig, processor, out_dir: str):
        super().__init__()
        self.patches = PatchProbe(config.vision_config.hidden_size) if stage.patch_weight else None
        self.pointers = ObjectPointers(config.hidden_size, processor.tokenizer) if stage.pointer_weight else None
        self.grounding = None
        if stage.grounding_weight:
            weights = None
            if stage.init_from:  # start from the pretrained PBC head when the earlier stage has one
                weights = load_file(os.path.join(_source(out_dir, stage.init_from, "pretraining"), "model.safetensors"))
            self.grounding = grounding_head(config.hidden_size, weights)
        self.tags = TagLosses(config.hidden_size) if stage.tag_weight else None


def _texts_per_image(stage: Stage, objective: str) -> int:
    return 1 if objective == "mpc" or objective.startswith("vcr_") else stage.texts_per_image


def _batch(objective: str, stage: Stage, pool: ScenePool, processor, rng, aux: _Auxiliary) -> tuple[dict, np.ndarray]:
    """A batch of ``objective`` and the pool index of each of its rows; a scene's rows are adjacent."""
    if objective.startswith("vcr_"):
        index = pool.sample(rng, max(1, stage.batch_size // VCR_CHOICES))
        return vcr_batch(pool, processor, rng, index, task=objective.removeprefix("vcr_"), patch_size=PATCH_SIZE,
                         with_roles=aux.tags is not None and objective == "vcr_q2a",
                         families=stage.vcr_families), index
    shared = _texts_per_image(stage, objective)
    index = np.repeat(pool.sample(rng, stage.batch_size // shared), shared)
    if objective in PRETRAINING_TASKS:
        return PRETRAINING_TASKS[objective](pool, processor, rng, index), index
    return vqa_batch(pool, processor, rng, index, families=stage.families, inventory_share=stage.inventory_share,
                     with_evidence=aux.grounding is not None, patch_size=PATCH_SIZE,
                     with_subjects=aux.pointers is not None), index


def _loss(stage: Stage, objective: str, models: dict, aux: _Auxiliary, pool: ScenePool, processor, rng, step: int
          ) -> dict[str, torch.Tensor]:
    """The losses of one step of ``objective``: its own, and the auxiliary ones that apply to it."""
    model = models[OBJECTIVES[objective]]
    batch, index = _batch(objective, stage, pool, processor, rng, aux)
    evidence, subjects = batch.pop("evidence_patches", None), batch.pop("subject_centers", None)
    roles = batch.pop("nearer_roles", None)
    losses = {}
    shared = _texts_per_image(stage, objective)
    scenes = index[::shared]  # one image per scene: the model repeats its features for the scene's texts
    batch["pixel_values"] = batch["pixel_values"][::shared]
    # MPC must see its masked pixels, so the patch loss skips it
    if aux.patches is not None and objective != "mpc":
        features = model.vle.get_image_features(batch.pop("pixel_values"))  # (scenes, 1 + patches, Hv)
        batch["image_features"] = features
        losses["patches"] = stage.patch_weight * aux.patches.loss(features[:, 1:], pool.patch_truth(scenes, PATCH_SIZE))
    kwargs = {"task": objective} if objective in PRETRAINING_TASKS else {}
    pointers = aux.pointers if objective in ("vqa", "itm") and step >= stage.pointer_from else None
    # skip the token states no head reads; but the pointer and tag losses read the first fusion layer, which must
    # then not be the last one, and the grounding loss reads the fused patch states
    first_layer_read = (pointers is not None or aux.tags is not None) and len(model.vle.cross_modal_text_layers) == 1
    if model.reads_pooled_only(kwargs.get("task")) and evidence is None and not first_layer_read:
        kwargs["pooled_only"] = True
    if aux.tags is not None and objective.startswith("vcr_"):
        # the first fusion layer's text→image attention, recomputed for the tag words from its inputs
        attention = model.vle.cross_modal_text_layers[0].crossattention.self
        with last_call(attention) as call:
            out = model(**kwargs, **batch)
        hidden, context, context_mask = call["args"][:3]
        tags = tag_boxes(batch["extend_token_type_ids"], context.shape[1])
        losses["tags"] = stage.tag_weight * aux.tags.binding(attention, hidden, context, context_mask, tags)
        if roles is not None:
            losses["tags"] = losses["tags"] + stage.tag_weight * aux.tags.role_loss(out.vle_output.pooler_output,
                                                                                      roles)
    elif pointers is None:
        out = model(**kwargs, **batch)
    else:
        with last_call(model.vle.cross_modal_text_layers[0]) as call:  # the text stream after the first layer
            out = model(**kwargs, **batch)
        words = color_words(pool, pointers.color_ids, index, batch["input_ids"], PATCH_SIZE)
        losses["pointers"] = stage.pointer_weight * pointers.loss(call["output"][0],
                                                                   out.vle_output.pooler_output, words, subjects)
    if evidence is not None:
        losses["grounding"] = stage.grounding_weight * grounding_loss(aux.grounding, out.vle_output.image_embeds,
                                                                      evidence)
    losses[objective] = out.loss
    return losses


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def stage_modules(stage: Stage, config: VLEConfig, processor, out_dir: str):
    """(models by task, auxiliary modules, everything trained as one module, its AdamW) for a stage, in training mode;
    an ``init_from`` stage starts from ``out_dir/<init_from>/``."""
    models = _models_for(stage, config, out_dir)
    aux = _Auxiliary(stage, config, processor, out_dir)
    trained = torch.nn.ModuleDict({**{t.replace("-", "_"): m.train() for t, m in models.items()}, "aux": aux})
    # fused: one kernel over all parameters, much faster than the per-parameter loop on a model this small
    optimizer = torch.optim.AdamW(trained.parameters(), lr=stage.lr, betas=(0.9, 0.98), weight_decay=0.01, fused=True)
    return models, aux, trained, optimizer


def train_step(stage: Stage, models: dict, aux: _Auxiliary, trained: torch.nn.Module, optimizer, pool: ScenePool,
               processor, seed: int, step: int) -> dict[str, torch.Tensor]:
    """One optimizer step of ``stage`` at ``step`` (its objective is ``schedule[step % len(schedule)]``); returns
    the losses. The batch is a function of (seed, step), so a resumed run repeats it exactly. In a parallel run
    (``parallel``) ``stage`` holds this process's share of the batch, drawn from (seed, step, rank), and the
    gradients and the returned losses are the processes' mean."""
    rank, processes = parallel.world()
    rng = np.random.default_rng([seed, step] if processes == 1 else [seed, step, rank])
    losses = _loss(stage, stage.schedule[step % len(stage.schedule)], models, aux, pool, processor, rng, step)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    losses = parallel.average(trained, losses)
    torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
    optimizer.step()
    return losses


def train_stage(stage: Stage, config: VLEConfig, pool: ScenePool, processor, out_dir: str, seed: int = 0,
                checkpoint_every: int = 200) -> dict[str, str]:
    """Train one stage (resuming from its train_state.pt if present); returns the folder of each task's model."""
    stage_root = os.path.join(out_dir, stage.name)
    folders = {task: os.path.join(stage_root, task) for task in stage.tasks}
    state_path = os.path.join(stage_root, "train_state.pt")
    if all(os.path.isfile(os.path.join(f, "config.json")) for f in folders.values()) and not os.path.isfile(state_path):
        return folders  # finished earlier
    torch.manual_seed(seed)
    main = parallel.is_main()
    stage = share_of_batch(stage, parallel.world()[1])
    models, aux, trained, optimizer = stage_modules(stage, config, processor, out_dir)
    warmup = max(1, stage.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, stage.steps, warmup))
    start = 0
    if os.path.isfile(state_path):
        state = torch.load(state_path, weights_only=False)
        trained.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
    parallel.broadcast_parameters(trained)
    os.makedirs(stage_root, exist_ok=True)
    smoothed: dict[str, float] = {}
    bar = tqdm(range(start, stage.steps), desc=f"train {stage.name}", initial=start, total=stage.steps,
               disable=not main)
    for step in bar:
        losses = train_step(stage, models, aux, trained, optimizer, pool, processor, seed, step)
        scheduler.step()
        for name, loss in losses.items():
            value = loss.item()
            smoothed[name] = 0.95 * smoothed.get(name, value) + 0.05 * value
        bar.set_postfix({k: f"{v:.3f}" for k, v in smoothed.items()})
        if main and (step + 1) % checkpoint_every == 0 and step + 1 < stage.steps:
            torch.save({"model": trained.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step + 1}, state_path)
    if main:
        for task, model in models.items():
            model.eval().save_pretrained(folders[task])
            processor.save_pretrained(folders[task])
        if os.path.isfile(state_path):
            os.remove(state_path)
    parallel.barrier()  # the next stage starts from these folders
    return folders


def share_of_batch(stage: Stage, processes: int) -> Stage:
    """``stage`` with each of ``processes`` processes' share of its batch; a clear error when it does not split."""
    if processes == 1:
        return stage
    per_item = VCR_CHOICES if any(o.startswith("vcr_") for o in stage.schedule) else 1
    if stage.batch_size % (processes * per_item * stage.texts_per_image):
        raise ValueError(f"stage {stage.name!r}: batch_size {stage.batch_size} does not split over {processes} "
                         f"processes (each share must hold whole {'VCR items of 4 texts' if per_item > 1 else 'scenes'}"
                         f" and a multiple of texts_per_image {stage.texts_per_image}); use fewer processes")
    return dataclasses.replace(stage, batch_size=stage.batch_size // processes)


def run_models(run_dir: str) -> dict[str, str]:
    """The final model folder of each task a training run produced (from its ``models.json``)."""
    manifest = os.path.join(run_dir, "models.json")
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"{run_dir} holds no finished training run (no models.json): "
                                "run `vle-workbench train --out` into it first")
    with open(manifest) as handle:
        return {LEGACY_TASK_NAMES.get(task, task): os.path.join(run_dir, folder)
                for task, folder in json.load(handle).items()}


def train(out_dir: str, recipe: str | Recipe = "full", seed: int = 0, threads: int | None = None,
          processes: int = 1) -> dict[str, float]:
    """Run a whole recipe (a name in ``RECIPES``, or a ``Recipe``) into ``out_dir``; returns seconds per stage.
    ``processes`` > 1 trains data-parallel (``parallel``: each process takes its share of every batch, on
    ``threads // processes`` threads)."""
    if not isinstance(recipe, Recipe):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    for stage in recipe.stages:
        share_of_batch(stage, processes)
    threads = max(1, (threads or torch.get_num_threads()) // processes) if processes > 1 or threads else None
    return parallel.launch(_run, processes, out_dir, recipe, seed, threads)


def default_processes(recipe: str, limit: int = 8) -> int:
    """One process per available core (at most ``limit``, say the threads asked for), as many as every stage's batch
    splits into."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for processes in range(min(cores, limit), 1, -1):
        try:
            for stage in RECIPES[recipe].stages:
                share_of_batch(stage, processes)
            return processes
        except ValueError:
            continue
    return 1


def _run(out_dir: str, plan: Recipe, seed: int, threads: int | None) -> dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    main = parallel.is_main()
    if not main:  # the first process reports for all
        parallel.quiet()
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # every process trains the same tokenizer; the first keeps its files
        processor = build_processor(out_dir if main else scratch, seed)
    config = shapes_config(len(processor.tokenizer), plan.hidden, plan.layers)
    pool = ScenePool(seed * plan.pool_size, plan.pool_size, IMAGE_SIZE, progress=main)
    assert seed * plan.pool_size + plan.pool_size <= HELD_OUT_SEED, "training scenes must stay below the held-out seeds"
    timings["data"] = time.perf_counter() - start
    final = {}
    for stage in plan.stages:
        began = time.perf_counter()
        for task, folder in train_stage(stage, config, pool, processor, out_dir, seed).items():
            final[task] = os.path.relpath(folder, out_dir)  # a later stage's model of a task replaces an earlier one
        timings[stage.name] = time.perf_counter() - began
    if main:
        with open(os.path.join(out_dir, "models.json"), "w") as handle:
            json.dump(final, handle, indent=2)
    timings["total"] = time.perf_counter() - start
    return timings
