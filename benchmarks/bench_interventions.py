"""Interventions: the head-ablation sweep, exact and attribution patching, and the "What if" explorer's head toggle.

Parts (``--parts``, all by default):

- ``sweep``: every attention head of every fusion site ablated in turn for one question (``ablation_sweep``), on the
  embedded model (a shapes scene) and on the vle-base VQA shape (random weights, image 576, 3,129 answers), as a
  multiple of one plain forward; beside it, the same sweep as one full fusion run per head (the image tower reused).
- ``patching``: attribution patching over every site (every attention head and every fusion layer's output) as a
  multiple of one plain forward, and its rank agreement (Spearman) with exact patching: on the embedded model over
  ``--pairs`` held-out scenes whose asked-about object is recoloured (clean: the scene, corrupted: the recoloured
  scene, same question), and on the vle-base shape for one pair of random images.
- ``explorer``: the "What if" explorer on the embedded model: from a click on a head's cell to the new answer,
  probability and explanation drawn.

Usage: python benchmarks/bench_interventions.py [--parts sweep,patching,explorer] [--pairs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_forward import base_config, cpu_name, timed  # noqa: E402  (the same CPU line and vle-base shape)

PARTS = ("sweep", "patching", "explorer")
SEED = 1_000_003
QUESTION = "what color is the object nearest to the square ?"


def embedded():
    from vle.modeling_vle import VLEForVQA
    from vle.processing_vle import VLEProcessor

    return VLEForVQA.from_pretrained("vle-tiny-shapes-vqa").eval(), VLEProcessor.from_pretrained("vle-tiny-shapes-vqa")


def base_model_and_inputs(seed: int = 0):
    from vle.modeling_vle import VLEForVQA

    torch.manual_seed(0)
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    generator = torch.Generator().manual_seed(seed)
    inputs = dict(input_ids=torch.randint(1000, 20000, (1, 14), generator=generator),
                  pixel_values=torch.randn(1, 3, 576, 576, generator=generator))
    return model, inputs


def full_runs_per_head(model, inputs, sites, heads: int | None = None) -> float:
    """Seconds for the sweep as one full fusion run per head (the image tower run once), from ``heads`` heads."""
    from vle.explain.interventions import ablate

    batch = dict(inputs)
    with torch.no_grad():
        batch["image_features"] = model.base_vle.get_image_features(batch.pop("pixel_values"))
    every = [(site, h) for site in sites for h in range(model.config.num_attention_heads)]
    chosen = every if heads is None else every[:: max(1, len(every) // heads)][:heads]
    started = time.perf_counter()
    with torch.no_grad():
        for site, head in chosen:
            with ablate(model, {site: [head]}):
                model(**batch)
    return (time.perf_counter() - started) * len(every) / len(chosen)


def part_sweep() -> None:
    from vle.explain.interventions import attention_sites
    from vle.explain.sweep import ablation_sweep
    from vle.shapes.world import make_scene

    print("head-ablation sweep of one question (every attention head of every fusion site, zero ablation)")
    model, processor = embedded()
    inputs = dict(processor(text=QUESTION, images=make_scene(SEED).image))
    sites = attention_sites(model)
    forward = timed(lambda: model(**inputs), 20)
    sweep = statistics.median(_seconds(lambda: ablation_sweep(model, inputs)) for _ in range(7))
    naive = statistics.median(full_runs_per_head(model, inputs, sites) for _ in range(3))
    print(f"  embedded ({len(sites) * model.config.num_attention_heads} heads): sweep {sweep:.3f} s "
          f"({sweep / forward:.1f}x a forward of {forward * 1000:.1f} ms); one full fusion run per head {naive:.3f} s")
    model, inputs = base_model_and_inputs()
    before = timed(lambda: model(**inputs), 3)
    sweep = _seconds(lambda: ablation_sweep(model, inputs))
    forward = statistics.mean([before, timed(lambda: model(**inputs), 3)])  # around the sweep: the CPU's pace drifts
    heads = len(attention_sites(model)) * model.config.num_attention_heads
    naive = full_runs_per_head(model, inputs, attention_sites(model), heads=24)
    print(f"  vle-base VQA shape ({heads} heads): sweep {sweep:.1f} s = {sweep / forward:.1f}x a forward of "
          f"{forward:.2f} s; one full fusion run per head ≈ {naive:.0f} s = {naive / forward:.0f}x (timed on 24 heads)")


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def recolored_pairs(processor, count: int):
    """(question, clean inputs, corrupted inputs): held-out scenes from ``SEED`` whose first object is recoloured to a
    colour the scene lacks, asked about that object's colour."""
    from vle.shapes.counterfactual import recolor_object
    from vle.shapes.world import COLORS, make_scene

    seed = SEED
    while count:
        scene = make_scene(seed)
        seed += 1
        free = [c for c in COLORS if c not in {o.color for o in scene.objects}]
        if not free:
            continue
        first = scene.objects[0]
        question = f"what color is the {first.size} {first.shape} ?"
        yield (question, dict(processor(text=question, images=scene.image)),
               dict(processor(text=question, images=recolor_object(scene, 0, free[0]).image)))
        count -= 1


