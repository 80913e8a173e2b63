"""Faithfulness and localisation of explanation methods on held-out shapes-world VQA questions.

``vle-workbench faithfulness [--seed S] [--n N] [--json]``: scenes ``S .. S+N-1`` (held-out seeds, as in
``vle-workbench evaluate``), one VQA question per scene, the model's own answer explained by every method.

- Perturbation curves (Chefer et al. 2021): remove image patches (pixels set to the image's median colour,
  ``inputs.background_fill``) or text tokens (dropped from the attention mask; special tokens stay) in order of
  relevance, most relevant first (``pos``) or least relevant first (``neg``), at fractions 0, 0.1, ..., 1; track the
  explained answer's probability and whether the model still answers correctly. The area under each curve is
  reported: lower ``pos`` and higher ``neg`` AUC mean a more faithful method.
- Pointing game: the top patch lies on an evidence object (a patch it covers by at least a quarter).
- Relevance mass: the share of positive patch relevance that falls inside the evidence masks (coverage-weighted).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..shapes.world import object_patches, patch_coverage
from .core import explain
from .inputs import ExplainInputs, ImageFeatureCache, background_fill, model_device
from .targets import vqa_answer
from .wrapper import TargetForward

FRACTIONS = np.linspace(0.0, 1.0, 11)
FAITHFULNESS_METHODS = ("random", "raw_attention", "rollout", "coattention_relevance", "integrated_gradients",
                        "occlusion", "gradcam")
DEFAULT_MODEL = "vle-tiny-shapes-vqa"
# questions per evaluation: the attention methods' pointing games differ by about 0.01 (standard error 0.007 on 1,000
# questions), so a comparison of methods on far fewer questions is mostly noise
DEFAULT_QUESTIONS = 200


def removal_order(scores: np.ndarray, order: str) -> np.ndarray:
    """Indices, most relevant first (``pos``) or least relevant first (``neg``); ties keep index order."""
    if order not in ("pos", "neg"):
        raise ValueError(f"order must be 'pos' or 'neg', got {order!r}")
    return np.argsort(-scores if order == "pos" else scores, kind="stable")


def perturbation_curve(model, inputs: ExplainInputs, target, scores: np.ndarray, modality: str, order: str,
                       truth: int | None = None, fractions=FRACTIONS) -> dict:
    """Target probability and correctness (argmax == ``truth``) after removing growing fractions of ``modality``
    (``image``: the patch grid, ``scores`` (patches,); ``text``: the non-special tokens, ``scores`` (text_len,))."""
    forward = TargetForward(model, inputs, target)
    if modality == "image":
        grid, patch = model.config.patch_grid, model.config.patch_size
        ranked = removal_order(np.asarray(scores).reshape(-1), order)
        fill = background_fill(inputs.model_inputs["pixel_values"])[0]  # (3, H, W)
        pixels = inputs.model_inputs["pixel_values"].repeat(len(fractions), 1, 1, 1)  # (fractions, 3, H, W)
        for row, fraction in enumerate(fractions):
            for index in ranked[: int(round(fraction * len(ranked)))]:
                r, c = divmod(int(index), grid)
                window = (slice(None), slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
                pixels[(row, *window)] = fill[window]
        call = dict(pixel_values=pixels)
    elif modality == "text":
        ids = inputs.model_inputs["input_ids"][0].tolist()
        content = np.array([i for i, token in enumerate(ids) if token not in inputs.special_ids])
        ranked = content[removal_order(np.asarray(scores)[content], order)]
        keep = torch.ones(len(fractions), len(ids), device=inputs.model_inputs["input_ids"].device)
        for row, fraction in enumerate(fractions):
            keep[row, ranked[: int(round(fraction * len(ranked)))]] = 0.0
        call = dict(text_keep=keep)
    else:
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    with torch.no_grad():
        logits = forward.logits(**call)
    probability = target.probability(logits).cpu().numpy()
    correct = (logits.argmax(-1) == truth).float().cpu().numpy() if truth is not None \
        else np.full(len(fractions), np.nan)
    return {"fractions": np.asarray(fractions), "probability": probability, "correct": correct}


def auc(curve: dict, key: str = "probability") -> float:
    return float(np.trapezoid(curve[key], curve["fractions"]))


def localisation(patch_scores: np.ndarray, scene, evidence, patch_size: int) -> tuple[float, float]:
    """(pointing-game hit, relevance mass) of a (grid, grid) map against the evidence objects of ``scene``."""
    hit_patches = np.zeros(patch_scores.shape, dtype=bool)
    union = np.zeros((scene.image_size, scene.image_size), dtype=bool)
    for index in evidence:
        hit_patches |= object_patches(scene, index, patch_size)
        union |= scene.objects[index].mask
    coverage = patch_coverage(union, patch_size)
    top = np.unravel_index(np.argmax(patch_scores), patch_scores.shape)
    positive = np.clip(patch_scores, 0, None)
    mass = float((positive * coverage).sum() / positive.sum()) if positive.sum() > 0 else 0.0
    return float(hit_patches[top]), mass


def examples(seed: int, n: int, processor, progress: bool = False):
    """(scene, question example, batch-1 model inputs) for held-out scenes ``seed .. seed+n-1``."""
    from ..shapes.data import ScenePool, normalize
    from ..shapes.tasks import make_vqa

    pool = ScenePool(seed, n, progress=progress)
    for i, scene in enumerate(pool.scenes):
        example = make_vqa(scene, np.random.default_rng([seed, i, 5]))
        batch = {**processor.tokenize([example.question]), "pixel_values": normalize(pool.pixels[[i]])}
        yield scene, example, ExplainInputs.from_batch(batch, processor)


def faithfulness(seed: int | None = None, n: int = DEFAULT_QUESTIONS, methods=FAITHFULNESS_METHODS, model=DEFAULT_MODEL,
                 processor=None, progress: bool = True) -> dict:
    """Every method over ``n`` held-out questions: a dict keyed by method name, plus ``n_examples``."""
    from ..modeling_vle import VLEForVQA
    from ..shapes.evaluate import DEFAULT_SEED

    seed = DEFAULT_SEED if seed is None else seed
    if seed < 1_000_000:
        raise ValueError(f"evaluation seeds must be held out: use a seed >= 1000000, got {seed}")
    if n < 1:
        raise ValueError("n must be at least 1")
    if isinstance(model, str):
        from ..hub import resolve_model_path
        from ..processing_vle import VLEProcessor

        path = resolve_model_path(model)
        model, processor = VLEForVQA.from_pretrained(path).eval(), processor or VLEProcessor.from_pretrained(path)
    rows, cache = defaultdict(lambda: defaultdict(list)), ImageFeatureCache()
    for scene, example, inputs in tqdm(examples(seed, n, processor), total=n, desc="faithfulness",
                                       disable=not progress):
        inputs = inputs.to(model_device(model))
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
        hit, mass = localisation(explanation.patch_scores, scene, example.evidence, model.config.patch_size)
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
