"""Batch runs: a model over a whole dataset, every example's prediction and explanations stored in a run folder
(``vle.store``), in one process or many.

    vle-workbench batch --data shapes --seed 1000003 --n 200 --out runs/shapes
    torchrun --nproc_per_node 2 --no-python -- vle-workbench batch --data shapes --seed 1000003 --n 200 --out ...

The examples are cut into batches of ``batch_size`` in the data's order, and batch k belongs to process
k mod world size (torch.distributed's ``RANK`` and ``WORLD_SIZE``, set by torchrun): every batch holds the same
examples whatever the number of processes, so a run over N processes stores the same rows as a run over one. Each
process writes its own parts; a part holds whole batches, so a rerun (or torchrun's restart of a failed process)
skips the batches already stored. An example that cannot be run (no image, a bad annotation line, a text too long
for the model) is logged with its reason and skipped; a model that cannot serve the data is refused before any work.

>>> import tempfile
>>> from vle.data import shapes_source
>>> summary = run_batch(shapes_source(1_000_003, 2), "vle-tiny-shapes-vqa", tempfile.mkdtemp(),
...                     methods=["rollout"], progress=False)
>>> summary["stored"] == summary["examples"] > 0, summary["skipped"]
(True, 0)
"""

from __future__ import annotations

import datetime
import json
import os
import time
from contextlib import contextmanager

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .data import Example, Source, vqa_accuracy
from .errors import InputError
from .explain.batch import explain_batch
from .explain.core import explain
from .explain.inputs import forward
from .explain.methods import METHODS
from .explain.session import Session
from .explain.targets import VCRChoice, VQAAnswer, model_heads
from .image_utils import load_image
from .metrics import localisation
from .pipelines import batch_forward
from .store import RunStore, encode

DEFAULT_METHODS = ("coattention_relevance", "rollout", "raw_attention")
METHOD_OPTIONS = {"raw_attention": {"keep_maps": False}}  # the full maps are not stored; no need to keep them
PART_ROWS = 1024  # rows per part file: few files for DuckDB, little lost if a process is killed
TOP_K = 5


@contextmanager
def distributed():
    """(rank, world size, device) of this process: under torchrun, one process group (NCCL with one GPU per
    process, gloo on CPUs) for the run's barriers; alone, (0, 1, the GPU or the CPU)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    started = world > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    try:
        yield rank, world, device
    finally:
        if started:
            dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def gather(value, world: int) -> list:
    if world == 1:
        return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def run_batch(source: Source, model, out: str, methods=DEFAULT_METHODS, batch_size: int = 16, dtype="auto",
              progress=True, part_rows: int = PART_ROWS) -> dict:
    """Run ``model`` (a shipped name, folder or hub id, or a ``Session``) over ``source``, storing each example's row
    in ``out``.
    ``progress``: a progress bar with rate and ETA on the first process (True), none (False), or a function called
    as ``progress(done, total)`` (total None when unknown) after each batch.
    Returns this run's counts: ``examples`` (in the data), ``stored``, ``skipped`` (with ``reasons``), ``resumed``
    (already done before), ``seconds``; under torchrun every process returns the totals over all processes."""
    methods = [m for m in methods if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    with distributed() as (rank, world, device):
        session = model if isinstance(model, Session) else Session(model, dtype=dtype)
        session.model.to(device)
        model = model if not isinstance(model, Session) else getattr(session.model, "name_or_path", "") or \
            type(session.model).__name__
        check_serves(session, source, methods)
        settings = {"model": str(model), "dtype": str(session.model.dtype).removeprefix("torch."), "methods": methods,
                    "data": source.name, "fingerprint": source.fingerprint, "kind": source.kind,
                    "batch_size": batch_size}
        if rank == 0:  # the folder is checked and made by one process; the others wait for it at the barrier
            check_folder(out)
            RunStore(out).check_same_run(settings)
        barrier(world)
        store = RunStore(out)
        done = store.done_ids()  # read by every process before any writes
        barrier(world)
        if rank == 0:
            store.write_manifest({**settings, "status": "running", "processes": world, "code_version": code_version(),
                                  "top_k": TOP_K, "image_refs": source.image_refs})
        started = time.perf_counter()
        counts = work(session, source, store, methods, batch_size, rank, world, done,
                      progress if rank == 0 else False, part_rows)
        totals = gather(counts, world)
        barrier(world)
        skipped = store.skipped()
        summary = {"examples": counts["examples"],  # every process reads the whole data: each counts all of it
                   "stored": len(store.done_ids()) - len(skipped), "skipped": len(skipped), "resumed": len(done),
                   "new": sum(c["new"] for c in totals), "seconds": round(time.perf_counter() - started, 2),
                   "processes": world, "reasons": reasons(skipped), "dtype": settings["dtype"]}
        if rank == 0:
            store.write_manifest({**(store.manifest() or {}), "status": "finished", **summary})
        return summary


def check_folder(out: str) -> None:
    """A run goes into a new folder, an empty one, or one that holds a run (to resume it), nowhere else."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"{out} is a file: give a folder for the run (--out)")
    others = [name for name in os.listdir(out) if name != "parts" or os.listdir(os.path.join(out, name))] \
        if os.path.isdir(out) else []  # an empty parts folder: a run stopped before it wrote its manifest
    if others and not os.path.isfile(os.path.join(out, "manifest.json")):
        raise InputError(f"{out} holds other files and no run: choose a new or empty folder for the run")


