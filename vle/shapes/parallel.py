"""Data-parallel training on one machine's CPU cores: ``processes`` copies of a training run, one per core, each on
its share of every batch, with their gradients averaged before every optimizer step (torch.distributed over gloo).

Why processes rather than threads: the tiny model's matrices are too small for torch's intra-op threads to keep two
cores busy, so two one-thread processes, each on half the batch, finish a step sooner than one process on two threads
(docs/benchmarks.md has the timings).

Every copy starts from the same weights (a broadcast from rank 0) and applies the same averaged gradients, so the
copies stay identical; only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers.utils import logging as hf_logging


def world() -> tuple[int, int]:
    """(rank, number of processes) of this training process; (0, 1) outside a parallel run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def quiet() -> None:
    """Silence the library warnings and progress bars of a process that is not the first, which shows the same."""

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("vle").setLevel(logging.ERROR)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers to every process."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, 0)


def average(module: torch.nn.Module, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average the gradients of ``module`` and the values of ``losses`` over the processes, in one all-reduce.

    A parameter no process gave a gradient keeps none (AdamW then skips it, as in a one-process step); one that only
    some processes reached gets the mean with zeros for the others. Returns the averaged losses (detached)."""
    _, size = world()
    if size == 1:
        return losses
    params = [p for p in module.parameters() if p.requires_grad]
    names = sorted(losses)
    reached = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    parts = [reached, torch.stack([losses[n].detach().float().reshape(()) for n in names])]
    parts += [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params]
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat /= size
    reached, values = flat[:len(params)] > 0, flat[len(params):len(params) + len(names)]
    offset = len(params) + len(names)
    for param, has_grad in zip(params, reached.tolist()):
        if has_grad:
            param.grad = flat[offset:offset + param.numel()].view_as(param).clone()
        offset += param.numel()
    return {name: values[i] for i, name in enumerate(names)}


def launch(function, processes: int, *args) -> object:
    """Run ``function(*args)`` in ``processes`` processes joined in one process group and return rank 0's result.
    With one process it runs here. An exception in any process stops them all and is raised here with its traceback.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return function(*args)
    with tempfile.TemporaryDirectory() as scratch:
        results = mp.get_context("spawn").SimpleQueue()
        mp.spawn(_worker, args=(processes, os.path.join(scratch, "rendezvous"), results, function, args),
                 nprocs=processes, join=True)
        return results.get()


def _worker(rank: int, processes: int, rendezvous: str, results, function, args) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=processes)
    try:
        result = function(*args)
        if rank == 0:
            results.put(result)
    finally:
        dist.destroy_process_group()