def part_patching(pairs: int) -> None:
    from vle.errors import InputError
    from vle.explain.patching import agreement, attribution_patching, exact_patching

    print("attribution patching over every site against exact patching (logit difference, clean vs corrupted)")
    model, processor = embedded()
    agreements, ratios, recovered = [], [], []
    for question, clean, corrupted in recolored_pairs(processor, pairs):
        try:
            exact = exact_patching(model, clean, corrupted)
        except InputError:  # the recolouring did not change the answer: no difference to patch
            continue
        seconds = statistics.median(_seconds(lambda: attribution_patching(model, clean, corrupted)) for _ in range(5))
        ratios.append(seconds / timed(lambda: model(**clean), 10))
        agreements.append(agreement(attribution_patching(model, clean, corrupted), exact))
        recovered.append(max(e["recovered"] for e in exact["effects"] if e["head"] is not None))
    sites = len(exact["effects"])
    print(f"  embedded, {len(agreements)} recoloured scenes ({sites} sites each): Spearman with exact patching "
          f"median {np.median(agreements):.3f} (min {min(agreements):.3f}); time {np.median(ratios):.1f}x a "
          f"forward (median); the strongest single head recovers {np.median(recovered):.2f} of the difference")
    model, clean = base_model_and_inputs(0)
    _, corrupted = base_model_and_inputs(1)
    corrupted["input_ids"] = clean["input_ids"]
    with torch.no_grad():
        answer = int(model(**clean).logits.argmax())
        ranked = model(**corrupted).logits[0].argsort(descending=True).tolist()
    foil = ranked[0] if ranked[0] != answer else ranked[1]
    forward = timed(lambda: model(**clean), 3)
    seconds = statistics.median(_seconds(lambda: attribution_patching(model, clean, corrupted, answer, foil))
                                for _ in range(3))
    started = time.perf_counter()
    exact = exact_patching(model, clean, corrupted, answer, foil)
    exact_seconds = time.perf_counter() - started
    estimate = attribution_patching(model, clean, corrupted, answer, foil)
    print(f"  vle-base VQA shape, two random images ({len(exact['effects'])} sites): attribution patching "
          f"{seconds:.2f} s = {seconds / forward:.2f}x a forward of {forward:.2f} s; exact patching "
          f"{exact_seconds:.0f} s; "
          f"Spearman {agreement(estimate, exact):.3f} (random weights)")


def part_explorer() -> None:
    from widgets.what_if import WhatIfExplorer

    print("What if explorer, embedded model: a click on a head's cell → new answer, probability and explanation")
    explorer = WhatIfExplorer()
    explorer.run()
    times, model_part, drawing = [], [], []
    for button in list(explorer.heads.buttons.values())[:8] * 2:  # each head ablated, then restored
        started = time.perf_counter()
        button.click()
        times.append(time.perf_counter() - started)
        model_part.append(explorer.timings["after"])
        drawing.append(explorer.timings["render"])
    print(f"  toggle ({explorer.method.value}): median {statistics.median(times) * 1000:.0f} ms, max "
          f"{max(times) * 1000:.0f} ms over {len(times)} clicks; of which the model {statistics.median(model_part):.0f}"
          f" ms and drawing {statistics.median(drawing):.0f} ms (medians)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    parts = args.parts.split(",")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
          "threads")
    if "sweep" in parts:
        part_sweep()
    if "patching" in parts:
        part_patching(args.pairs)
    if "explorer" in parts:
        part_explorer()


if __name__ == "__main__":
    main()