def check_serves(session: Session, source: Source, methods: list[str]) -> None:
    """Refuse, before any work, a model that cannot answer the data or a method that cannot explain it."""
    heads = model_heads(session.model)
    if source.kind not in heads:
        raise InputError(f"{source.name} is {source.kind.upper()} data, but the model answers "
                         f"{', '.join(h.upper() for h in heads) or 'nothing'}: choose a {source.kind.upper()} model")
    if source.kind == "vcr" and source.task and getattr(session.model, "task", "") != f"vcr_{source.task}":
        raise InputError(f"{source.name} asks {source.task.upper()}, but the model is a "
                         f"{getattr(session.model, 'task', 'VCR').removeprefix('vcr_').upper()} model")
    target = VCRChoice(0) if source.kind == "vcr" else VQAAnswer(0)
    refused = [m for m in methods if not METHODS[m].supports(target)]
    if refused:
        raise InputError(f"{', '.join(refused)} cannot explain {source.kind.upper()} predictions; methods that can: "
                         f"{', '.join(m for m, c in METHODS.items() if c.supports(target))}")


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vle-workbench")
    except PackageNotFoundError:
        return "unknown"


def reasons(skipped: list[dict]) -> dict[str, int]:
    """How many examples were skipped for each kind of reason (the reason's words before any detail)."""
    counts: dict[str, int] = {}
    for record in skipped:
        key = record["reason"].split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def batches(source: Source, batch_size: int):
    """(batch number, examples) in the data's order, the last batch possibly shorter. An id seen before is a problem
    (a run finds its rows by id)."""
    chunk, number, seen = [], 0, set()
    for example in source.examples():
        if example.id in seen:
            example.problem = example.problem or f"the id {example.id} appears again in the data"
            example.id = f"{example.id}#{len(seen)}"  # the skip log names it apart from the first
        seen.add(example.id)
        chunk.append(example)
        if len(chunk) == batch_size:
            yield number, chunk
            chunk, number = [], number + 1
    if chunk:
        yield number, chunk


def work(session, source, store, methods, batch_size, rank, world, done, progress, part_rows) -> dict:
    total = source.total()
    mine = None if total is None else share(total, batch_size, rank, world)
    bar = tqdm(total=mine, disable=progress is not True, unit="example",
               desc=f"batch ({world} processes)" if world > 1 else "batch", smoothing=0.1)
    counts, pending, finished = {"examples": 0, "new": 0}, [], 0
    for number, examples in batches(source, batch_size):
        counts["examples"] += len(examples)
        if number % world != rank:
            continue
        todo = [(number * batch_size + i, e) for i, e in enumerate(examples) if e.id not in done]
        runnable = []
        for index, example in todo:
            problem = example.problem or readable(session, example)
            if problem:
                store.log_skipped(rank, example.id, problem)
            else:
                runnable.append((index, example))
        if runnable:
            rows = run_or_skip(session, runnable, methods, source, store, rank)
            pending += rows
            counts["new"] += len(rows)
        if len(pending) >= part_rows:
            store.write_part(rank, pending)
            pending = []
        bar.update(len(examples))
        finished += len(examples)
        if callable(progress):
            progress(finished, mine)
    if pending:
        store.write_part(rank, pending)
    bar.close()
    return counts


def share(total: int, batch_size: int, rank: int, world: int) -> int:
    """How many of ``total`` examples fall in this process's batches."""
    full, last = divmod(total, batch_size)
    mine = len(range(rank, full, world)) * batch_size
    return mine + (last if last and full % world == rank else 0)


def readable(session: Session, example: Example) -> str | None:
    """Why ``example`` cannot be run (its image unreadable, its text too long), or None; a read image is kept."""
    if not example.ref and isinstance(example.image, (str, os.PathLike)):
        example.ref = os.path.abspath(example.image)
    try:
        example.image = load_image(example.image() if callable(example.image) else example.image)
    except (InputError, OSError, ValueError) as error:
        return f"image: {error}"
    limit = session.processor.max_text_length
    if example.kind == "vqa":
        length = len(session.processor.tokenizer(example.text)["input_ids"])
        if length > limit:
            return f"text too long: {length} tokens, the model reads at most {limit}"
    return None


def run_or_skip(session, runnable: list, methods: list[str], source: Source, store, rank: int) -> list[dict]:
    """The rows of a batch; when the batch fails on bad input, each example alone, the ones that fail skipped and
    logged with the reason (one bad item never ends a long run)."""
    try:
        return run_examples(session, runnable, methods, source)
    except (InputError, ValueError) as error:
        if len(runnable) == 1:
            store.log_skipped(rank, runnable[0][1].id, f"the model could not read it: {error}")
            return []
    return [row for item in runnable for row in run_or_skip(session, [item], methods, source, store, rank)]


