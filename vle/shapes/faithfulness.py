"""The faithfulness benchmark on held-out shapes-world questions: ``vle-workbench faithfulness [--seeds S1,S2 |
--seed S] [--n N] [--methods a,b] [--vcr N] [--by-family] [--json]``.

For each seed S, scenes ``S .. S+N-1`` (held-out seeds, as in ``vle-workbench evaluate``), one VQA question per
scene, the model's own answer explained by every method that enters (``benchmark_methods``), and scored per question
(``faithfulness_metrics``):

- perturbation curves and their AUCs (``vle.explain.faithfulness``), image patches and text tokens, deleted most or
  least relevant first (``pos``, ``neg``) and inserted most relevant first (``ins``);
- pointing game: the top patch lies on an evidence object (a patch it covers by at least a quarter);
- relevance mass: the share of positive patch relevance inside the evidence masks (coverage-weighted)
  (``vle.metrics.localisation``);
- removal correlation: Spearman's rho between each object's relevance and the drop in the answer's probability when
  it is removed (the removals run once per question, shared by every method; as in ``removal.py``).

The rows pool over the seeds; ``faithfulness_stats`` turns them into means with 95% bootstrap intervals, paired
differences between methods, per-family means and the default-method choice. ``--vcr N`` adds the same table for N
VCR Q->A items per seed (``faithfulness_vcr``). A method that fails on a question is recorded, not fatal.

>>> results = faithfulness(n=2, methods=["raw_attention", "rollout"], progress=False)
>>> results["methods"], sorted(results["rollout"]["pointing_game"]), list(results["paired"])
(['raw_attention', 'rollout'], ['high', 'low', 'value'], ['raw_attention - rollout'])
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_int
from ..explain.core import explain
from ..explain.inputs import ExplainInputs, ImageFeatureCache
from ..explain.methods import METHODS
from ..explain.targets import VCRChoice, VQAAnswer, vqa_answer
from ..hub import resolve_model_path
from ..modeling_vle import VLEForVCRQ2A, VLEForVQA
from ..processing_vle import VLEProcessor
from .data import HELD_OUT_SEED, ScenePool, normalize
from .evaluate import DEFAULT_SEED
from .faithfulness_metrics import (evidence_masks, guarded, object_relevance, object_removals, removal_rho, score,
                                   scored_rows)
from .faithfulness_stats import choose_default, summarise
from .faithfulness_tables import format_table
from .faithfulness_vcr import DEFAULT_VCR_MODEL, vcr_rows
from .tasks import make_vqa

DEFAULT_MODEL = "vle-tiny-shapes-vqa"
# questions per evaluation: the attention methods' pointing games are close, and telling them apart takes a few
# hundred questions (docs/explanations.md)
DEFAULT_QUESTIONS = 200
__all__ = ["DEFAULT_MODEL", "DEFAULT_QUESTIONS", "DEFAULT_VCR_MODEL", "benchmark_methods", "check_methods",
           "check_seeds", "evidence_masks", "examples", "faithfulness", "format_table", "load_model", "vqa_rows"]


def examples(seed: int, n: int, processor, progress: bool = False):
    """(scene, question example, batch-1 model inputs) for held-out scenes ``seed .. seed+n-1``."""
    pool = ScenePool(seed, n, progress=progress)
    for i, scene in enumerate(pool.scenes):
        example = make_vqa(scene, np.random.default_rng([seed, i, 5]))
        batch = {**processor.tokenize([example.question]), "pixel_values": normalize(pool.pixels[[i]])}
        yield scene, example, ExplainInputs.from_batch(batch, processor)


def benchmark_methods(target=VQAAnswer(0)) -> list[str]:
    """Every registered method that explains ``target``'s kind (default: VQA answers), unless it opts out
    (``Method.benchmark = False``), in registration order."""
    return [name for name, cls in METHODS.items() if cls.benchmark and cls.supports(target)]


def check_methods(methods) -> list[str]:
    """Registered methods that explain VQA answers (default: the benchmark's), refused by name."""
    if methods is None:
        return benchmark_methods()
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise InputError("methods is empty: name at least one explanation method")
    for name in methods:
        if name not in METHODS:
            raise InputError(f"unknown explanation method {name!r}; choose one of {', '.join(METHODS)}")
        if not METHODS[name].supports(VQAAnswer(0)):
            raise InputError(f"the method {name!r} does not explain VQA answers")
    if len(set(methods)) < len(methods):
        raise InputError(f"methods {', '.join(methods)}: name each method once")
    return methods


def check_seeds(seed=None, seeds=None, n: int = DEFAULT_QUESTIONS) -> list[int]:
    """The first scene seed of each block of ``n`` scenes (``seed`` is one seed, ``seeds`` several; default
    ``DEFAULT_SEED``): held out, and no two blocks sharing a scene."""
    if seed is not None and seeds is not None:
        raise InputError("give --seed or --seeds, not both (--seed S is --seeds S)")
    seeds = [DEFAULT_SEED] if seed is None and seeds is None else [seed] if seeds is None else seeds
    seeds = [check_int(s, "seed") for s in ([seeds] if isinstance(seeds, (int, np.integer)) else seeds)]
    if not seeds:
        raise InputError("seeds is empty: give at least one held-out seed")
    for s in seeds:
        if s < HELD_OUT_SEED:
            raise InputError(f"evaluation seeds must be held out: use a seed >= {HELD_OUT_SEED}, got {s}")
    if len(set(seeds)) < len(seeds):
        raise InputError(f"seeds {', '.join(map(str, seeds))}: give each seed once")
    ordered = sorted(seeds)
    for a, b in zip(ordered, ordered[1:]):
        if b - a < n:
            raise InputError(f"seeds {a} and {b} share scenes: each seed takes scenes S..S+{n - 1} (--n {n}), so "
                             f"space the seeds at least {n} apart")
    return seeds


def load_model(model, processor, head_class, dtype):
    """(model, processor): a name or folder loaded as ``head_class`` in eval mode, or a loaded model and its
    processor."""
    if isinstance(model, str):
        path = resolve_model_path(model)
        return head_class.from_pretrained(path, dtype=dtype).eval(), processor or VLEProcessor.from_pretrained(path)
    if processor is None:
        raise InputError("a model given as an object needs its processor (processor=...)")
    return model, processor


def vqa_rows(seeds, n: int, methods, model, processor, cache, progress: bool = True) -> list[dict]:
    """One row per question (the layout of ``faithfulness_stats``): ``seed``, ``scene``, ``family``, ``question``,
    ``answer``, ``predicted``, each method's metrics (``methods``), and its failure or warning, if any."""
    items = lambda seed, count: examples(seed, count, processor)  # noqa: E731
    return scored_rows(seeds, n, items, _vqa_row, methods, model, cache, "faithfulness", progress)


def _vqa_row(model, inputs, scene, example, methods, seed) -> dict:
    effects = object_removals(model, inputs, scene, example)  # once per question, whatever the number of methods
    target, truth = vqa_answer(model, effects.predicted), vqa_answer(model, example.answer).index
    drop = [removal["drop"] for removal in effects.removals]
    row = {"seed": seed, "scene": scene.seed, "family": example.family, "question": example.question,
           "answer": example.answer, "predicted": target.answer, "methods": {}, "failed": {}, "warned": {}}
    curves = {}  # perturbed inputs the methods share run once

    def scored(name):
        explanation = explain(model, inputs, target, name)
        metrics = score(model, inputs, target, truth, explanation, scene, example.evidence, curves)
        rho = removal_rho(object_relevance(effects.coverage, explanation.patch_scores), drop)
        return metrics if rho is None else {**metrics, "removal_correlation": rho}

    for name in methods:
        guarded(row, name, lambda name=name: scored(name))
    return row


def faithfulness(seed: int | None = None, n: int = DEFAULT_QUESTIONS, methods=None, model=DEFAULT_MODEL,
                 processor=None, progress: bool = True, dtype="float32", seeds=None, vcr: int = 0,
                 vcr_model=DEFAULT_VCR_MODEL, vcr_processor=None) -> dict:
    """Every method (default: ``benchmark_methods()``) over ``n`` held-out questions per seed (``seeds``, or one
    ``seed``), pooled: ``faithfulness_stats.summarise`` of the rows, with ``seeds``, ``n_per_seed``, ``model``,
    ``default`` (``choose_default``) and, with ``vcr`` items per seed, a ``vcr`` section of the same layout (on
    ``vcr_model``, by the methods given that explain VCR choices; default: ``benchmark_methods(VCRChoice(0))``).
    Arguments are checked before a model loads."""
    n = check_int(n, "n (questions per seed)", low=1)
    vcr = check_int(vcr, "vcr (VCR items per seed)", low=0)
    seeds = check_seeds(seed, seeds, max(n, vcr))
    vcr_methods = benchmark_methods(VCRChoice(0)) if methods is None else None
    methods = check_methods(methods)
    vcr_methods = vcr_methods or [m for m in methods if METHODS[m].supports(VCRChoice(0))]
    if vcr and not vcr_methods:
        raise InputError(f"the VCR table needs a method that explains VCR choices, and none of {', '.join(methods)} "
                         f"does: add one of {', '.join(benchmark_methods(VCRChoice(0)))}")
    name = model if isinstance(model, str) else type(model).__name__
    model, processor = load_model(model, processor, VLEForVQA, dtype)
    cache = ImageFeatureCache(size=1)  # one question per scene: the features of the scene being scored
    rows = vqa_rows(seeds, n, methods, model, processor, cache, progress)
    results = {**summarise(rows, methods), "seeds": seeds, "n_per_seed": n, "model": name}
    if vcr:
        vcr_name = vcr_model if isinstance(vcr_model, str) else type(vcr_model).__name__
        vcr_model, vcr_processor = load_model(vcr_model, vcr_processor, VLEForVCRQ2A, dtype)
        items = vcr_rows(seeds, vcr, vcr_methods, vcr_model, vcr_processor, cache, progress)
        results["vcr"] = {**summarise(items, vcr_methods), "n_per_seed": vcr, "model": vcr_name}
    # the default explains every target, contrasts included: only a method whose map depends on the target can be it
    results["default"] = choose_default(results, eligible=[m for m in methods if METHODS[m].target_specific])
    return results
