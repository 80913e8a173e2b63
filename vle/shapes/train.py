"""Training the tiny shapes-world VLE: a tokenizer, pretraining with VLE's four objectives (ITM, PBC, MLM, MPC), then
fine-tuning for VQA, VCR Q2A and VCR QA2R. Seeded, resumable, with progress bars; checkpoints in the hfl layout.

    vle-workbench train --out runs/shapes [--recipe full|teaching] [--seed 0]

Each stage writes ``OUT/<stage>/`` (config.json with id2label, model.safetensors, processor files) and keeps
``OUT/<stage>/train_state.pt`` while it runs, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..configuration_vle import VLEConfig
from ..explain.recorder import Recorder
from ..modeling_vle import VLEForPretraining, VLEForVCRQ2A, VLEForVCRQA2R, VLEForVQA
from ..processing_vle import VLEProcessor
from .data import HELD_OUT_SEED, PRETRAINING_TASKS, ScenePool, color_token_ids, color_words, vcr_batch, vqa_batch
from .tasks import ANSWERS, MPC_CLASSES, NONRELATIONAL_FAMILIES, VQA_FAMILIES, world_corpus

IMAGE_SIZE, PATCH_SIZE = 128, 16
# ITM (one swapped word decides the label) is the slowest objective to take off: it gets two turns in five
PRETRAINING_SCHEDULE = ("itm", "pbc", "mlm", "itm", "mpc")
# the tasks a stage can train, and the model class of each
TASK_MODELS = {"pretrained": VLEForPretraining, "vqa": VLEForVQA, "vcr-q2a": VLEForVCRQ2A, "vcr-qa2r": VLEForVCRQA2R}


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    batch_size: int
    init_from: str | None = None  # an earlier stage whose encoder this one starts from
    families: tuple[str, ...] | None = None  # VQA families to draw from (None: all)
    inventory_share: float = 0.0  # VQA: share of training-only inventory questions
    # VQA: weight of an auxiliary grounding loss, a PBC head on the fused patches asked to mark the answer's evidence
    # objects. It only shapes training (the head is not shipped) and makes question-dependent families take off early.
    grounding_weight: float = 0.0
    # VQA: weight of the word-grounding losses that relational questions need (see ``_word_grounding_loss``)
    word_grounding_weight: float = 0.0
    # scale of a 2-D sine-cosine pattern added to the vision position embeddings when the stage starts; without it
    # the towers keep almost no trace of where a patch is (``benchmarks/probe_shapes.py``)
    sincos_positions: float = 0.0
    # VQA: weight of the relation loss (``_relation_loss``); needs word_grounding_weight
    relation_weight: float = 0.0

    def __post_init__(self):
        if self.relation_weight and not self.word_grounding_weight:
            raise ValueError(f"stage {self.name!r}: relation_weight reads the colour words that word grounding finds; "
                             "set word_grounding_weight too")

    @property
    def task(self) -> str:
        """What the stage trains: ``pretrained``, ``vqa``, ``vcr-q2a`` or ``vcr-qa2r``; a stage name may add a suffix
        (``vqa-relations``, ``pretrained-continued``) so that one task can be trained in several stages."""
        for task in TASK_MODELS:
            if self.name == task or self.name.startswith(task + "-"):
                return task
        raise ValueError(f"stage {self.name!r} names no task: it must start with {', '.join(TASK_MODELS)}")


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    pool_size: int = 8000
    hidden: int = 128
    layers: dict = field(default_factory=lambda: {"vision": 3, "text": 2, "fusion": 2})


RECIPES = {
    # the recipe of the shipped checkpoints
    "full": Recipe("full", (
        Stage("pretrained", 1600, 5e-4, 64),
        # relations first, on left of / above alone. A first stage adds the position pattern and builds the two links
        # the word-grounding losses ask for; the answer stays at chance all through it. A second stage, its learning
        # rate warmed up again, then learns the comparison within a few hundred steps. (On all families at once the
        # relation never takes off: the easy families win.)
        Stage("vqa-grounding", 2500, 5e-4, 64, init_from="pretrained", families=("left_of", "above"),
              grounding_weight=1.0, word_grounding_weight=1.0, sincos_positions=3.0),
        Stage("vqa-relations", 1500, 5e-4, 64, init_from="vqa-grounding", families=("left_of", "above"),
              grounding_weight=1.0, word_grounding_weight=1.0, relation_weight=1.0),
        # then every family, left of / above drawn twice as often so the relation is kept
        Stage("vqa", 4000, 5e-4, 64, init_from="vqa-relations", families=tuple(VQA_FAMILIES) + ("left_of", "above"),
              inventory_share=0.25, grounding_weight=1.0, word_grounding_weight=1.0),
        # VCR reads the same attributes as VQA: starting from the VQA encoder saves most of the work
        Stage("vcr-q2a", 600, 3e-4, 16, init_from="vqa"),
        Stage("vcr-qa2r", 600, 3e-4, 16, init_from="vqa"),
        # the four pretraining heads again, on the encoder that VQA taught to ground questions
        Stage("pretrained-continued", 600, 3e-4, 64, init_from="vqa"),
    )),
    # minutes on a laptop CPU: VQA from scratch, non-relational questions only
    "teaching": Recipe("teaching", (
        Stage("vqa", 1200, 8e-4, 48, families=NONRELATIONAL_FAMILIES, inventory_share=0.25, grounding_weight=1.0),
    ), pool_size=2000, hidden=96, layers={"vision": 2, "text": 1, "fusion": 2}),
    # seconds: for tests
    "smoke": Recipe("smoke", (
        Stage("pretrained", 8, 1e-3, 4), Stage("vqa", 8, 1e-3, 4, init_from="pretrained"),
        Stage("vcr-q2a", 4, 1e-3, 2, init_from="pretrained"), Stage("vcr-qa2r", 4, 1e-3, 2, init_from="pretrained"),
    ), pool_size=16, hidden=32, layers={"vision": 1, "text": 1, "fusion": 1}),
}


def shapes_config(vocab_size: int, hidden: int = 128, layers: dict | None = None) -> VLEConfig:
    """The tiny VLE of the shapes world: 128-pixel images in 16-pixel patches (an 8×8 grid)."""
    layers = layers or {"vision": 3, "text": 2, "fusion": 2}
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
    """Train the world's SentencePiece tokenizer (DeBERTa-v3 layout) and pair it with a 128-pixel CLIP processor."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from ..tokenization import train_sentencepiece

    tokenizer = train_sentencepiece(world_corpus(1500, seed=seed), os.path.join(out_dir, "tokenizer"),
                                    vocab_size=160, seed=seed)
    tokenizer.model_max_length = 128
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return VLEProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _model_for(stage: Stage, config: VLEConfig, out_dir: str):
    cls = TASK_MODELS[stage.task]
    if stage.init_from:
        return cls.from_pretrained(os.path.join(out_dir, stage.init_from), init_new_head=True)
    return cls(config)


