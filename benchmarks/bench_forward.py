"""VLE at the real shapes (random weights): float32 against ``dtype="auto"``, batched throughput, memory, the VQA
explorer's question → answer + explanation time, and bfloat16's numerical agreement with float32.

Parts (``--parts``, all by default):

- ``forward``: one forward in float32 and in the type ``auto`` picks, side by side: VQA at image 576 (3129 answers, a
  12-token question), ITM at 224, VCR Q2A at 384 (4 choices of 80 tokens, 2 boxes each; also against the original's
  once-per-choice recipe).
- ``batch``: VQA at image 224 in the ``auto`` type, questions per second at batch 1, 8 and 32, with one image for the
  whole batch and with a distinct image per question (``vle.pipelines.batch_logits``: the tower once per image).
- ``memory``: the resident memory of a vle-large-shaped VQA model (930M parameters) materialised in float32 and in
  bfloat16, each in a fresh process (as ``from_pretrained(dtype=...)`` loads it: no float32 copy on the way).
- ``explorer``: the VQA explorer on a vle-base-shaped model in the ``auto`` type: Run (question → answer and
  co-attention relevance, drawn) and a switch to rollout, against one float32 forward.
- ``checks``: the shipped embedded VQA model forced to bfloat16 against float32: top-1 agreement over held-out
  questions (every family, ``--questions`` scenes) and the pointing game of each attention method on the faithfulness
  benchmark's questions; and at the vle-base shape, the logits' relative error and each method's rank agreement.

Usage: python benchmarks/bench_forward.py [--parts forward,batch,...] [--repeats N] [--threads T] [--device cpu|cuda]
                                          [--questions N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from vle import VLEConfig, VLEForITM, VLEForVCRQ2A, VLEForVQA
from vle.pipelines import batch_logits
from vle.precision import dtype_name, has_fast_bfloat16, resolve_dtype
from vle.testing import tiny_processor

PARTS = ("forward", "batch", "memory", "explorer", "checks")
ATTENTION_METHODS = ("raw_attention", "rollout", "coattention_relevance", "gradcam")


def base_config(image_size: int, **overrides) -> VLEConfig:
    """vle-base's towers (DeBERTa-v3-base, CLIP-ViT-B/16) and fusion (6 layers of 768) at ``image_size``."""
    text = dict(model_type="deberta-v2", vocab_size=128100, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                max_relative_positions=-1, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)
    vision = dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=image_size, patch_size=16, hidden_act="quick_gelu")
    return VLEConfig(text_config=text, vision_config=vision, **overrides)


def large_config() -> VLEConfig:
    """vle-large-for-vqa: DeBERTa-v3-large, CLIP-ViT-L/14 at 504, a 1024-wide fusion, 3129 answers (the spec's)."""
    text = dict(model_type="deberta-v2", vocab_size=128100, hidden_size=1024, num_hidden_layers=24,
                num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512, relative_attention=True,
                position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                max_relative_positions=-1, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)
    vision = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, image_size=504, patch_size=14, hidden_act="quick_gelu")
    return VLEConfig(text_config=text, vision_config=vision, hidden_size=1024, num_attention_heads=16,
                     intermediate_size=4096, id2label={i: str(i) for i in range(3129)})


def gpu_in_use() -> bool:
    """Whether this process has started work on a GPU (without starting CUDA to find out)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def median_time(fn, repeats: int, warmup: bool | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one warm-up call (by default when repeating); a GPU in
    use is synchronised before the clock stops."""
    def call():
        fn()
        if gpu_in_use():
            torch.cuda.synchronize()
    if repeats > 1 if warmup is None else warmup:
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn, repeats: int) -> float:
    """``median_time`` of a forward without autograd, always warmed up."""
    with torch.inference_mode():
        return median_time(fn, repeats, warmup=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cast(inputs: dict, dtype: torch.dtype, device) -> dict:
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()}


def side_by_side(name: str, model, inputs: dict, repeats: int, device) -> None:
    """One forward in float32 and in the type ``auto`` picks for this model and device."""
    auto = resolve_dtype("auto", model.config, device)
    model = model.to(device, torch.float32)
    f32 = timed(lambda: model(**cast(inputs, torch.float32, device)), repeats)
    if auto == torch.float32:
        print(f"  {name:<44} float32 {f32:7.3f} s   auto = float32")
        return
    model = model.to(auto)
    chosen = timed(lambda: model(**cast(inputs, auto, device)), repeats)
    model.float()
    print(f"  {name:<44} float32 {f32:7.3f} s   auto ({dtype_name(auto)}) {chosen:7.3f} s   ratio {chosen / f32:.2f}")