def run_examples(session: Session, runnable: list, methods: list[str], source: Source) -> list[dict]:
    if source.kind == "vcr":
        return [vcr_row(session, index, example, methods) for index, example in runnable]
    return vqa_rows(session, runnable, methods)


def vqa_rows(session: Session, runnable: list, methods: list[str]) -> list[dict]:
    """One batch of VQA examples: the plain batched forward's answers (as the pipeline gives them), each top answer
    explained by every method in one batched recording."""
    started = time.perf_counter()
    model, names = session.model, session.model.config.id2label
    images, texts = [e.image for _, e in runnable], [e.text for _, e in runnable]
    output = batch_forward(model, session.processor, images, texts)
    probabilities = output.logits.softmax(-1)
    top = probabilities.topk(min(TOP_K, probabilities.shape[-1]), dim=-1)
    answers = [int(i) for i in top.indices[:, 0]]
    explanations = explain_batch(model, session.processor, images, texts, methods, METHOD_OPTIONS, answers,
                                 output) if methods else [{} for _ in runnable]
    seconds = (time.perf_counter() - started) / len(runnable)
    rows = []
    for row, ((index, example), explained) in enumerate(zip(runnable, explanations)):
        top_k = [{"answer": str(names[int(i)]), "probability": float(p)}
                 for p, i in zip(top.values[row], top.indices[row])]
        prediction = top_k[0]["answer"]
        score = None if example.truth is None else (
            vqa_accuracy(prediction, example.truth) if isinstance(example.truth, list)
            else float(prediction == str(example.truth)))
        rows.append({**base_row(index, example, prediction, answers[row], top_k, score, output.pooled[row]),
                     **explanation_columns(explained, example), "seconds": seconds})
    return rows


def vcr_row(session: Session, index: int, example: Example, methods: list[str]) -> dict:
    """One VCR item: each choice's probability, the chosen one explained by every method."""
    started = time.perf_counter()
    inputs = session.prepare_vcr(example.annotation, example.image, example.metadata)
    with torch.no_grad():
        output = forward(session.model, inputs, VCRChoice(0))
    probabilities = output.logits[0].float().softmax(-1)  # (choices,)
    choices = vcr_choices(example.annotation, session.model.task)
    order = probabilities.argsort(descending=True)[:TOP_K]
    top_k = [{"answer": choices[int(i)], "probability": float(probabilities[i])} for i in order]
    chosen = int(order[0])
    explained = {m: explain(session.model, inputs, VCRChoice(chosen), m, cache=session.cache,
                            **METHOD_OPTIONS.get(m, {})) for m in methods}
    score = None if example.truth is None else float(chosen == int(example.truth))
    row = base_row(index, example, choices[chosen], chosen, top_k, score, output.vle_output.pooler_output[chosen])
    row.update(answers=choices, truth=None if example.truth is None else choices[int(example.truth)],
               annotation=json.dumps(example.annotation), metadata=json.dumps(example.metadata))  # to explain it again
    return {**row, **explanation_columns(explained, example), "seconds": time.perf_counter() - started}


def vcr_choices(annotation: dict, task: str) -> list[str]:
    key = "rationale_choices" if task == "vcr_qa2r" else "answer_choices"
    return [" ".join(str(t) if isinstance(t, str) else "[" + ",".join(map(str, t)) + "]" for t in choice)
            for choice in annotation.get(key, [])]


def base_row(index: int, example: Example, prediction: str, prediction_index: int, top_k: list, score, pooled):
    truth = example.truth
    answers = [str(a) for a in truth] if isinstance(truth, list) else None
    if answers:  # VQA v2: the truth shown is the humans' most common answer
        truth = max(sorted(set(answers)), key=answers.count)
    second = top_k[1]["probability"] if len(top_k) > 1 else 0.0
    return {"id": example.id, "index": index, "kind": example.kind, "image": example.ref, "question": example.text,
            "truth": None if truth is None else str(truth), "answers": answers, "prediction": prediction,
            "prediction_index": prediction_index, "probability": top_k[0]["probability"], "margin":
            top_k[0]["probability"] - second, "top_k": top_k, "score": score,
            "correct": None if score is None else bool(score >= 0.5),
            "pooled": None if pooled is None else encode(pooled.detach().float().cpu().numpy()),
            **{f"slice_{k}": str(v) for k, v in example.slices.items()}}


def explanation_columns(explained: dict, example: Example) -> dict:
    """Each method's patch map and word scores (compact), its image share, and, where the evidence is known, its
    pointing game and relevance mass."""
    columns = {}
    for name, explanation in explained.items():
        patches = explanation.patch_scores
        columns.update({"grid": int(patches.shape[0]), "words": list(explanation.words),
                        f"{name}__patches": encode(patches), f"{name}__words": [float(s) for s in
                                                                                explanation.word_scores],
                        f"{name}__image_share": float(explanation.modality_share["image"])})
        hit = mass = None
        if example.evidence is not None:
            hit, mass = localisation(patches, example.evidence, example.coverage)
        columns.update({f"{name}__pointing": hit, f"{name}__mass": mass})
    return columns


