"""Batches for every shapes-world objective, built on the fly from a pool of pre-rendered scenes.

Builders take the pool indices of the batch's scenes (training samples them, evaluation walks the pool in order).
Every batch is a pure function of (pool, rng, index), so training resumes exactly without saving data state.

>>> from vle.testing import tiny_processor
>>> pool = ScenePool(0, 4)
>>> batch = vqa_batch(pool, tiny_processor(), np.random.default_rng(0), np.array([0, 3]), ANSWERS)
>>> tuple(batch["pixel_values"].shape), len(batch["vqa_labels"])
((2, 3, 128, 128), 2)
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..vcr import build_vcr_inputs
from .tasks import (ANSWERS, MPC_CLASSES, caption_holds, make_caption, make_mpc, make_negative_caption, make_pbc,
                    make_vqa)
from .tasks_vcr import draw_vcr, tagged_objects
from .world import COLORS, make_scene, object_patches, patch_attributes, patch_coverage

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
HELD_OUT_SEED = 1_000_000  # training never draws a scene seed at or above this


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (batch, 3, H, W) → CLIP-normalised float: what the processor does to an image already at its size."""
    return (pixels.float() / 255.0 - CLIP_MEAN) / CLIP_STD


class ScenePool:
    """Scenes ``start_seed .. start_seed + n - 1`` with their pixels (n, 3, H, W) uint8 rendered once."""

    def __init__(self, start_seed: int, n: int, image_size: int = 128, progress: bool = False):
        seeds = range(start_seed, start_seed + n)
        self.scenes = [make_scene(seed, image_size) for seed in tqdm(seeds, desc="rendering scenes",
                                                                      disable=not progress, leave=False)]
        # contiguous (n, 3, H, W): normalising a batch gathered from a permuted (n, H, W, 3) layout is much slower
        self.pixels = torch.from_numpy(np.stack([scene.pixels for scene in self.scenes])).permute(0, 3, 1, 2)
        self.pixels = self.pixels.contiguous()
        self._patch_truth: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.integers(0, len(self.scenes), size)

    def patch_truth(self, index: np.ndarray, patch_size: int = 16) -> dict[str, torch.Tensor]:
        """``world.patch_attributes`` of the scenes at ``index``, stacked: (batch, patches) each, ``position``
        (batch, patches, 2). Computed once per scene."""
        rows = []
        for i in index:
            key = (int(i), patch_size)
            if key not in self._patch_truth:
                self._patch_truth[key] = patch_attributes(self.scenes[key[0]], patch_size)
            rows.append(self._patch_truth[key])
        return {key: torch.from_numpy(np.stack([row[key] for row in rows])) for key in rows[0]}


def _text_batch(processor, texts: list[str]) -> dict:
    return dict(processor.tokenize(texts))


INVENTORY_QUESTIONS = {"what colors are there ?": "color", "what shapes are there ?": "shape",
                       "what sizes are there ?": "size"}


