"""The object-removal study: ``vle-workbench counterfactual [--seed S] [--n N] [--methods a,b] [--json]``.

On held-out scenes ``S .. S+N-1``, one VQA question per scene (the questions of the faithfulness benchmark,
``faithfulness.examples``): each object is removed in turn (``counterfactual.remove_object``, the scene re-rendered
from its seed) and the question asked again. Removing an evidence object should change the answer far more often
than removing any other object; and an explanation is faithful to the extent that the objects it finds relevant are
the ones whose removal costs the answer probability (``removal_correlation``: Spearman, per question, between each
object's relevance and the drop in the original answer's probability when it is removed).

An object's relevance is the sum over patches of the patch score times the fraction of that patch the object covers.
``removal_rows`` keeps one row per question (for bootstrap intervals); ``summarise`` turns rows into the result.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..errors import InputError, check_int
from ..explain.core import explain
from ..explain.inputs import ImageFeatureCache
from ..explain.targets import vqa_answer
from ..modeling_vle import VLEForVQA
from .data import HELD_OUT_SEED
from .evaluate import DEFAULT_SEED
from .faithfulness import DEFAULT_MODEL, check_methods, examples, load_model
from .faithfulness_metrics import MIN_OBJECTS, object_relevance, object_removals, removal_rho

__all__ = ["MIN_OBJECTS", "check_methods", "check_study", "correlations", "format_table", "removal_rows",
           "removal_study", "summarise"]


def check_study(seed, n, methods) -> tuple[int, int, list[str]]:
    """(first seed, number of questions, methods), checked before any model loads."""
    seed = DEFAULT_SEED if seed is None else check_int(seed, "seed")
    if seed < HELD_OUT_SEED:
        raise InputError(f"evaluation seeds must be held out: use a seed >= {HELD_OUT_SEED}, got {seed}")
    return seed, check_int(n, "n (questions)", low=1), check_methods(methods)


def removal_rows(seed: int | None = None, n: int = 100, methods=None, model=DEFAULT_MODEL, processor=None,
                 progress: bool = True, dtype="float32") -> list[dict]:
    """One row per question: its ``seed``, ``family``, ``question``, ``answer`` (the truth), the model's
    ``predicted`` answer and its ``probability``, ``removals`` (per object: ``evidence``, ``changed`` (the model's
    answer), ``probability`` and ``drop`` of the original answer, the re-derived ``truth`` or None) and
    ``relevance`` ({method: per-object relevance})."""
    seed, n, methods = check_study(seed, n, methods)
    model, processor = load_model(model, processor, VLEForVQA, dtype)
    rows, cache = [], ImageFeatureCache(size=1)
    for i, (scene, example, inputs) in enumerate(tqdm(examples(seed, n, processor), total=n, desc="removal study",
                                                      disable=not progress)):
        rows.append(_question_row(model, inputs.for_model(model), cache, scene, example, methods, seed + i))
    return rows


def _question_row(model, inputs, cache, scene, example, methods, seed) -> dict:
    inputs.image_features = cache.features(model, inputs.model_inputs["pixel_values"])
    effects = object_removals(model, inputs, scene, example)
    target = vqa_answer(model, effects.predicted)
    relevance = {name: object_relevance(effects.coverage, explain(model, inputs, target, name).patch_scores).tolist()
                 for name in methods}
    return {"seed": seed, "family": example.family, "question": example.question, "answer": example.answer,
            "predicted": target.answer, "probability": effects.probability, "removals": effects.removals,
            "relevance": relevance}


def removal_study(seed: int | None = None, n: int = 100, methods=None, model=DEFAULT_MODEL, processor=None,
                  progress: bool = True, dtype="float32") -> dict:
    """Every object of ``n`` held-out questions removed in turn: how often the answer changes (evidence objects vs
    the rest, overall and by family) and how well each method's object relevance ranks the removals' effects."""
    rows = removal_rows(seed, n, methods, model, processor, progress, dtype)
    name = model if isinstance(model, str) else type(model).__name__
    return summarise(rows, DEFAULT_SEED if seed is None else seed, name)


def _rate(flags) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def _change_rates(rows) -> dict:
    changed = {True: [], False: []}
    truth = {True: [], False: []}
    for row in rows:
        for r in row["removals"]:
            changed[r["evidence"]].append(r["changed"])
            if r["truth"] is not None:
                truth[r["evidence"]].append(r["truth"] != row["answer"])
    return {"evidence_change_rate": _rate(changed[True]), "other_change_rate": _rate(changed[False]),
            "n_questions": len(rows), "n_evidence_removals": len(changed[True]),
            "n_other_removals": len(changed[False]),
            "truth_change_rate": {"evidence": _rate(truth[True]), "other": _rate(truth[False])}}


def correlations(rows, method: str) -> dict:
    """``removal_correlation``: the mean over questions (at least ``MIN_OBJECTS`` objects, neither side constant) of
    Spearman's rho between the objects' relevance and their removal's probability drop; ``pooled_correlation``:
    Spearman over every (object, question) pair of those questions, each question's values centred first.

    >>> row = {"relevance": {"m": [0.9, 0.1, 0.5]}, "removals": [{"drop": 0.8}, {"drop": 0.0}, {"drop": 0.3}]}
    >>> correlations([row], "m")
    {'removal_correlation': 1.0, 'pooled_correlation': 1.0, 'n_questions': 1}
    """
    per_question, pooled_relevance, pooled_drop = [], [], []
    for row in rows:
        relevance = np.asarray(row["relevance"][method], dtype=np.float64)
        drop = np.asarray([r["drop"] for r in row["removals"]], dtype=np.float64)
        rho = removal_rho(relevance, drop)
        if rho is None:
            continue
        per_question.append(rho)
        pooled_relevance.append(relevance - relevance.mean())
        pooled_drop.append(drop - drop.mean())
    pooled = (float(spearmanr(np.concatenate(pooled_relevance), np.concatenate(pooled_drop)).statistic)
              if per_question else float("nan"))
    return {"removal_correlation": _rate(per_question), "pooled_correlation": pooled, "n_questions": len(per_question)}


def summarise(rows: list[dict], seed: int, model: str) -> dict:
    """The study's result from ``removal_rows``."""
    overall = _change_rates(rows)
    families = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row)
    by_family = {}
    for family in sorted(families):
        rates = _change_rates(families[family])
        rates.pop("truth_change_rate")
        by_family[family] = rates
    methods = list(rows[0]["relevance"]) if rows else []
    return {"evidence_change_rate": overall["evidence_change_rate"], "other_change_rate": overall["other_change_rate"],
            "truth_change_rate": overall["truth_change_rate"], "n_evidence_removals": overall["n_evidence_removals"],
            "n_other_removals": overall["n_other_removals"], "by_family": by_family,
            "methods": {name: correlations(rows, name) for name in methods},
            "n_questions": len(rows), "seed": seed, "model": model}


