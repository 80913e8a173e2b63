"""Batch runs and the dataset explorer: throughput in one and two processes, the explorer at 100,000 rows, and the
real vle-base VQA shape.

Parts (``--parts``, all by default):

- ``batch``: 2,000 held-out shapes VQA questions with co-attention relevance, rollout and raw attention on the
  embedded model: one process (torch's threads), one process with one thread, and ``torchrun --nproc_per_node 2``
  (one thread each); seconds, questions per second, and whether the two-process rows equal the one-thread rows.
- ``explorer``: a synthetic 100,000-row store (the 2,000 real rows repeated with new ids and jittered numbers),
  opened in the ``DatasetExplorer``: opening, filtering (the table and the slice's numbers), sorting, the slice's
  pictures, opening one example, the projection of 100,000 points, and the process's memory.
- ``browser``: the same 100,000-row run in the explorer served by Voilà and opened in Chromium: from the page's
  request to the table drawn, and from a click on "wrong" to the table filtered and the slice's numbers shown.
- ``base``: the vle-base VQA shape (random weights, image 576, 3,129 answers) over distinct images: questions per
  second at batch 1 and 16, predictions only and with the three attention methods (on the GPU too if there is one).

Usage: python benchmarks/bench_batch.py [--parts batch,explorer,base] [--questions N] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_forward import base_config, cpu_name  # noqa: E402  (the same CPU line and vle-base shape)
PARTS = ("batch", "explorer", "browser", "base")
SEED = 1_000_003
CLI = os.path.join(os.path.dirname(sys.executable), "vle-workbench")


def run_cli(arguments: list[str], threads: int | None = None, processes: int = 1) -> float:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [CLI, *arguments] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--no-python", "--",
        CLI, *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - started


def same_rows(first: str, second: str) -> bool:
    from vle.store import open_run

    def rows(path):
        return open_run(path).query("select * exclude (seconds) from examples order by index").fetchall()
    return rows(first) == rows(second)


def part_batch(questions: int, folder: str) -> str:
    scenes = questions // 9 + 20  # about eleven questions per scene: enough scenes for the first N questions
    arguments = ["batch", "--data", "shapes", "--seed", str(SEED), "--n", str(scenes), "--limit", str(questions),
                 "--methods", "coattention_relevance,rollout,raw_attention", "--json"]
    print(f"\nbatch run: {questions} held-out shapes VQA questions, 3 methods, embedded model (wall time, model load "
          "included)")
    timings = {}
    for name, threads, processes in (("1 process", None, 1), ("1 process, 1 thread", 1, 1),
                                     ("2 processes (torchrun), 1 thread each", 1, 2)):
        out = os.path.join(folder, name.split(" (")[0].replace(" ", "-").replace(",", ""))
        timings[name] = run_cli(arguments + ["--out", out], threads, processes)
        manifest = json.load(open(os.path.join(out, "manifest.json")))
        print(f"  {name:<40} {timings[name]:6.1f} s   {questions / timings[name]:6.1f} questions/s   "
              f"(in the run: {manifest['seconds']:.1f} s)")
    single, double = (os.path.join(folder, "1-process-1-thread"), os.path.join(folder, "2-processes"))
    print(f"  2 processes / 1 process throughput: {timings['1 process'] / timings[list(timings)[2]]:.2f}x;"
          f" rows of 2 processes == rows of 1 process (same threads each): {same_rows(single, double)}")
    return os.path.join(folder, "1-process")


def synthetic_store(source: str, rows: int, folder: str) -> str:
    """A run of ``rows`` rows: the source run's rows repeated, with new ids and indexes, jittered probabilities and
    pooled vectors (so the projection is not 50 copies of one cloud), in parts of 10,000 rows."""
    from vle.store import MANIFEST, PARTS as PARTS_FOLDER

    table = pq.read_table([os.path.join(source, "parts", p) for p in sorted(os.listdir(os.path.join(source,
                                                                                                     "parts")))])
    table = pa.concat_tables([table]) if isinstance(table, pa.Table) else table
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, PARTS_FOLDER), exist_ok=True)
    base = table.to_pandas()
    copies, written = -(-rows // len(base)), 0
    for copy in range(copies):
        frame = base.copy()
        frame["id"] = frame["id"] + f"-copy{copy}"
        frame["index"] = frame["index"] + copy * len(base)
        frame["probability"] = np.clip(frame["probability"] - rng.random(len(frame)) * 0.2, 0, 1)
        pooled = np.frombuffer(b"".join(frame["pooled"]), dtype=np.float16).reshape(len(frame), -1)
        jittered = pooled.astype(np.float32) + rng.standard_normal(pooled.shape).astype(np.float32) * 0.3
        frame["pooled"] = [row.astype(np.float16).tobytes() for row in jittered]
        frame = frame.iloc[: rows - written]
        written += len(frame)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       os.path.join(folder, PARTS_FOLDER, f"part-r000-{copy:06d}.parquet"))
        if written >= rows:
            break
    manifest = json.load(open(os.path.join(source, MANIFEST)))
    with open(os.path.join(folder, MANIFEST), "w") as handle:
        json.dump({**manifest, "stored": written}, handle)
    return folder


def resident_gib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 2**20


def part_explorer(run: str, rows: int, folder: str) -> None:
    from vle import analysis
    from vle.store import open_run
    from widgets.dataset import DatasetExplorer

    store = os.path.join(folder, "synthetic")
    before = resident_gib()
    explorer = DatasetExplorer(store)
    started = time.perf_counter()
    explorer.run()
    opened = time.perf_counter() - started
    if explorer.status.error is not None:
        raise RuntimeError(explorer.status.message.value)
    print(f"\ndataset explorer over a synthetic {rows:,}-row run ({len(explorer.table):,} rows loaded)")
    print(f"  open the run (table, projection, first slice drawn)  {opened:6.2f} s")
    filters, summaries, pictures = [], [], []
    for right, family in (("wrong", "count"), ("all", "color"), ("right", None), ("all", None)):
        started = time.perf_counter()
        with explorer.hold_trait_notifications():
            explorer.right.value = right
        explorer.field.value = "family"
        explorer.value.value = family or "(all)"
        filters.append(explorer.timings["filter"])
        summaries.append(explorer.timings["filter"] + explorer.timings["summary"])
        explorer.wait()  # the pictures are drawn in a thread of their own
        pictures.append(explorer.timings["figures"])
    print(f"  filter: the table (grid transform + mask)            {1000 * np.median(filters):6.1f} ms")
    print(f"  filter: the table and the slice's numbers            {1000 * np.median(summaries):6.1f} ms")
    print(f"  the slice's pictures, drawn behind (calibration, answers, mean map, worst errors) "
          f"{np.median(pictures):5.2f} s")
    started = time.perf_counter()
    explorer.sort("probability", descending=True)
    print(f"  sort (grid transform)                                {1000 * (time.perf_counter() - started):6.1f} ms")
    opens = []
    for example_id in explorer.table["id"].iloc[[10, 5_000, rows // 2, rows - 1]]:
        started = time.perf_counter()
        explorer.open_example(example_id)
        opens.append(time.perf_counter() - started)
    print(f"  open an example (stored explanation, drawn)          {1000 * np.median(opens):6.1f} ms")
    run_data = open_run(store)
    started = time.perf_counter()
    ids, vectors = analysis.pooled(run_data)
    read = time.perf_counter() - started
    started = time.perf_counter()
    analysis.project(vectors)
    print(f"  projection of {len(ids):,} points: read {read:.2f} s + PCA {time.perf_counter() - started:.2f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  memory: resident {resident_gib():.2f} GiB (before the explorer {before:.2f} GiB; peak {peak:.2f} GiB)")


BROWSER_NOTEBOOK = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                               "source": "from widgets import DatasetExplorer\n\nDatasetExplorer({run!r})"}],
                    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                    "nbformat": 4, "nbformat_minor": 5}


def part_browser(store: str, folder: str) -> None:
    import shutil

    from playwright.sync_api import expect, sync_playwright

    from widgets.serve import CHROMIUM_ARGS, served_app

    notebook = os.path.join(folder, "dataset.ipynb")
    with open(notebook, "w") as handle:
        json.dump({**BROWSER_NOTEBOOK, "cells": [{**BROWSER_NOTEBOOK["cells"][0], "source": BROWSER_NOTEBOOK[
            "cells"][0]["source"].format(run=store)}]}, handle)
    with open(os.path.join(folder, "voila.log"), "w") as log, served_app(log, notebook=notebook) as url, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 2400})
        started = time.perf_counter()
        page.goto(url)
        summary = page.locator(".vle-dataset-summary")
        expect(summary).to_contain_text("of 100", timeout=300_000)
        page.locator(".vle-dataset-grid canvas").first.wait_for(state="visible")
        frames = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
        page.evaluate(frames)
        opened = time.perf_counter() - started
        before = summary.inner_text()
        timings = []
        for choice in ("wrong", "right", "all", "wrong"):
            page.wait_for_timeout(2000)  # as a user looks at the last slice: its pictures are drawn meanwhile
            before = summary.inner_text()
            started = time.perf_counter()
            page.locator(".vle-right-wrong button", has_text=choice).click()
            page.wait_for_function("([selector, old]) => document.querySelector(selector).innerText !== old",
                                   arg=[".vle-dataset-summary", before], timeout=60_000)
            page.evaluate(frames)  # the grid has repainted its filtered rows
            timings.append(time.perf_counter() - started)
        browser.close()
    print("\nthe same run in the explorer, served by Voilà, in Chromium")
    print(f"  page requested → table and summary shown            {opened:6.2f} s (kernel start and imports included)")
    print(f"  click right/wrong → table filtered, numbers shown   {1000 * np.median(timings):6.0f} ms (median of 4)")


def part_base(questions: int) -> None:
    import torch
    from PIL import Image

    from vle import VLEForVQA
    from vle.batch import run_batch
    from vle.data import Example, Source
    from vle.explain import Session
    from vle.precision import resolve_dtype
    from vle.testing import tiny_processor

    torch.manual_seed(0)
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random((576, 768, 3)) * 255).astype(np.uint8)) for _ in range(questions)]
    words = ["what", "color", "is", "the", "floor", "in", "picture", "left", "of", "man"]
    texts = [" ".join(rng.choice(words, 8 + i % 5)) + " ?" for i in range(questions)]

    def source():
        return Source("random photos", "vqa", "random", lambda: iter(
            [Example(f"q{i}", "vqa", images[i], texts[i], ref=f"random:{i}") for i in range(questions)]), questions)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        on = model.to(device, resolve_dtype("auto", model.config, torch.device(device)))
        session = Session(on, tiny_processor(576))
        print(f"\nvle-base VQA shape (image 576, random weights) on {device} in {session.dtype_choice}: "
              f"{questions} questions, distinct images")
        for methods, label in (([], "predictions"), (["coattention_relevance", "rollout", "raw_attention"],
                                                      "predictions + 3 methods")):
            for batch in (1, 16):
                folder = tempfile.mkdtemp()
                started = time.perf_counter()
                run_batch(source(), session, folder, methods=methods, batch_size=batch, progress=False)
                seconds = time.perf_counter() - started
                print(f"  {label:<24} batch {batch:>2}: {questions / seconds:6.2f} questions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--base-questions", type=int, default=16)
    args = parser.parse_args()
    parts = args.parts.split(",")
    import torch

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    folder = tempfile.mkdtemp(prefix="bench-batch-")
    run = None
    if {"batch", "explorer", "browser"} & set(parts):
        run = part_batch(args.questions, folder)
    if "explorer" in parts or "browser" in parts:
        synthetic_store(run, args.rows, os.path.join(folder, "synthetic"))
    if "explorer" in parts:
        part_explorer(run, args.rows, folder)
    if "browser" in parts:
        part_browser(os.path.join(folder, "synthetic"), folder)
    if "base" in parts:
        part_base(args.base_questions)


if __name__ == "__main__":
    main()