def evidence_patches(scene, evidence, patch_size: int = 16) -> np.ndarray:
    """(patches,) int64: 1 where one of the evidence objects covers the patch (PBC's rule), else 0."""
    covered = np.zeros(np.array(scene.masks[0].shape) // patch_size, dtype=bool)
    for index in evidence:
        covered |= object_patches(scene, index, patch_size)
    return covered.reshape(-1).astype(np.int64)


def vqa_batch(pool: ScenePool, processor, rng, index: np.ndarray, answers=ANSWERS, families=None,
              inventory_share: float = 0.0, with_evidence: bool = False, patch_size: int = 16,
              with_subjects: bool = False) -> dict:
    """VQA questions with one answer each; with ``inventory_share``, also training-only inventory questions ("what
    colors are there ?", every present value a label) that teach the image stream to encode the whole scene first,
    which the question-dependent families need before they can take off. ``with_evidence`` adds
    ``evidence_patches`` (batch, patches): the patches of the objects each answer depends on, a grounding target;
    ``with_subjects`` adds ``subject_centers`` (batch, 2): the centre (x, y) / image size of the object whose attribute
    is the answer (``VQAExample.subject``), NaN where there is none (yes / no, counts, inventory questions)."""
    label_of = {answer: k for k, answer in enumerate(answers)}
    questions, labels, evidence, subjects = [], [], [], []
    for i in index:
        scene = pool.scenes[i]
        if rng.random() < inventory_share:
            question = list(INVENTORY_QUESTIONS)[int(rng.integers(len(INVENTORY_QUESTIONS)))]
            attribute = INVENTORY_QUESTIONS[question]
            questions.append(question)
            labels.append(sorted({label_of[getattr(o, attribute)] for o in scene.objects}))
            evidence.append([o.index for o in scene.objects])
            subjects.append((np.nan, np.nan))
            continue
        family = None if families is None else families[int(rng.integers(len(families)))]
        example = make_vqa(scene, rng, family=family) or make_vqa(scene, rng)
        questions.append(example.question)
        labels.append([label_of[example.answer]])
        evidence.append(example.evidence)
        subject = None if example.subject is None else scene.objects[example.subject]
        subjects.append((np.nan, np.nan) if subject is None else np.asarray(subject.center) / scene.image_size)
    batch = {**_text_batch(processor, questions), "pixel_values": normalize(pool.pixels[index]),
             "vqa_labels": labels, "vqa_scores": [[1.0] * len(l) for l in labels]}
    if with_evidence:
        batch["evidence_patches"] = torch.from_numpy(np.stack(
            [evidence_patches(pool.scenes[i], e, patch_size) for i, e in zip(index, evidence)]))
    if with_subjects:
        batch["subject_centers"] = torch.tensor(np.array(subjects), dtype=torch.float32)
    return batch


def color_token_ids(tokenizer) -> dict[int, str]:
    """Token id → colour for the world's colour words, which must each be one token."""
    ids = {}
    for color in COLORS:
        pieces = tokenizer.tokenize(color)
        if len(pieces) != 1:
            raise ValueError(f"colour words must be single tokens; the tokenizer splits {color!r} into {pieces}")
        ids[tokenizer.convert_tokens_to_ids(pieces[0])] = color
    return ids


def color_words(pool: ScenePool, color_ids: dict[int, str], index: np.ndarray, input_ids: torch.Tensor,
                patch_size: int = 16) -> dict[str, torch.Tensor]:
    """Every colour word of a text batch (``color_ids`` from ``color_token_ids``) and the object it names (a scene's
    colours differ): ``rows`` and ``columns`` (n,) locate the words in ``input_ids``, row by row and left to right;
    ``patches`` (n, patches) is the object's patch mask and ``centers`` (n, 2) its centre (x, y) in [0, 1]. Colours
    the scene lacks are skipped."""
    rows, columns, patches, centers = [], [], [], []
    for row, i in enumerate(index):
        scene = pool.scenes[int(i)]
        named = {o.color: o for o in scene.objects}
        for column, token in enumerate(input_ids[row].tolist()):
            obj = named.get(color_ids.get(token))
            if obj is not None:
                rows.append(row)
                columns.append(column)
                patches.append(object_patches(scene, obj.index, patch_size).reshape(-1))
                centers.append(np.asarray(obj.center, dtype=np.float32) / scene.image_size)
    return {"rows": torch.tensor(rows, dtype=torch.long), "columns": torch.tensor(columns, dtype=torch.long),
            "patches": torch.from_numpy(np.stack(patches)) if patches else torch.zeros(0, 0, dtype=torch.bool),
            "centers": torch.from_numpy(np.stack(centers)) if centers else torch.zeros(0, 2)}


def _negative(pool: ScenePool, i: int, rng, hard_share: float) -> str:
    """A false caption: a hard negative (one word swapped) or, to bootstrap grounding, another scene's caption that
    happens to be false here."""
    if rng.random() < hard_share:
        return make_negative_caption(pool.scenes[i], rng)[0]
    for _ in range(10):
        text = make_caption(pool.scenes[int(rng.integers(len(pool)))], rng)[0]
        if not caption_holds(pool.scenes[i], text):
            return text
    return make_negative_caption(pool.scenes[i], rng)[0]


def itm_batch(pool: ScenePool, processor, rng, index: np.ndarray, hard_share: float = 0.5) -> dict:
    labels = rng.integers(0, 2, len(index))
    texts = [make_caption(pool.scenes[i], rng)[0] if label else _negative(pool, i, rng, hard_share)
             for i, label in zip(index, labels)]
    return {**_text_batch(processor, texts), "pixel_values": normalize(pool.pixels[index]),
            "labels": torch.from_numpy(labels)}


def pbc_batch(pool: ScenePool, processor, rng, index: np.ndarray, patch_size: int = 16) -> dict:
    items = [make_pbc(pool.scenes[i], rng, patch_size) for i in index]
    labels = torch.from_numpy(np.stack([target.reshape(-1) for _, _, target in items]).astype(np.int64))
    return {**_text_batch(processor, [phrase for phrase, _, _ in items]), "pixel_values": normalize(pool.pixels[index]),
            "labels": labels}


def mlm_batch(pool: ScenePool, processor, rng, index: np.ndarray, mask_rate: float = 0.2) -> dict:
    batch = _text_batch(processor, [make_caption(pool.scenes[i], rng)[0] for i in index])
    ids = batch["input_ids"].clone()
    special = ids <= processor.tokenizer.unk_token_id  # [PAD] [CLS] [SEP] [UNK] are ids 0-3
    chosen = torch.from_numpy(rng.random(ids.shape) < mask_rate) & ~special
    for row in range(len(ids)):  # at least one masked word per caption
        if not chosen[row].any():
            candidates = torch.nonzero(~special[row]).flatten()
            chosen[row, candidates[int(rng.integers(len(candidates)))]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    batch["input_ids"] = torch.where(chosen, torch.full_like(ids, processor.tokenizer.mask_token_id), ids)
    return {**batch, "pixel_values": normalize(pool.pixels[index]), "labels": labels}


def mpc_batch(pool: ScenePool, processor, rng, index: np.ndarray, patch_size: int = 16) -> dict:
    """Hide one object's pixels; the caption mentions it, so its class follows from text plus the visible rest."""
    texts, patch_ids, labels = [], [], []
    for i in index:
        scene = pool.scenes[i]
        obj, _, label = make_mpc(scene, rng, patch_size)
        text, evidence = make_caption(scene, rng)
        for _ in range(20):
            if obj in evidence:
                break
            text, evidence = make_caption(scene, rng)
        touched = np.flatnonzero(patch_coverage(scene.masks[obj], patch_size) > 0)  # every patch the object touches
        texts.append(text)
        patch_ids.append([[int(p) for p in touched]])
        labels.append([label if obj in evidence else -100])
    return {**_text_batch(processor, texts), "pixel_values": normalize(pool.pixels[index]), "patch_ids": patch_ids,
            "labels": labels}


VCR_MAX_LENGTH = 40  # shapes-world VCR texts stay under 30 pieces; padding further only costs time


def vcr_batch(pool: ScenePool, processor, rng, index: np.ndarray, task: str = "q2a", patch_size: int = 16,
              with_roles: bool = False, families: tuple[str, ...] | None = None) -> dict:
    """VCR items, one per scene of ``index``: of a family drawn uniformly from ``families`` where it applies to the
    scene (repeat one to draw it more often), else of any applicable family. ``with_roles`` (Q->A only) adds
    ``nearer_roles``: the rows (item * choices + choice) of the choices "[a] is nearer to [x] ." whose x the question
    asked about, and their ``offsets`` (n, 4): ([x] - [a], [y] - [a]) / image size, y the other object asked about."""

    records = [draw_vcr(pool.scenes[i], rng, f"shapes_{pool.scenes[i].seed}.png", families) for i in index]
    images = [pool.scenes[i].pixels for i in index]
    # normalize() equals the processor's output for images already at their size, without the PIL round trip
    batch = dict(build_vcr_inputs(processor, [a for a, _ in records], images, [m for _, m in records], task=task,
                                  max_length=VCR_MAX_LENGTH, patch_size=patch_size,
                                  pixel_values=normalize(pool.pixels[index])))
    longest = int(batch["attention_mask"].sum(-1).max())  # padding past the longest text only costs time
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        batch[key] = batch[key][..., :longest]
    if with_roles:
        rows, offsets = [], []
        for item, (i, (annotation, _)) in enumerate(zip(index, records)):
            for choice, answer in enumerate(annotation["answer_choices"]):
                offset = nearer_offsets(pool.scenes[i], annotation, answer)
                if offset is not None:
                    rows.append(item * len(annotation["answer_choices"]) + choice)
                    offsets.append(offset)
        batch["nearer_roles"] = {"rows": torch.tensor(rows, dtype=torch.long),
                                 "offsets": torch.tensor(np.array(offsets, dtype=np.float32).reshape(-1, 4))}
    return batch


def nearer_offsets(scene, annotation: dict, answer: list) -> np.ndarray | None:
    """([x] - [a], [y] - [a]) / image size for a "nearer" item's answer "[a] is nearer to [x] ." when x is one of the
    two objects the question asks about (y is the other); None for any other item or answer."""
    if annotation["question_family"] != "nearer":
        return None
    a, *asked = tagged_objects(annotation["question"])
    named = tagged_objects(answer)
    if "equally" in answer or named[-1] not in asked:
        return None
    x, y = named[-1], next(i for i in asked if i != named[-1])
    center = {k: np.asarray(scene.objects[k].center, dtype=np.float64) for k in (a, x, y)}
    return np.concatenate([center[x] - center[a], center[y] - center[a]]) / scene.image_size


PRETRAINING_TASKS = {"itm": itm_batch, "pbc": pbc_batch, "mlm": mlm_batch, "mpc": mpc_batch}
__all__ = ["HELD_OUT_SEED", "MPC_CLASSES", "PRETRAINING_TASKS", "ScenePool", "itm_batch", "mlm_batch", "mpc_batch",
           "nearer_offsets", "normalize", "pbc_batch", "vcr_batch", "vqa_batch"]
