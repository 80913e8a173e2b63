"""Diagnostics of a shapes-world VQA model: where the information the relational questions need is lost.

Prints three things:

- **tokenizer**: how many of the world's words the model's tokenizer splits into more than one piece;
- **position probes**: R² of a least-squares linear probe that reads a patch's column and row from its state, at the
  vision tower's output and at the last fusion layer's image stream (fit on 3/4 of the patches, scored on the rest).
  Left of / above need positions; an R² near 0 means a patch's state does not say where the patch is;
- **relation chain**: for 'is the A object left of the B object ?', each link the answer needs, at each fusion layer
  of the text stream: how much of its text→image attention the colour word A puts on object A's patches (best head;
  the object's share of the patches is the floor), R² of linear probes reading object A's x from word A's state and
  object B's x from word B's, and the accuracy of linear probes reading the answer from [word A, word B] and from the
  text CLS that the VQA head sees. The first link that fails is where the relation is lost;
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
from vle.shapes.data import ScenePool, color_token_ids, color_words, normalize
from vle.explain.recorder import Recorder
from vle.shapes.evaluate import DEFAULT_SEED, _vqa


def split_words(tokenizer) -> tuple[int, int, dict[str, list[str]]]:
    words = sorted({word for sentence in world_corpus(50, seed=7) for word in sentence.split()})
    split = {word: pieces for word in words if len(pieces := tokenizer.tokenize(word)) != 1}
    return len(words), len(split), split


def linear_probe(states: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Fit a ridge-regularised least-squares probe on the first 3/4 of the rows; its predictions on the last 1/4."""
    x = states.reshape(len(target), -1).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = target.double()
    cut = len(x) * 3 // 4
    gram = x[:cut].T @ x[:cut] + ridge * cut * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x[:cut].T @ y[:cut])
    return x[cut:] @ weights


def probe_r2(states: torch.Tensor, target: torch.Tensor) -> float:
    """Held-out R² of a linear probe reading ``target`` (rows,) from ``states`` (rows, ...)."""
    held = target[len(target) * 3 // 4:].double()
    return float(1 - (linear_probe(states, target) - held).pow(2).mean() / held.var())


def probe_accuracy(states: torch.Tensor, labels: torch.Tensor) -> float:
    """Held-out accuracy of a linear probe reading a yes/no ``labels`` (rows,) from ``states`` (rows, ...)."""
    held = labels[len(labels) * 3 // 4:].bool()
    return float(((linear_probe(states, labels.double() * 2 - 1) > 0) == held).double().mean())


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


def relation_chain(model: VLEForVQA, pool: ScenePool, processor, patch_size: int) -> list[dict]:
    """The links of 'is the A object left of the B object ?' at every fusion layer of the text stream (see the
    module doc); A and B are the scene's first two objects (a scene's colours differ)."""
    questions = [f"is the {s.objects[0].color} object left of the {s.objects[1].color} object ?" for s in pool.scenes]
    batch = processor.tokenize(questions)
    words = color_words(pool, color_token_ids(processor.tokenizer), np.arange(len(pool)), batch["input_ids"],
                        patch_size)
    rows = torch.arange(len(questions))
    assert words["rows"].tolist() == rows.repeat_interleave(2).tolist(), "every question names two colours"
    word_a, word_b = words["columns"][0::2], words["columns"][1::2]
    x_a, x_b = words["centers"][0::2, 0], words["centers"][1::2, 0]
    patches_a = words["patches"][0::2]
    with Recorder(model, attentions=("fusion",), hidden=True, only=["fusion.text.*"]) as recorder, torch.no_grad():
        model(**batch, pixel_values=normalize(pool.pixels))
    links = []
    for i in range(len(model.base_vle.cross_modal_text_layers)):
        cross = recorder[f"fusion.text.{i}.cross_attention"][rows, :, word_a, 1:1 + patches_a.shape[1]]
        hidden = recorder[f"fusion.text.{i}.hidden"]
        links.append({
            "layer": i,
            "attention_on_a": float((cross * patches_a[:, None]).sum(-1).mean(0).max()),
            "floor": float(patches_a.double().mean()),
            "x_a_from_word_a": probe_r2(hidden[rows, word_a], x_a),
            "x_b_from_word_b": probe_r2(hidden[rows, word_b], x_b),
            "answer_from_words": probe_accuracy(torch.cat([hidden[rows, word_a], hidden[rows, word_b]], 1), x_a < x_b),
            "answer_from_cls": probe_accuracy(hidden[:, 0], x_a < x_b),
        })
    return links


def probe_arguments(doc: str, model: str, n: int) -> argparse.Namespace:
    """The probes' command line (--model, --n scenes per split, --threads), parsed and applied: torch seeded, threads
    set."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default=model)
    parser.add_argument("--n", type=int, default=n, help="scenes per split")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def main() -> None:
    args = probe_arguments(__doc__, "vle-tiny-shapes-vqa", 256)
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
    cells = torch.arange(grid * grid).repeat(len(tower))
    for name, states in (("vision tower output", tower), ("fusion image stream", fused)):
        flat = states.reshape(-1, states.shape[-1])
        print(f"  {name:22s} {probe_r2(flat, cells % grid):6.3f} {probe_r2(flat, cells // grid):6.3f}")

    print("relation chain ('is the A object left of the B object ?', fusion text stream):")
    print(f"  {'layer':>5s} {'attention A→A':>13s} {'(floor)':>7s} {'R² x_A':>7s} {'R² x_B':>7s} "
          f"{'answer from words':>17s} {'answer from CLS':>15s}")
    chain_pool = ScenePool(DEFAULT_SEED, 4 * args.n)
    for link in relation_chain(model, chain_pool, processor, model.config.vision_config.patch_size):
        print(f"  {link['layer']:5d} {link['attention_on_a']:13.3f} {link['floor']:7.3f} "
              f"{link['x_a_from_word_a']:7.3f} {link['x_b_from_word_b']:7.3f} {link['answer_from_words']:17.3f} "
              f"{link['answer_from_cls']:15.3f}")

    with torch.no_grad():
        train_acc, _ = _vqa(model, processor, train_pool, 0, 64)
        held_acc, _ = _vqa(model, processor, held_pool, DEFAULT_SEED, 64)
    print(f"fit: {'family':14s} {'train':>6s} {'held-out':>8s}")
    for family in sorted(held_acc, key=lambda f: (f in RELATIONAL_FAMILIES, f)):
        print(f"     {family:14s} {train_acc.get(family, float('nan')):6.3f} {held_acc[family]:8.3f}")


if __name__ == "__main__":
    main()