def _grounding_head(stage: Stage, config: VLEConfig, out_dir: str) -> torch.nn.Module | None:
    """The auxiliary PBC head of a VQA stage, starting from the pretrained PBC head when the stage starts from one."""
    if not stage.grounding_weight:
        return None
    from safetensors.torch import load_file

    from ..modeling_vle import _sequential_head

    head = _sequential_head(config.hidden_size, config.hidden_size, 2)
    if stage.init_from:
        weights = load_file(os.path.join(out_dir, stage.init_from, "model.safetensors"))
        prefix = "pbc_classifier."
        if any(k.startswith(prefix) for k in weights):
            head.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    return head


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sine-cosine position pattern, row-major: half the channels encode the row, half the
    column, each at dim / 4 frequencies."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine pattern needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def add_sincos_positions(model, scale: float) -> None:
    """Add ``scale`` × the 2-D sine-cosine pattern to the patch position embeddings of the vision tower (not CLS)."""
    embeddings = model.base_vle.vision_model.vision_model.embeddings
    weight = embeddings.position_embedding.weight
    grid = int(round((weight.shape[0] - 1) ** 0.5))
    with torch.no_grad():
        weight[1:] += scale * sincos_positions(grid, weight.shape[1]).to(weight.dtype)


class WordGrounding(torch.nn.Module):
    """Training-only part of the word-grounding losses: the linear probe that reads an object's centre from its colour
    word's state, and the tokenizer's colour word ids (looked up once, not every step)."""

    def __init__(self, hidden_size: int, tokenizer):
        super().__init__()
        self.center = torch.nn.Linear(hidden_size, 2)
        self.relation = torch.nn.Linear(2 * hidden_size, 2)
        self.color_ids = color_token_ids(tokenizer)


