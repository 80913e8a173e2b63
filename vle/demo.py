"""The main job: the embedded VQA model answers questions about a scene from ``pics/``, next to the truth."""

from __future__ import annotations

import json
from pathlib import Path

from .pipelines import pipeline

PICS = Path(__file__).resolve().parent.parent / "pics"


def run_shapes_demo(scene: str = "shapes_0", top_k: int = 3) -> int:
    """Print each example question of ``pics/<scene>.json``, the model's top answers and the truth; returns the
    number answered correctly."""

    record = json.loads((PICS / f"{scene}.json").read_text())
    image = PICS / f"{scene}.png"
    vqa = pipeline("vqa", "vle-tiny-shapes-vqa")
    print(f"scene {image.name}: " + ", ".join(f"{o['size']} {o['color']} {o['shape']}" for o in record["objects"]))
    correct = 0
    for item in record["questions"]:
        answers = vqa(image=str(image), question=item["question"], top_k=top_k)
        correct += answers[0]["answer"] == item["answer"]
        ranked = "  ".join(f"{a['answer']} {a['score']:.2f}" for a in answers)
        mark = "ok" if answers[0]["answer"] == item["answer"] else "WRONG"
        print(f"Q: {item['question']}\n   model: {ranked}\n   truth: {item['answer']}  [{mark}]")
    print(f"{correct} of {len(record['questions'])} answered correctly")
    return correct
