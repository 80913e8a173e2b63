"""Forward time of VLE at the real vle-base shapes (random weights), in seconds.

- VQA: image 576, patch 16, 3129 answers, one question of 12 tokens.
- VCR Q2A: image 384, 4 choices of 80 tokens, each with 2 object boxes; our batched head (image tower once) against
  the original's recipe (the whole model once per choice).

Usage: python benchmarks/bench_forward.py [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vle import VLEConfig, VLEForVCRQ2A, VLEForVQA


def base_config(image_size: int, **overrides) -> VLEConfig:
    text = dict(model_type="deberta-v2", vocab_size=128100, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                max_relative_positions=-1, position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)
    vision = dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=image_size, patch_size=16, hidden_act="quick_gelu")
    return VLEConfig(text_config=text, vision_config=vision, **overrides)


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


def bench_vqa(repeats: int) -> None:
    model = VLEForVQA(base_config(576, id2label={i: str(i) for i in range(3129)})).eval()
    inputs = dict(input_ids=torch.randint(5, 1000, (1, 12)), pixel_values=torch.randn(1, 3, 576, 576))
    print(f"vqa  vle-base shape (image 576, 3129 answers, batch 1): {timed(lambda: model(**inputs), repeats):.3f} s")


def bench_vcr(repeats: int) -> None:
    model = VLEForVCRQ2A(base_config(384, num_token_types=83)).eval()
    choices, length = 4, 80
    ids = torch.randint(5, 1000, (1, choices, length))
    mask = torch.ones_like(ids)
    patch_ids = [[[list(range(0, 30)), list(range(100, 140))] for _ in range(choices)]]
    types = [[([2, 3], [0] * 10 + [2, 2] + [0] * 20 + [3]) for _ in range(choices)]]
    pixels = torch.randn(1, 3, 384, 384)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, patch_ids=patch_ids,
                  extend_token_type_ids=types)

    def per_choice():  # the original recipe: both towers and the fusion, once per choice
        for c in range(choices):
            out = model.vle(input_ids=ids[:, c], attention_mask=mask[:, c], pixel_values=pixels,
                            patch_ids=[patch_ids[0][c]], extend_token_type_ids=([types[0][c][0]], [types[0][c][1]]))
            model.vcr_q2a_logit(out.pooler_output)

    batched = timed(lambda: model(**inputs), repeats)
    naive = timed(per_choice, repeats)
    print(f"vcr_q2a vle-base shape (image 384, 4 choices x 80 tokens): batched {batched:.3f} s, "
          f"once per choice {naive:.3f} s, ratio {batched / naive:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}")
    bench_vqa(args.repeats)
    bench_vcr(args.repeats)


if __name__ == "__main__":
    main()