def _word_grounding_loss(probe: WordGrounding, recorder, words: dict[str, torch.Tensor]) -> torch.Tensor:
    """The two links of a relational question that a VQA loss alone does not build (``benchmarks/probe_shapes.py``
    shows both missing): in the first fusion layer, the first head of each colour word's text→image attention must
    fall on the patches of the object of that colour (−log of the attention mass there), and the word's state after
    that layer must say where the object is (10 × squared error of the centre, read by a linear probe)."""
    if not len(words["rows"]):
        return torch.zeros(())
    rows, columns = words["rows"], words["columns"]
    attention = recorder["fusion.text.0.cross_attention"][rows, 0, columns, 1:1 + words["patches"].shape[1]]
    mass = (attention * words["patches"]).sum(-1)
    centers = probe.center(recorder["fusion.text.0.hidden"][rows, columns])
    return -torch.log(mass + 1e-4).mean() + 10 * F.mse_loss(centers, words["centers"] - 0.5)


def _relation_loss(probe: WordGrounding, pooled: torch.Tensor, words: dict[str, torch.Tensor]) -> torch.Tensor:
    """For each question that names two objects by colour, the pooled pair the answer head reads must say where the
    first lies from the second: 10 × squared error of the centre difference (x, y), read by a linear probe. The yes /
    no answer of left of / above gives no useful gradient while the model is at chance (the sign of a difference it
    has not formed yet); the difference itself does, and the answer head then only needs its sign."""
    rows = words["rows"]
    if len(rows) < 2:
        return torch.zeros(())
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]  # the first colour word of each row
    second = torch.zeros_like(first)
    second[1:] = first[:-1] & (rows[1:] == rows[:-1])  # the word right after a row's first, in the same row
    if not second.any():
        return torch.zeros(())
    second_at = second.nonzero().squeeze(1)
    offsets = words["centers"][second_at - 1] - words["centers"][second_at]
    return 10 * F.mse_loss(probe.relation(pooled[rows[second_at]]), offsets)


