"""Projected wall time of a shapes-world training recipe on this machine, from a few timed steps of each stage.

The full recipe must finish within 60 minutes on 2 CPU cores, and this machine's speed varies from day to day by
10-20%: this measures today's speed in about a minute instead of an hour. Each stage runs its real training step
(batch, losses, backward, clipping, AdamW) on its real objectives, starting from the shipped checkpoints where the
stage starts from an earlier one; stages whose pointer losses switch on part-way are timed in both phases. The
projection is steps x seconds per step, plus the scene pool scaled from a 500-scene sample.

With ``--processes P`` (default: as many as ``vle-workbench train`` uses here) the steps run data-parallel, as the
training command runs them: P processes on T / P threads each, each on its share of every batch.

Usage: python benchmarks/bench_train.py [--recipe full|teaching] [--steps N] [--threads T] [--processes P]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from vle.hub import resolve_model_path
from vle.processing_vle import VLEProcessor
from vle.shapes import parallel
from vle.shapes import train as T
from vle.shapes.data import ScenePool
from vle.shapes.evaluate import SHIPPED


def cpu_description() -> str:
    """The CPU's model name and the widest kernels torch uses on it (this machine's speed differs about twofold
    between the CPU models it is given)."""
    name = "CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()} kernels"


def shipped_runs(folder: str, stages) -> None:
    """``folder/<stage>/<task>`` links to the shipped checkpoints, for every stage a later one starts from."""
    for stage in {s.init_from for s in stages if s.init_from}:
        os.makedirs(os.path.join(folder, stage))
        for task, name in SHIPPED.items():
            os.symlink(resolve_model_path(name), os.path.join(folder, stage, task))


def seconds_per_step(stage, config, pool, processor, folder: str, start: int, steps: int) -> float:
    """Mean seconds of a training step over ``steps`` steps from step ``start`` (after two untimed warm-up steps)."""
    stage = T.share_of_batch(stage, parallel.world()[1])
    models, aux, trained, optimizer = T.stage_modules(stage, config, processor, folder)
    parallel.broadcast_parameters(trained)
    for s in range(start, start + 2):
        T.train_step(stage, models, aux, trained, optimizer, pool, processor, 0, s)
    began = time.perf_counter()
    for s in range(start + 2, start + 2 + steps):
        T.train_step(stage, models, aux, trained, optimizer, pool, processor, 0, s)
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="full", choices=[r for r in T.RECIPES if r != "smoke"])
    parser.add_argument("--steps", type=int, default=32, help="timed steps per stage phase")
    parser.add_argument("--threads", type=int, default=2, help="threads in all")
    parser.add_argument("--processes", type=int, default=None, help="data-parallel processes (default: as training)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    processes = T.default_processes(args.recipe, limit=args.threads) if args.processes is None else args.processes
    if not 1 <= processes <= args.threads:
        parser.error(f"--processes must be between 1 and --threads ({args.threads})")
    for stage in T.RECIPES[args.recipe].stages:
        T.share_of_batch(stage, processes)
    parallel.launch(measure, processes, args.recipe, args.steps, args.threads, processes)


def measure(recipe: str, steps: int, threads: int, processes: int) -> None:
    """Time every stage phase and print the projection (the first process prints)."""
    torch.set_num_threads(threads // processes)
    say = print if parallel.is_main() else (lambda *args, **kwargs: None)
    if not parallel.is_main():
        parallel.quiet()
    plan = T.RECIPES[recipe]
    processor = VLEProcessor.from_pretrained(resolve_model_path(SHIPPED["vqa"]))
    config = T.shapes_config(len(processor.tokenizer), plan.hidden, plan.layers)
    began = time.perf_counter()
    pool = ScenePool(0, 500, T.IMAGE_SIZE)
    data = (time.perf_counter() - began) * plan.pool_size / 500
    say(f"torch {torch.__version__} on {cpu_description()}, {threads} threads in {processes} process"
        f"{'es' if processes > 1 else ''}; recipe {recipe!r}, {steps} timed steps per stage phase")
    say(f"  {'scenes':28s} {data:7.0f} s  ({plan.pool_size} scenes)")
    total = data
    with tempfile.TemporaryDirectory() as folder:
        shipped_runs(folder, plan.stages)
        for stage in plan.stages:
            phases = [(0, min(stage.pointer_from, stage.steps))] if stage.pointer_from else []
            phases.append((stage.pointer_from, stage.steps - stage.pointer_from))
            seconds = 0.0
            for start, count in phases:
                per_step = seconds_per_step(stage, config, pool, processor, folder, start, steps)
                seconds += count * per_step
                label = f"{stage.name} steps {start}-{start + count}"
                say(f"  {label:28s} {count * per_step:7.0f} s  ({1 / per_step:.2f} steps/s)", flush=True)
            total += seconds
    say(f"  {'projected total':28s} {total:7.0f} s  = {int(total // 60)}:{int(total % 60):02d}")


if __name__ == "__main__":
    main()
