"""Diagnostics of a shapes-world VQA model: where the information the relational questions need is lost.

Prints three things:

- **tokenizer**: how many of the world's words the model's tokenizer splits into more than one piece;
- **position probes**: R² of a least-squares linear probe that reads a patch's column and row from its state, at the
  vision tower's output and at the last fusion layer's image stream (fit on 3/4 of the patches, scored on the rest).
  Left of / above need positions; an R² near 0 means a patch's state does not say where the patch is;
- **fit**: VQA accuracy per family on training scenes and on held-out scenes. Equal numbers mean the model underfits
  (more capacity or a better signal helps), a gap means it memorises (more data helps).

Usage: python benchmarks/probe_shapes.py [--model vle-tiny-shapes-vqa] [--n 256] [--threads T]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vle import VLEForVQA
from vle.processing_vle import VLEProcessor
from vle.shapes import RELATIONAL_FAMILIES, world_corpus
from vle.shapes.data import ScenePool, normalize
from vle.shapes.evaluate import DEFAULT_SEED, _vqa


def split_words(tokenizer) -> tuple[int, int, dict[str, list[str]]]:
    words = sorted({word for sentence in world_corpus(50, seed=7) for word in sentence.split()})
    split = {word: pieces for word in words if len(pieces := tokenizer.tokenize(word)) != 1}
    return len(words), len(split), split


def probe_r2(states: torch.Tensor, grid: int) -> tuple[float, float]:
    """R² of linear probes for (column, row) from patch states (scenes, patches, H), held-out quarter."""
    x = states.reshape(-1, states.shape[-1]).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    cut = len(x) * 3 // 4
    scores = []
    for target in (torch.arange(grid * grid) % grid, torch.arange(grid * grid) // grid):
        y = target.repeat(states.shape[0]).double()
        weights = torch.linalg.lstsq(x[:cut], y[:cut, None]).solution
        residual = (x[cut:] @ weights)[:, 0] - y[cut:]
        scores.append(float(1 - residual.pow(2).mean() / y[cut:].var()))
    return scores[0], scores[1]


def patch_states(model: VLEForVQA, pixels: torch.Tensor, processor, batch_size: int = 64):
    """(vision tower output, fusion image stream output), each (scenes, patches, H), for a fixed question."""
    captured, tower, fused = {}, [], []
    tower_hook = model.base_vle.vision_model.register_forward_hook(
        lambda module, args, output: captured.__setitem__("v", output.last_hidden_state))
    try:
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start:start + batch_size]
            text = processor.tokenize(["what shape is the red object ?"] * len(chunk))
            with torch.no_grad():
                out = model(**text, pixel_values=normalize(chunk))
            patches = out.vle_output.image_embeds.shape[1] - 1
            tower.append(captured["v"][:, 1:1 + patches])
            fused.append(out.vle_output.image_embeds[:, 1:1 + patches])
    finally:
        tower_hook.remove()
    return torch.cat(tower), torch.cat(fused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vle-tiny-shapes-vqa")
    parser.add_argument("--n", type=int, default=256, help="scenes per split")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VLEForVQA.from_pretrained(args.model).eval()
    processor = VLEProcessor.from_pretrained(args.model)

    total, n_split, split = split_words(processor.tokenizer)
    print(f"tokenizer: {n_split} of {total} words split into pieces")
    for word, pieces in list(split.items())[:8]:
        print(f"  {word!r} -> {pieces}")

    train_pool, held_pool = ScenePool(0, args.n), ScenePool(DEFAULT_SEED, args.n)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    tower, fused = patch_states(model, held_pool.pixels, processor)
    print("position probes (R² of column, row):")
    for name, states in (("vision tower output", tower), ("fusion image stream", fused)):
        column, row = probe_r2(states, grid)
        print(f"  {name:22s} {column:6.3f} {row:6.3f}")

    with torch.no_grad():
        train_acc, _ = _vqa(model, processor, train_pool, 0, 64)
        held_acc, _ = _vqa(model, processor, held_pool, DEFAULT_SEED, 64)
    print(f"fit: {'family':14s} {'train':>6s} {'held-out':>8s}")
    for family in sorted(held_acc, key=lambda f: (f in RELATIONAL_FAMILIES, f)):
        print(f"     {family:14s} {train_acc.get(family, float('nan')):6.3f} {held_acc[family]:8.3f}")


if __name__ == "__main__":
    main()