def part_forward(repeats: int, device) -> None:
    print("\nforward, float32 against auto (batch 1)")
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    side_by_side("VQA, image 576, 3129 answers", model,
                 dict(input_ids=torch.randint(5, 1000, (1, 12)), pixel_values=torch.randn(1, 3, 576, 576)), repeats,
                 device)
    del model
    model = VLEForITM(base_config(224)).eval()
    side_by_side("ITM, image 224", model,
                 dict(input_ids=torch.randint(5, 1000, (1, 12)), pixel_values=torch.randn(1, 3, 224, 224)), repeats,
                 device)
    del model
    model = VLEForVCRQ2A(base_config(384, num_token_types=83)).eval()
    choices, length = 4, 80
    ids = torch.randint(5, 1000, (1, choices, length))
    patch_ids = [[[list(range(0, 30)), list(range(100, 140))] for _ in range(choices)]]
    types = [[([2, 3], [0] * 10 + [2, 2] + [0] * 20 + [3]) for _ in range(choices)]]
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(1, 3, 384, 384),
                  patch_ids=patch_ids, extend_token_type_ids=types)
    side_by_side("VCR Q2A, image 384, 4 choices x 80 tokens", model, inputs, repeats, device)

    def per_choice():  # the original recipe: both towers and the fusion, once per choice
        for c in range(choices):
            out = model.vle(input_ids=ids[:, c].to(device), attention_mask=torch.ones_like(ids[:, c]).to(device),
                            pixel_values=inputs["pixel_values"].to(device), patch_ids=[patch_ids[0][c]],
                            extend_token_type_ids=([types[0][c][0]], [types[0][c][1]]))
            model.vcr_q2a_logit(out.pooler_output)
    model = model.to(device, torch.float32)
    batched = timed(lambda: model(**cast(inputs, torch.float32, device)), repeats)
    print(f"  VCR Q2A float32: batched head {batched:.3f} s, once per choice (the original) "
          f"{timed(per_choice, repeats):.3f} s")


def part_batch(repeats: int, device) -> None:
    model = VLEForVQA(base_config(224, id2label={i: str(i) for i in range(3129)})).eval()
    model = model.to(device, resolve_dtype("auto", model.config, device))
    processor = tiny_processor(224)
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((224, 224, 3)) * 255).astype(np.uint8)) for _ in range(32)]
    questions = [" ".join(rng.choice(["what", "color", "is", "the", "red", "circle", "left", "of"], 8 + i % 5))
                 for i in range(32)]
    print(f"\nbatched VQA at image 224 ({dtype_name(model.dtype)}): questions per second")
    per_question = {}
    for batch in (1, 8, 32):
        for kind, pick in (("same image", lambda i: images[0]), ("distinct images", lambda i: images[i])):
            def run():
                batch_logits(model, processor, [pick(i) for i in range(batch)], questions[:batch])
            seconds = median_time(run, repeats, warmup=True)
            per_question[batch, kind] = seconds / batch
            print(f"  batch {batch:>2} {kind:<16} {batch / seconds:7.2f} questions/s")
    print(f"  per-question time at batch 32 / batch 1, distinct images: "
          f"{per_question[32, 'distinct images'] / per_question[1, 'distinct images']:.2f}")


MEMORY_PROBE = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from bench_forward import large_config
from vle import VLEForVQA
dtype = getattr(torch, sys.argv[1])
with torch.device("meta"):
    model = VLEForVQA(large_config())
model = model.to(dtype).to_empty(device="cpu")
with torch.no_grad():
    for parameter in model.parameters():
        parameter.fill_(0.01)  # as loading writes every weight: the pages become resident
