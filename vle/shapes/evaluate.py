"""Held-out evaluation of the shapes-world models: ``vle-workbench evaluate [--seed S] [--n N] [--json]``.

Scenes come from seeds ``S .. S+N-1`` (training never uses seeds at or above 1,000,000). Per scene: one question of
every applicable VQA family, one true and one false caption (ITM), one phrase (PBC), one hidden object (MPC), and one
VCR item (Q2A and QA2R).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hub import resolve_model_path
from ..modeling_vle import VLEForPretraining, VLEForVCRQ2A, VLEForVCRQA2R, VLEForVQA
from ..pipelines import to_model
from ..processing_vle import VLEProcessor
from .data import HELD_OUT_SEED, ScenePool, mpc_batch, normalize, pbc_batch, vcr_batch
from .tasks import (NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, VQA_FAMILIES, make_caption, make_negative_caption,
                    make_vqa)

DEFAULT_SEED = 1_000_003
SHIPPED = {"pretraining": "vle-tiny-shapes", "vqa": "vle-tiny-shapes-vqa", "vcr_q2a": "vle-tiny-shapes-vcr-q2a",
           "vcr_qa2r": "vle-tiny-shapes-vcr-qa2r"}


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def _vqa(model, processor, pool, seed, batch_size):
    label_of = {answer: k for k, answer in enumerate(model.config.id2label.values())}
    examples = []
    for i, scene in enumerate(pool.scenes):
        rng = np.random.default_rng([seed, i, 0])
        examples += [(i, e) for e in (make_vqa(scene, rng, family=f) for f in VQA_FAMILIES) if e is not None]
    correct = defaultdict(list)
    for chunk in _chunks(len(examples), batch_size):
        items = [examples[k] for k in chunk]
        batch = processor.tokenize([e.question for _, e in items])
        pixels = normalize(pool.pixels[[i for i, _ in items]])
        logits = model(**to_model(model, {**batch, "pixel_values": pixels})).logits
        for (_, example), predicted in zip(items, logits.argmax(-1).tolist()):
            correct[example.family].append(predicted == label_of[example.answer])
    return {family: float(np.mean(v)) for family, v in correct.items()}, len(examples)


def _itm(model, processor, pool, seed, batch_size):
    hits = []
    for chunk in _chunks(len(pool), batch_size):
        texts, labels = [], []
        for i in chunk:
            rng = np.random.default_rng([seed, int(i), 1])
            texts += [make_caption(pool.scenes[i], rng)[0], make_negative_caption(pool.scenes[i], rng)[0]]
            labels += [1, 0]
        pixels = normalize(pool.pixels[np.repeat(chunk, 2)])
        logits = model(task="itm", **to_model(model, {**processor.tokenize(texts), "pixel_values": pixels})).logits
        hits += (logits.argmax(-1) == torch.tensor(labels)).tolist()
    return float(np.mean(hits))


def _collate(parts: list[dict]) -> dict:
    """Join one-example batches: text tensors right-padded with 0 (pad id, mask 0), the rest concatenated."""
    out = {}
    for key, first in parts[0].items():
        values = [part[key] for part in parts]
        if key in ("input_ids", "attention_mask", "token_type_ids"):
            width = max(v.shape[1] for v in values)
            out[key] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in values])
        elif isinstance(first, torch.Tensor):
            out[key] = torch.cat(values)
        else:
            out[key] = [item for value in values for item in value]
    return out


def _per_scene(builder, pool, processor, seed, tag, batch_size):
    """Batches of one example per scene, each scene with its own rng (so results do not depend on batch size)."""
    for chunk in _chunks(len(pool), batch_size):
        yield _collate([builder(pool, processor, np.random.default_rng([seed, int(i), tag]), np.array([i]))
                        for i in chunk])


def _pbc(model, processor, pool, seed, batch_size):
    ious = []
    for batch in _per_scene(pbc_batch, pool, processor, seed, 2, batch_size):
        targets = batch.pop("labels").bool()
        predicted = model(task="pbc", **to_model(model, batch)).logits.float().softmax(-1)[..., 1] > 0.5
        intersection, union = (predicted & targets).sum(-1), (predicted | targets).sum(-1).clamp(min=1)
        ious += (intersection / union).tolist()
    return float(np.mean(ious))


def _mpc(model, processor, pool, seed, batch_size):
    hits = []
    for batch in _per_scene(mpc_batch, pool, processor, seed, 3, batch_size):
        labels = [label for (label,) in batch.pop("labels")]
        predicted = model(task="mpc", **to_model(model, batch)).logits[:, 0].argmax(-1).tolist()
        hits += [p == label for p, label in zip(predicted, labels) if label >= 0]
    return float(np.mean(hits))


def _vcr(model, processor, pool, seed, batch_size, task):
    hits = []
    for i in range(len(pool)):
        batch = vcr_batch(pool, processor, np.random.default_rng([seed, i, 4]), np.array([i]), task=task)
        labels = batch.pop("labels")
        hits.append(int(model(**to_model(model, batch)).logits.argmax(-1)[0]) == int(labels[0]))
    return float(np.mean(hits))


def evaluate(seed: int = DEFAULT_SEED, n: int = 200, models: dict | None = None, batch_size: int = 64,
             progress: bool = True, dtype="float32") -> dict:
    """Accuracy of every shipped (or given: stage → folder) model on ``n`` held-out scenes; see the module doc."""

    if seed < HELD_OUT_SEED:
        raise ValueError(f"evaluation seeds must be held out: use a seed >= {HELD_OUT_SEED}, got {seed}")
    if n < 1:
        raise ValueError("n must be at least 1")
    paths = {stage: resolve_model_path(path) for stage, path in {**SHIPPED, **(models or {})}.items()}
    pool = ScenePool(seed, n, progress=progress)
    results = {}
    steps = tqdm(total=6, desc="evaluate", disable=not progress)
    with torch.inference_mode():
        processor = VLEProcessor.from_pretrained(paths["vqa"])
        vqa = VLEForVQA.from_pretrained(paths["vqa"], dtype=dtype)
        by_family, questions = _vqa(vqa, processor, pool, seed, batch_size)
        steps.update()
        pretrained = VLEForPretraining.from_pretrained(paths["pretraining"], dtype=dtype)
        results["itm_acc"] = _itm(pretrained, processor, pool, seed, batch_size)
        steps.update()
        results["pbc_miou"] = _pbc(pretrained, processor, pool, seed, batch_size)
        steps.update()
        results["mpc_acc"] = _mpc(pretrained, processor, pool, seed, batch_size)
        steps.update()
        q2a = VLEForVCRQ2A.from_pretrained(paths["vcr_q2a"], dtype=dtype)
        results["vcr_q2a_acc"] = _vcr(q2a, processor, pool, seed, batch_size, "q2a")
        steps.update()
        qa2r = VLEForVCRQA2R.from_pretrained(paths["vcr_qa2r"], dtype=dtype)
        results["vcr_qa2r_acc"] = _vcr(qa2r, processor, pool, seed, batch_size, "qa2r")
        steps.update()
    steps.close()
    results["vqa_acc_by_family"] = by_family
    results["vqa_nonrelational_acc"] = _mean_over(by_family, NONRELATIONAL_FAMILIES)
    results["vqa_relational_acc"] = _mean_over(by_family, RELATIONAL_FAMILIES)
    # scored examples: every VQA question, two captions (ITM), one PBC, MPC, Q2A and QA2R item per scene
    results["n_examples"] = questions + 6 * n
    results["n_scenes"] = n
    results["seed"] = seed
    return results


def _mean_over(by_family: dict, families) -> float:
    values = [by_family[f] for f in families if f in by_family]
    return float(np.mean(values)) if values else float("nan")


def format_table(results: dict) -> str:
    rows = [("VQA non-relational", results["vqa_nonrelational_acc"]), ("VQA relational", results["vqa_relational_acc"])]
    rows += [(f"  vqa/{family}", acc) for family, acc in sorted(results["vqa_acc_by_family"].items())]
    rows += [("ITM accuracy", results["itm_acc"]), ("PBC mean IoU", results["pbc_miou"]),
             ("MPC accuracy", results["mpc_acc"]), ("VCR Q2A accuracy", results["vcr_q2a_acc"]),
             ("VCR QA2R accuracy", results["vcr_qa2r_acc"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"held-out scenes: seeds {results['seed']}..{results['seed'] + results['n_scenes'] - 1} "
             f"({results['n_scenes']} scenes, {results['n_examples']} scored examples)"]
    lines += [f"{name:<{width}}  {value:.4f}" for name, value in rows]
    return "\n".join(lines)
