"""Copy a training run's stage checkpoints into the package as the embedded models:
``python -m vle.shapes.ship RUN_DIR`` → ``vle/checkpoints/vle-tiny-shapes{,-vqa,-vcr-q2a,-vcr-qa2r}``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..hub import SHIPPED_DIR
from .evaluate import SHIPPED
from .train import run_models

FILES = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json")
BUDGET_MB = 40


def ship(run_dir: str) -> float:
    """Install the four stage checkpoints of ``run_dir``; returns the shipped size in MB (must fit the budget)."""
    total = 0
    models = run_models(run_dir)
    absent = [task for task in SHIPPED if task not in models]
    if absent:
        raise FileNotFoundError(f"{run_dir} has no {', '.join(absent)} model: ship a run of the full recipe")
    for task, name in SHIPPED.items():
        source, target = Path(models[task]), SHIPPED_DIR / name
        missing = [f for f in FILES if not (source / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{source} lacks {missing}: did its stage finish?")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name_ in FILES:
            shutil.copy2(source / name_, target / name_)
            total += (target / name_).stat().st_size
    megabytes = total / 2**20
    if megabytes > BUDGET_MB:
        raise ValueError(f"shipped checkpoints take {megabytes:.1f} MB, over the {BUDGET_MB} MB budget")
    return megabytes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    print(f"shipped {ship(parser.parse_args().run_dir):.1f} MB into {SHIPPED_DIR}")
