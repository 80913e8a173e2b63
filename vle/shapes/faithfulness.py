"""The faithfulness benchmark on held-out shapes-world VQA questions: ``vle-workbench faithfulness [--seed S] [--n N]
[--json]``. Scenes ``S .. S+N-1`` (held-out seeds, as in ``vle-workbench evaluate``), one VQA question per scene, the
model's own answer explained by every method that enters (``benchmark_methods``), scored by the generic metrics:

- perturbation curves and their AUCs (``vle.explain.faithfulness``), image patches and text tokens, both orders;
- pointing game: the top patch lies on an evidence object (a patch it covers by at least a quarter);
- relevance mass: the share of positive patch relevance inside the evidence masks (coverage-weighted)
  (``vle.metrics.localisation``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..explain.core import explain
from ..explain.faithfulness import auc, perturbation_curve
from ..explain.inputs import ExplainInputs, ImageFeatureCache
from ..explain.methods import METHODS
from ..explain.targets import VQAAnswer, vqa_answer
from ..explain.wrapper import TargetForward
from ..hub import resolve_model_path
from ..metrics import localisation
from ..modeling_vle import VLEForVQA
from ..processing_vle import VLEProcessor
from .data import HELD_OUT_SEED, ScenePool, normalize
from .evaluate import DEFAULT_SEED
from .tasks import make_vqa
from .world import object_patches, patch_coverage

DEFAULT_MODEL = "vle-tiny-shapes-vqa"
# questions per evaluation: the attention methods' pointing games are close, and telling them apart takes a few
# hundred questions (docs/explanations.md)
DEFAULT_QUESTIONS = 200


def evidence_masks(scene, evidence, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(hit patches, coverage), both (grid, grid), of the evidence objects of ``scene``: the patches an evidence
    object covers by at least a quarter, and the fraction of each patch the evidence covers."""
    hit_patches = np.zeros((scene.image_size // patch_size,) * 2, dtype=bool)
    union = np.zeros((scene.image_size, scene.image_size), dtype=bool)
    for index in evidence:
        hit_patches |= object_patches(scene, index, patch_size)
        union |= scene.objects[index].mask
    return hit_patches, patch_coverage(union, patch_size)


def examples(seed: int, n: int, processor, progress: bool = False):
    """(scene, question example, batch-1 model inputs) for held-out scenes ``seed .. seed+n-1``."""
    pool = ScenePool(seed, n, progress=progress)
    for i, scene in enumerate(pool.scenes):
        example = make_vqa(scene, np.random.default_rng([seed, i, 5]))
        batch = {**processor.tokenize([example.question]), "pixel_values": normalize(pool.pixels[[i]])}
        yield scene, example, ExplainInputs.from_batch(batch, processor)


def benchmark_methods() -> list[str]:
    """Every registered method that explains VQA answers, unless it opts out (``Method.benchmark = False``), in
    registration order."""
    return [name for name, cls in METHODS.items() if cls.benchmark and cls.supports(VQAAnswer(0))]


def faithfulness(seed: int | None = None, n: int = DEFAULT_QUESTIONS, methods=None, model=DEFAULT_MODEL,
                 processor=None, progress: bool = True, dtype="float32") -> dict:
    """Every method (default: ``benchmark_methods()``) over ``n`` held-out questions: a dict keyed by method name,
    plus ``n_examples``."""
    seed = DEFAULT_SEED if seed is None else seed
    if seed < HELD_OUT_SEED:
        raise ValueError(f"evaluation seeds must be held out: use a seed >= {HELD_OUT_SEED}, got {seed}")
    if n < 1:
        raise ValueError("n must be at least 1")
    methods = benchmark_methods() if methods is None else list(methods)
    if isinstance(model, str):
        path = resolve_model_path(model)
        model = VLEForVQA.from_pretrained(path, dtype=dtype).eval()
        processor = processor or VLEProcessor.from_pretrained(path)
    rows, cache = defaultdict(lambda: defaultdict(list)), ImageFeatureCache()
    for scene, example, inputs in tqdm(examples(seed, n, processor), total=n, desc="faithfulness",
                                       disable=not progress):
        inputs = inputs.for_model(model)
        inputs.image_features = cache.features(model, inputs.model_inputs["pixel_values"])
        with torch.no_grad():
            predicted = int(TargetForward(model, inputs, vqa_answer(model, 0)).logits().argmax())
        target, truth = vqa_answer(model, predicted), vqa_answer(model, example.answer).index
        for name in methods:
            _score(rows[name], model, inputs, target, truth, scene, example, name)
    return summarise(rows, n)


def _score(row, model, inputs, target, truth, scene, example, method) -> None:
    explanation = explain(model, inputs, target, method)
    row["seconds"].append(explanation.metadata["seconds"])
    row["probability"].append(explanation.metadata["target_probability"])
    row["correct"].append(float(target.index == truth))
    for modality, scores in (("image", explanation.patch_scores), ("text", explanation.token_scores)):
        for order in ("pos", "neg"):
            curve = perturbation_curve(model, inputs, target, scores, modality, order, truth)
            row[f"{order}_auc_{modality}"].append(auc(curve))
            row[f"{order}_auc_{modality}_accuracy"].append(auc(curve, "correct"))
    if example.evidence:
        hit, mass = localisation(explanation.patch_scores, *evidence_masks(scene, example.evidence,
                                                                          model.config.patch_size))
        row["pointing_game"].append(hit)
        row["relevance_mass"].append(mass)
        if len(example.evidence) == 1:
            row["pointing_game_single"].append(hit)


def summarise(rows: dict, n: int) -> dict:
    results = {}
    for name, row in rows.items():
        mean = lambda key: float(np.mean(row[key])) if row[key] else float("nan")  # noqa: E731
        results[name] = {
            "pointing_game": mean("pointing_game"), "pointing_game_single": mean("pointing_game_single"),
            "relevance_mass": mean("relevance_mass"),
            **{f"{o}_auc_{m}{s}": mean(f"{o}_auc_{m}{s}") for s in ("", "_accuracy") for m in ("image", "text")
               for o in ("pos", "neg")},
            "seconds_per_example": mean("seconds"), "unperturbed_probability": mean("probability"),
            "unperturbed_accuracy": mean("correct"), "n_examples": n, "n_localised": len(row["pointing_game"]),
            "n_single_object": len(row["pointing_game_single"]),
        }
    results["n_examples"] = n
    return results


COLUMNS = (("pointing_game", "point"), ("pointing_game_single", "point-1"), ("relevance_mass", "mass"),
           ("pos_auc_image", "img+ ↓"), ("neg_auc_image", "img- ↑"), ("pos_auc_text", "txt+ ↓"),
           ("neg_auc_text", "txt- ↑"), ("seconds_per_example", "s/ex"))


def format_table(results: dict) -> str:
    methods = [m for m in results if isinstance(results[m], dict)]
    width = max(len(m) for m in methods)
    lines = [f"{'method':<{width}}  " + "  ".join(f"{title:>8}" for _, title in COLUMNS)]
    for name in methods:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{results[name][key]:>8.3f}" for key, _ in COLUMNS))
    first = results[methods[0]]
    lines.append(f"{results['n_examples']} questions ({first['n_localised']} with evidence, "
                 f"{first['n_single_object']} single-object); unperturbed answer probability "
                 f"{first['unperturbed_probability']:.3f}, accuracy {first['unperturbed_accuracy']:.3f}. "
                 "AUCs are of the answer's probability; ↓ lower is better, ↑ higher is better.")
    return "\n".join(lines)