weights = sum(p.numel() * p.element_size() for p in model.parameters())
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**20
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} {weights / 2**30:.2f} {peak:.2f}")
"""


def part_memory() -> None:
    print("\nvle-large-shaped VQA model, materialised in a fresh process")
    peaks = {}
    for dtype in ("float32", "bfloat16"):
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, dtype, os.path.dirname(os.path.abspath(__file__))],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"  {dtype}: failed: {out.stderr.strip().splitlines()[-1]}")
            return
        millions, weights, peak = out.stdout.split()
        peaks[dtype] = float(peak)
        print(f"  {dtype:<9} {millions}M parameters, weights {weights} GiB, peak resident {peak} GiB")
    print(f"  peak bfloat16 / float32: {peaks['bfloat16'] / peaks['float32']:.2f}")


def part_explorer(repeats: int) -> None:
    from vle.explain import Session
    from widgets import VQAExplorer

    torch.manual_seed(0)
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    processor = tiny_processor(576)
    path = os.path.join(tempfile.mkdtemp(), "photo.png")
    Image.fromarray((np.random.default_rng(1).random((576, 768, 3)) * 255).astype(np.uint8)).save(path)
    inputs = {**processor(text="what is the color of the floor in the picture ?", images=Image.open(path))}
    forward = timed(lambda: model(**inputs), repeats)
    session = Session(model.to(resolve_dtype("auto", model.config)), processor)  # as loading by name with auto
    explorer = VQAExplorer(session, image=None, question="what is the color of the floor in the picture ?")
    explorer.picker.source.value, explorer.picker.path.value = "(path)", path
    runs, switches = [], []
    for _ in range(repeats):
        session.cache = type(session.cache)(8)  # a new image: the tower runs again
        explorer.method.value = "coattention_relevance"
        started = time.perf_counter()
        explorer.run_button.click()
        runs.append(time.perf_counter() - started)
        if explorer.status.error is not None:
            raise RuntimeError(explorer.status.message.value)
        started = time.perf_counter()
        explorer.method.value = "rollout"
        switches.append(time.perf_counter() - started)
    run, switch = statistics.median(runs), statistics.median(switches)
    print(f"\nVQA explorer, vle-base VQA shape (image 576), weights in {session.dtype_choice}")
    print(f"  one float32 forward                         {forward:.2f} s")
    print(f"  Run: answer + co-attention relevance, drawn {run:.2f} s   = {run / forward:.2f} x the float32 forward")
    print(f"  switch the method to rollout, drawn         {switch:.2f} s   = {switch / forward:.2f} x")


def part_checks(questions: int) -> None:
    from vle.explain import ExplainInputs, VQAAnswer, explain
    from vle.hub import resolve_model_path
    from vle.processing_vle import VLEProcessor
    from vle.shapes.data import ScenePool, normalize
    from vle.shapes.evaluate import DEFAULT_SEED
    from vle.shapes.faithfulness import faithfulness
    from vle.shapes.tasks import VQA_FAMILIES, make_vqa

    print("\nbfloat16 against float32")
    path = resolve_model_path("vle-tiny-shapes-vqa")
    processor = VLEProcessor.from_pretrained(path)
    models = {name: VLEForVQA.from_pretrained(path, dtype=name).eval() for name in ("float32", "bfloat16")}
    pool = ScenePool(DEFAULT_SEED, questions, progress=False)
    same = total = 0
    for index, scene in enumerate(pool.scenes):
        rng = np.random.default_rng([DEFAULT_SEED, index, 0])
        asked = [e for e in (make_vqa(scene, rng, family=f) for f in VQA_FAMILIES) if e is not None]
        batch = {**processor.tokenize([e.question for e in asked]),
                 "pixel_values": normalize(pool.pixels[[index] * len(asked)])}
        with torch.inference_mode():
            top = [models[n](**{k: v.to(models[n].dtype) if v.is_floating_point() else v for k, v in batch.items()})
                   .logits.argmax(-1) for n in models]
        same += int((top[0] == top[1]).sum())
        total += len(asked)
    print(f"  embedded VQA model, top-1 agreement: {same / total:.4f} over {total} held-out questions "
          f"({questions} scenes from seed {DEFAULT_SEED})")
    pointing = {n: faithfulness(n=200, methods=ATTENTION_METHODS, model=models[n], processor=processor,
                                progress=False) for n in models}
    for method in ATTENTION_METHODS:
        a, b = (pointing[n][method]["pointing_game"]["value"] for n in models)
        print(f"  {method:<24} pointing game float32 {a:.3f}  bfloat16 {b:.3f}  difference {b - a:+.3f}")
    print("  (200 questions of the faithfulness benchmark)")

    torch.manual_seed(0)
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    base_processor = tiny_processor(576)
    image = (np.random.default_rng(2).random((576, 576, 3)) * 255).astype(np.uint8)
    inputs = ExplainInputs.build(base_processor, image, "what is the color of the floor in the picture ?")
    results = {}
    for name in ("float32", "bfloat16"):
        model = model.to(torch.bfloat16 if name == "bfloat16" else torch.float32)
        with torch.inference_mode():
            logits = model(**inputs.for_model(model).model_inputs).logits.float()
        maps = {m: explain(model, inputs, VQAAnswer(int(logits.argmax())), m).patch_scores for m in ATTENTION_METHODS}
        results[name] = (logits, maps)
    (l32, maps32), (l16, maps16) = results["float32"], results["bfloat16"]
    print(f"  vle-base VQA shape: logits' relative error {float((l16 - l32).norm() / l32.norm()):.4f}, "
          f"same top answer: {int(l16.argmax()) == int(l32.argmax())}")
    for method in ATTENTION_METHODS:
        agreement = spearmanr(maps32[method].ravel(), maps16[method].ravel()).statistic
        print(f"  {method:<24} rank agreement of patch scores {agreement:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU (forward and batch parts)")
    parser.add_argument("--questions", type=int, default=200, help="held-out scenes for the top-1 agreement")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"torch {torch.__version__} on {where} ({torch.backends.cpu.get_cpu_capability()} kernels), "
          f"{args.threads} threads, native bfloat16: {has_fast_bfloat16(device)}; median of {args.repeats}")
    if "forward" in parts:
        part_forward(args.repeats, device)
    if "batch" in parts:
        part_batch(args.repeats, device)
    if "memory" in parts:
        part_memory()
    if "explorer" in parts:
        part_explorer(args.repeats)
    if "checks" in parts:
        part_checks(args.questions)


if __name__ == "__main__":
    main()