def _loss(stage: Stage, model, pool: ScenePool, processor, rng, step: int,
          grounding: torch.nn.Module | None = None, words: WordGrounding | None = None) -> tuple[torch.Tensor, str]:
    if stage.task == "pretrained":
        task = PRETRAINING_SCHEDULE[step % len(PRETRAINING_SCHEDULE)]
        batch = PRETRAINING_TASKS[task](pool, processor, rng, pool.sample(rng, stage.batch_size))
        return model(task=task, **batch).loss, task
    if stage.task == "vqa":
        index = pool.sample(rng, stage.batch_size)
        batch = vqa_batch(pool, processor, rng, index, families=stage.families,
                          inventory_share=stage.inventory_share, with_evidence=grounding is not None)
        evidence = batch.pop("evidence_patches", None)
        if words is None:
            out = model(**batch)
            loss = out.loss
        else:
            with Recorder(model, attentions=("fusion",), hidden=True, only=["fusion.text.0.*"], detach=False) as rec:
                out = model(**batch)
            targets = color_words(pool, words.color_ids, index, batch["input_ids"])
            loss = out.loss + stage.word_grounding_weight * _word_grounding_loss(words, rec, targets)
            if stage.relation_weight:
                loss = loss + stage.relation_weight * _relation_loss(words, out.vle_output.pooler_output, targets)
        if grounding is not None:
            logits = grounding(out.vle_output.image_embeds[:, 1:1 + evidence.shape[1]])  # (batch, patches, 2)
            loss = loss + stage.grounding_weight * F.cross_entropy(logits.reshape(-1, 2), evidence.reshape(-1))
        return loss, "vqa"
    task = "q2a" if stage.task == "vcr-q2a" else "qa2r"
    return model(**vcr_batch(pool, processor, rng, pool.sample(rng, stage.batch_size), task=task)).loss, task


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_stage(stage: Stage, config: VLEConfig, pool: ScenePool, processor, out_dir: str, seed: int = 0,
                checkpoint_every: int = 200) -> str:
    """Train one stage (resuming from its train_state.pt if present); returns the folder of the final model."""
    final = os.path.join(out_dir, stage.name)
    state_path = os.path.join(final, "train_state.pt")
    if os.path.isfile(os.path.join(final, "config.json")) and not os.path.isfile(state_path):
        return final  # finished earlier
    torch.manual_seed(seed)
    model = _model_for(stage, config, out_dir).train()
    if stage.sincos_positions:
        add_sincos_positions(model, stage.sincos_positions)  # a resumed run overwrites it with its saved state
    grounding = _grounding_head(stage, config, out_dir)
    words = WordGrounding(config.hidden_size, processor.tokenizer) if stage.word_grounding_weight else None
    trained = torch.nn.ModuleList([model] + [m for m in (grounding, words) if m is not None])
    optimizer = torch.optim.AdamW(trained.parameters(), lr=stage.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, stage.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, stage.steps, warmup))
    start = 0
    if os.path.isfile(state_path):
        state = torch.load(state_path, weights_only=False)
        trained.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
    os.makedirs(final, exist_ok=True)
    smoothed: dict[str, float] = {}
    bar = tqdm(range(start, stage.steps), desc=f"train {stage.name}", initial=start, total=stage.steps)
    for step in bar:
        rng = np.random.default_rng([seed, step])  # the batch is a function of (seed, step): resumes exactly
        loss, task = _loss(stage, model, pool, processor, rng, step, grounding, words)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = loss.item()
        smoothed[task] = 0.95 * smoothed.get(task, value) + 0.05 * value
        bar.set_postfix({k: f"{v:.3f}" for k, v in smoothed.items()})
        if (step + 1) % checkpoint_every == 0 and step + 1 < stage.steps:
            torch.save({"model": trained.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step + 1}, state_path)
    model.eval().save_pretrained(final)
    processor.save_pretrained(final)
    if os.path.isfile(state_path):
        os.remove(state_path)
    return final


def stage_dir(run_dir: str, task: str) -> str:
    """The folder of a run's final model for ``task`` (pretrained, vqa, vcr-q2a, vcr-qa2r): its ``-continued`` stage
    when the recipe has one."""
    continued = os.path.join(run_dir, f"{task}-continued")
    return continued if os.path.isfile(os.path.join(continued, "config.json")) else os.path.join(run_dir, task)


def train(out_dir: str, recipe: str = "full", seed: int = 0, threads: int | None = None) -> dict[str, float]:
    """Run a whole recipe into ``out_dir``; returns seconds per stage."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if threads:
        torch.set_num_threads(threads)
    plan = RECIPES[recipe]
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    processor = build_processor(out_dir, seed)
    config = shapes_config(len(processor.tokenizer), plan.hidden, plan.layers)
    pool = ScenePool(seed * plan.pool_size, plan.pool_size, IMAGE_SIZE, progress=True)
    assert seed * plan.pool_size + plan.pool_size <= HELD_OUT_SEED, "training scenes must stay below the held-out seeds"
    timings["data"] = time.perf_counter() - start
    for stage in plan.stages:
        began = time.perf_counter()
        train_stage(stage, config, pool, processor, out_dir, seed)
        timings[stage.name] = time.perf_counter() - began
    timings["total"] = time.perf_counter() - start
    return timings
