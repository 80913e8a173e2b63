"""Time of every explanation method as a multiple of one plain forward of the same model (batch 1, on the CPU or,
with ``--device cuda``, a GPU).

- ``tiny``: the embedded shapes VQA model (``vle-tiny-shapes-vqa``) on a held-out scene, when it is shipped.
- ``base``: the vle-base VQA shape (image 576, 3129 answers, random weights), a 12-token question.
- ``vcr-tiny``: the embedded VCR Q->A model (``vle-tiny-shapes-vcr-q2a``) on a held-out shapes VCR item, when shipped.
- ``vcr-base``: the vle-base VCR Q2A shape (image 384, 4 choices of 80 tokens, 2 boxes each, random weights).

The VCR cases explain choice 0 (``VCRChoice(0)``) with the methods that explain VCR targets, each as a multiple of
one plain VCR forward (every choice fused).

``record`` is one forward inside a ``Recorder`` capturing every attention map (towers and fusion). Methods that need
no gradient into the image tower are timed twice: cold (image tower included) and ``cached`` (a new question about
the same image: the image features are reused). IG reports its peak resident memory growth (Linux) for two internal
batch sizes on the tiny model, and its time, completeness delta and rank agreement in the precision its ``auto``
default did not choose (float32 or bfloat16 autocast). At the base shape, occlusion uses 6 × 6-patch windows (36
windows instead of 1296 patches; KernelSHAP likewise, and at the VCR base shape both use 6 × 6 windows of its 24 × 24
patches). IG runs with its defaults (``auto``: at the base shape on the CPU bfloat16 at
internal batch 2, on a GPU batch 8); on a GPU the peak GPU memory of each call is printed.

Usage: python benchmarks/bench_explain.py [--which tiny|base|vcr-tiny|vcr-base|both|vcr|all] [--repeats N]
                                         [--threads T] [--methods a,b] [--device cpu|cuda]

``both`` is tiny and base (the VQA cases), ``vcr`` the two VCR cases, ``all`` all four.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from bench_forward import base_config, gpu_in_use, median_time
from viz.comparison import correlate_ranks
from vle import VLEForVCRQ2A, VLEForVQA
from vle.explain import METHODS, ExplainInputs, ImageFeatureCache, Recorder, VCRChoice, VQAAnswer, explain

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
        "occlusion": {"patch_window": 6}, "kernel_shap": {"patch_window": 6}, "ig_peak_batches": ()}


def vcr_tiny_case():
    from vle.explain import Session
    from vle.hub import shipped_models
    from vle.shapes import make_scene, make_vcr

    if "vle-tiny-shapes-vcr-q2a" not in shipped_models():
        return None
    session = Session.from_pretrained("vle-tiny-shapes-vcr-q2a", head="vcr_q2a")
    scene = make_scene(1_000_003)
    annotation, metadata = make_vcr(scene, np.random.default_rng(0), "scene.png")
    inputs = session.prepare_vcr(annotation, scene.image, metadata)
    inputs.image_features = None  # timed from the pixels, as the VQA cases are
    choices, length = inputs.model_inputs["input_ids"].shape[1:]
    boxes = f"{inputs.n_boxes} box" + "es" * (inputs.n_boxes != 1)
    return (f"embedded vle-tiny-shapes-vcr-q2a (image 128, 8x8 patches, {choices} choices x {length} tokens, {boxes})",
            session.model, inputs, {"ig_peak_batches": (4, 16), "target": VCRChoice(0)})


def vcr_base_case():
    """As bench_forward.py's VCR Q2A forward: image 384, 4 choices of 80 tokens, each tagging the same 2 boxes."""
    model = VLEForVCRQ2A(base_config(384, num_token_types=83)).eval()
    choices, length = 4, 80
    ids = torch.randint(5, 1000, (1, choices, length))
    ids[..., 0], ids[..., -1] = 1, 2
    text_types = [0] * 10 + [2, 2] + [0] * 20 + [3]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "pixel_values": torch.randn(1, 3, 384, 384),
             "patch_ids": [[[list(range(0, 30)), list(range(100, 140))] for _ in range(choices)]],
             "extend_token_type_ids": [[([2, 3], text_types) for _ in range(choices)]]}
    pieces = ("[CLS]",) + tuple(f"▁w{i}" for i in range(length - 2)) + ("[SEP]",)
    inputs = ExplainInputs(batch, pieces, (pieces,) * choices)
    return (f"vle-base VCR Q2A shape (image 384, 24x24 patches, {choices} choices x {length} tokens, 2 boxes, random "
            "weights)", model, inputs, {"occlusion": {"patch_window": 6}, "kernel_shap": {"patch_window": 6},
                                        "ig_peak_batches": (), "target": VCRChoice(0)})


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
    target = options.get("target", VQAAnswer(0))
    skipped = [name for name in methods if not METHODS[name].supports(target)]
    methods = [name for name in methods if name not in skipped]
    with torch.inference_mode():
        # warmed up even for one repeat: a process's first forward also pays one-time costs (allocations, kernel
        # set-up), and every ratio below divides by this time
        plain = median_time(lambda: model(**inputs.model_inputs), repeats, warmup=True)

        def record():
            with Recorder(model):
                model(**inputs.model_inputs)
        recorded = median_time(record, repeats)
    print(f"\n{title}\n  plain forward {plain * 1000:.1f} ms")
    if skipped:
        print(f"  (these do not explain {target.label}: {', '.join(skipped)})")
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
        if name == "attnlrp":
            m = results[-1].metadata
            print(f"  {'attnlrp conservation':<34} input relevance {m['relevance_sum']:.4g} of the score "
                  f"{m['score']:.4g} ({m['conservation']:.2f}); the softmax rule absorbed {m['softmax_absorbed']:.4g}, "
                  "the model's additive constants the rest", flush=True)


CASES = {"tiny": tiny_case, "base": base_case, "vcr-tiny": vcr_tiny_case, "vcr-base": vcr_base_case}
GROUPS = {"both": ("tiny", "base"), "vcr": ("vcr-tiny", "vcr-base"), "all": tuple(CASES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--which", choices=tuple(CASES) + tuple(GROUPS), default="both")
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
    for which in GROUPS.get(args.which, (args.which,)):
        case = CASES[which]()
        print(f"\n{which}: embedded model not shipped: skipped") if case is None else run(
            on_device(case, args.device), args.repeats, methods)


if __name__ == "__main__":
    main()