def format_table(result: dict) -> str:
    """The study as two tables: answer changes by family (with an "all" row), and the methods' correlations."""
    families = {**result["by_family"], "all": result}
    width = max(len(f) for f in families)
    lines = [f"{'family':<{width}}  {'questions':>9}  {'evidence changed':>16}  {'other changed':>13}"]
    for family, rates in families.items():
        lines.append(f"{family:<{width}}  {rates['n_questions']:>9}  {_cell(rates['evidence_change_rate'], 16)}  "
                     f"{_cell(rates['other_change_rate'], 13)}")
    truth = result["truth_change_rate"]
    last = result["seed"] + result["n_questions"] - 1
    lines += [f"{result['n_questions']} questions on scenes {result['seed']}..{last} ({result['model']}); "
              f"{result['n_evidence_removals']} evidence and {result['n_other_removals']} other removals. "
              f"The true answer changes in {_percent(truth['evidence'])} of evidence removals and "
              f"{_percent(truth['other'])} of other removals (where the question still applies).", ""]
    methods = result["methods"]
    if methods:
        width = max(len(m) for m in [*methods, "method"])
        lines.append(f"{'method':<{width}}  {'removal rho':>11}  {'pooled rho':>10}  {'questions':>9}")
        for name, row in methods.items():
            lines.append(f"{name:<{width}}  {_cell(row['removal_correlation'], 11)}  "
                         f"{_cell(row['pooled_correlation'], 10)}  {row['n_questions']:>9}")
        lines.append(f"Spearman's rho between an object's relevance and the drop in the answer's probability when it "
                     f"is removed: the mean over questions with at least {MIN_OBJECTS} objects, and pooled over "
                     "objects (centred per question). Higher is better.")
    return "\n".join(lines)


def _cell(value, width: int) -> str:
    return f"{'-':>{width}}" if value is None or value != value else f"{value:>{width}.3f}"  # NaN (JSON: null)


def _percent(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"
