"""Write a few example scenes with their ground truth: ``python -m vle.shapes.make_pics [--out pics]``.

For each seed this writes ``shapes_<seed>.png`` (128x128) and ``shapes_<seed>.json``: the scene graph, example
questions with answers, a caption and a hard negative, and one VCR item. The JSON also carries the VCR metadata
keys (boxes, width, height, names) at top level, so it is the VCR item's own ``metadata_fn``.

>>> import tempfile
>>> paths = write_examples(tempfile.mkdtemp(), seeds=[0])
>>> sorted(p.suffix for p in paths)
['.json', '.png']
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .tasks import VQA_FAMILIES, make_caption, make_negative_caption, make_vcr, vcr_metadata
from .world import make_scene

DEFAULT_SEEDS = (0, 1, 2, 3, 4, 5)


def example_record(seed: int, n_questions: int = 6) -> dict:
    """Everything ``shapes_<seed>.json`` holds, as a JSON-able dict."""
    scene = make_scene(seed)
    rng = np.random.default_rng([seed, 0x9C5])
    questions = []
    for name in rng.permutation(list(VQA_FAMILIES)):
        example = VQA_FAMILIES[str(name)](scene, rng)
        if example is not None and len(questions) < n_questions:
            questions.append({**asdict(example), "evidence": list(example.evidence)})
    caption, caption_evidence = make_caption(scene, rng)
    negative, negative_evidence, kind = make_negative_caption(scene, rng)
    annotation, _ = make_vcr(scene, rng, img_fn=f"shapes_{seed}.png")
    return {
        **scene.to_json(),
        **vcr_metadata(scene),
        "questions": questions,
        "caption": {"text": caption, "evidence": list(caption_evidence)},
        "negative_caption": {"text": negative, "evidence": list(negative_evidence), "kind": kind},
        "vcr": annotation,
    }


def write_examples(out: str | Path, seeds: Iterable[int] = DEFAULT_SEEDS) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in seeds:
        png, js = out / f"shapes_{seed}.png", out / f"shapes_{seed}.json"
        make_scene(seed).image.save(png, optimize=True)
        js.write_text(_dumps(example_record(seed)))
        written += [png, js]
    return written


def _dumps(record: dict) -> str:
    """JSON with one line per top-level key and per list item of a list of objects, so files read easily."""
    def value(v) -> str:
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[\n  " + ",\n  ".join(json.dumps(x) for x in v) + "\n ]"
        return json.dumps(v)
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in record.items()) + "\n}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="pics", help="output folder (default: pics)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    args = parser.parse_args(argv)
    for path in write_examples(args.out, args.seeds):
        print(path)


if __name__ == "__main__":
    main()
