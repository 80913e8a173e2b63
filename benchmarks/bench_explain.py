"""Time of every explanation method as a multiple of one plain forward of the same model (batch 1, on the CPU or,
with ``--device cuda``, a GPU).

- ``tiny``: the embedded shapes VQA model (``vle-tiny-shapes-vqa``) on a held-out scene, when it is shipped.
- ``base``: the vle-base VQA shape (image 576, 3129 answers, random weights), a 12-token question.

``record`` is one forward inside a ``Recorder`` capturing every attention map (towers and fusion). Methods that need
no gradient into the image tower are timed twice: cold (image tower included) and ``cached`` (a new question about
the same image: the image features are reused). IG reports its peak resident memory growth (Linux) for two internal
batch sizes on the tiny model, and its time, completeness delta and rank agreement in the precision its ``auto``
default did not choose (float32 or bfloat16 autocast). At the base shape, occlusion uses 6 × 6-patch windows (36
windows instead of 1296 patches). IG runs with its defaults (``auto``: at the base shape on the CPU bfloat16 at
internal batch 2, on a GPU batch 8); on a GPU the peak GPU memory of each call is printed.

Usage: python benchmarks/bench_explain.py [--which tiny|base|both] [--repeats N] [--threads T] [--methods a,b]
                                         [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from bench_forward import base_config, gpu_in_use, median_time
from viz.comparison import correlate_ranks
from vle import VLEForVQA
from vle.explain import METHODS, ExplainInputs, ImageFeatureCache, Recorder, VQAAnswer, explain

warnings.filterwarnings("ignore")


def peak_rss_growth(fn) -> float:
    """MiB the resident-set high-water mark grows while ``fn`` runs (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        def read(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith(field))
        before = read("VmRSS:")
        fn()
        return (read("VmHWM:") - before) / 1024
    except OSError:
        fn()
        return float("nan")


def tiny_case():
    from vle.hub import resolve_model_path, shipped_models
    from vle.processing_vle import VLEProcessor
    from vle.shapes import make_scene

    if "vle-tiny-shapes-vqa" not in shipped_models():
        return None
    path = resolve_model_path("vle-tiny-shapes-vqa")
    model, processor = VLEForVQA.from_pretrained(path).eval(), VLEProcessor.from_pretrained(path)
    inputs = ExplainInputs.build(processor, make_scene(1_000_003).image, "what shape is the red object ?")
    return "embedded vle-tiny-shapes-vqa (image 128, 8x8 patches)", model, inputs, {"ig_peak_batches": (4, 16)}


def base_case():
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    ids = torch.randint(5, 1000, (1, 12))
    ids[0, 0], ids[0, -1] = 1, 2
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "pixel_values": torch.randn(1, 3, 576, 576)}
    tokens = ("[CLS]",) + tuple(f"▁w{i}" for i in range(10)) + ("[SEP]",)
    inputs = ExplainInputs(batch, tokens)
    return "vle-base VQA shape (image 576, 36x36 patches, random weights)", model, inputs, {
        "occlusion": {"patch_window": 6}, "ig_peak_batches": ()}


def on_device(case, device: str):
    """The case with its model and inputs on ``device``; on a GPU without IG's resident-memory measurement (peak GPU
    memory is printed instead)."""
    title, model, inputs, options = case
    if device == "cpu":
        return case
    options = {**options, "ig_peak_batches": ()}
    return f"{title}, {torch.cuda.get_device_name()}", model.to(device), inputs.to(device), options


def peak_gpu_memory(fn) -> float | None:
    """GiB of GPU memory at the peak of ``fn``; None (and ``fn`` not run) without a GPU in use."""
    if not gpu_in_use():
        return None
    torch.cuda.reset_peak_memory_stats()
    fn()
    return torch.cuda.max_memory_allocated() / 2 ** 30


def compare_precisions(model, inputs, target, settings, default, plain: float, repeats: int) -> None:
    """IG in the precision its ``auto`` default did not choose: time, completeness delta of both, and how the two
    rank the patches and the tokens (Spearman)."""
    used = default.metadata["precision"]
    other = "float32" if used == "bfloat16" else "bfloat16"
    runs = []
    seconds = median_time(lambda: runs.append(explain(model, inputs, target, "integrated_gradients",
                                                      **{**settings, "precision": other})), repeats)
    patches = correlate_ranks([default.patch_scores, runs[-1].patch_scores])[0, 1]
    tokens = correlate_ranks([default.token_scores, runs[-1].token_scores])[0, 1]
    print(f"  {'integrated_gradients precision':<34} auto chose {used}: delta "
          f"{default.metadata['convergence_delta']:.2g}; {other}: delta {runs[-1].metadata['convergence_delta']:.2g}, "
          f"{seconds / plain:.2f} x; rank agreement patches {patches:.3f}, tokens {tokens:.3f}", flush=True)


def run(case, repeats: int, methods) -> None:
    title, model, inputs, options = case
    target = VQAAnswer(0)
    with torch.inference_mode():
        plain = median_time(lambda: model(**inputs.model_inputs), repeats)

        def record():
            with Recorder(model):
                model(**inputs.model_inputs)
        recorded = median_time(record, repeats)
    print(f"\n{title}\n  plain forward {plain * 1000:.1f} ms")
    print(f"  {'record every attention map':<34} {recorded / plain:6.2f} x")
    cache = ImageFeatureCache()
    for name in methods:
        settings = options.get(name, {})
        results = []  # the timed runs' explanations: IG's float32 delta is read from the last one
        cold = median_time(lambda: results.append(explain(model, inputs, target, name, **settings)), repeats)
        line = f"  {name:<34} {cold / plain:6.2f} x"
        if not METHODS[name].needs_image_tower:
            warm = ExplainInputs(**{**inputs.__dict__, "image_features": None})
            warm.image_features = cache.features(model, inputs.model_inputs["pixel_values"])
            cached = median_time(lambda: explain(model, warm, target, name, **settings), repeats)
            line += f"   cached image features {cached / plain:6.2f} x"
        if name == "integrated_gradients":
            peaks = {b: peak_rss_growth(lambda b=b: explain(model, inputs, target, name, internal_batch_size=b))
                     for b in options.get("ig_peak_batches", ())}
            if peaks:
                line += "   peak RSS growth " + ", ".join(f"batch {b}: {mib:.0f} MiB" for b, mib in peaks.items())
        gpu = peak_gpu_memory(lambda: explain(model, inputs, target, name, **settings))
        if gpu is not None:
            line += f"   peak GPU memory {gpu:.2f} GiB"
        if settings:
            line += f"   ({', '.join(f'{k}={v}' for k, v in settings.items())})"
        print(line, flush=True)
        if name == "integrated_gradients":
            compare_precisions(model, inputs, target, settings, results[-1], plain, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--which", choices=("tiny", "base", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "pbc"))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}; IG: 32 steps, its auto "
          "precision and internal batch")
    if args.which in ("tiny", "both"):
        case = tiny_case()
        print("\nembedded model not shipped: skipped") if case is None else run(on_device(case, args.device),
                                                                                 args.repeats, methods)
    if args.which in ("base", "both"):
        run(on_device(base_case(), args.device), args.repeats, methods)


if __name__ == "__main__":
    main()
