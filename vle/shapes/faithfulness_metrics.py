"""What one explanation scores on one shapes-world example, for the faithfulness benchmark (``faithfulness.py``) and
the object-removal study (``removal.py``):

- ``score``: the six perturbation-curve AUCs (image and text; deletion ``pos`` / ``neg`` and insertion ``ins``) and,
  where the example has evidence objects, the pointing game and relevance mass;
- ``object_removals``: every object removed in turn and the question asked again (one batched forward), and
  ``removal_rho``: Spearman's rho between the objects' relevance (``object_relevance``) and the answer's
  probability drop when each is removed;
- ``guarded``: one method on one example, its failure or warning recorded instead of ending the run.

>>> row = {"methods": {}, "failed": {}, "warned": {}}
>>> guarded(row, "m", lambda: {"pointing_game": 1.0}); guarded(row, "bad", lambda: 1 / 0)
>>> row["methods"], row["failed"]
({'m': {'pointing_game': 1.0}}, {'bad': 'ZeroDivisionError: division by zero'})
>>> removal_rho(np.array([0.9, 0.1, 0.5]), np.array([0.8, 0.0, 0.3])), removal_rho(np.ones(3), np.arange(3.0))
(1.0, None)
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..explain.faithfulness import ORDERS, auc, perturbation_curves
from ..explain.inputs import expand_text
from ..metrics import localisation
from .counterfactual import reanswer, remove_object
from .data import normalize
from .world import object_patches, patch_coverage

MIN_OBJECTS = 3  # a rank correlation over fewer objects says little
MODALITIES = ("image", "text")


def evidence_masks(scene, evidence, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(hit patches, coverage), both (grid, grid), of the evidence objects of ``scene``: the patches an evidence
    object covers by at least a quarter, and the fraction of each patch the evidence covers."""
    hit_patches = np.zeros((scene.image_size // patch_size,) * 2, dtype=bool)
    union = np.zeros((scene.image_size, scene.image_size), dtype=bool)
    for index in evidence:
        hit_patches |= object_patches(scene, index, patch_size)
        union |= scene.objects[index].mask
    return hit_patches, patch_coverage(union, patch_size)


def score(model, inputs, target, truth: int, explanation, scene, evidence, curves: dict | None = None) -> dict:
    """One explanation's metrics on one example (keys as in the benchmark's JSON); the localisation keys only where
    there is ``evidence`` (object indices), ``pointing_game_single`` only where it is one object. ``curves``: the
    example's cache of perturbed forwards, shared by its methods (``perturbation_curves``)."""
    label = target.choice if target.head == "vcr" else target.index  # the explained answer or choice
    row = {"seconds_per_example": explanation.metadata["seconds"],
           "unperturbed_probability": explanation.metadata["target_probability"],
           "unperturbed_accuracy": float(label == truth)}
    for modality, scores in zip(MODALITIES, (explanation.patch_scores, explanation.token_scores)):
        for order, curve in perturbation_curves(model, inputs, target, scores, modality, ORDERS, truth,
                                                  cache=curves).items():
            row[f"{order}_auc_{modality}"] = auc(curve)
            row[f"{order}_auc_{modality}_accuracy"] = auc(curve, "correct")
    if evidence:
        hit, mass = localisation(explanation.patch_scores,
                                 *evidence_masks(scene, evidence, model.config.patch_size))
        row.update(pointing_game=hit, relevance_mass=mass)
        if len(evidence) == 1:
            row["pointing_game_single"] = hit
    return row


class Removals(NamedTuple):
    predicted: int  # the model's answer on the scene as it is
    probability: float  # its probability
    removals: list  # per object: object, evidence, changed, probability, drop, truth (see removal.removal_rows)
    coverage: np.ndarray  # (objects, grid, grid): the fraction of each patch each object covers


def object_removals(model, inputs, scene, example) -> Removals:
    """Each object of ``scene`` removed in turn (re-rendered, ``counterfactual.remove_object``) and ``example``'s
    question asked again: the model's answer, then every removal, in two forwards (``inputs`` carry their image
    features)."""
    edited = [remove_object(scene, index) for index in range(len(scene.objects))]
    pixels = torch.from_numpy(np.stack([s.pixels for s in edited])).permute(0, 3, 1, 2)  # (objects, 3, H, W) uint8
    pixels = normalize(pixels).to(inputs.model_inputs["pixel_values"])
    with torch.no_grad():  # the original answer, then every removal in one batch
        original = model(**expand_text(inputs, 1), image_features=inputs.image_features).logits.float().softmax(-1)
        removed = model(**expand_text(inputs, len(edited)), pixel_values=pixels).logits.float().softmax(-1)
    predicted = int(original[0].argmax())
    probability = float(original[0, predicted])
    removals = []
    for index, (after, scene_after) in enumerate(zip(removed, edited)):
        truth = reanswer(scene_after, example)
        removals.append({"object": index, "evidence": index in example.evidence,
                         "changed": int(after.argmax()) != predicted, "probability": float(after[predicted]),
                         "drop": probability - float(after[predicted]),
                         "truth": None if truth is None else truth.answer})
    coverage = np.stack([patch_coverage(o.mask, model.config.patch_size) for o in scene.objects])
    return Removals(predicted, probability, removals, coverage)


def object_relevance(coverage: np.ndarray, patch_scores) -> np.ndarray:
    """(objects,): each object's relevance, the sum over patches of the patch score times the object's coverage."""
    return (coverage * np.asarray(patch_scores, dtype=np.float64)).sum(axis=(1, 2))


def removal_rho(relevance, drop) -> float | None:
    """Spearman's rho between the objects' relevance and their removal's probability drop; None with fewer than
    ``MIN_OBJECTS`` objects or a constant side (rho is undefined there)."""
    relevance, drop = np.asarray(relevance, dtype=np.float64), np.asarray(drop, dtype=np.float64)
    if len(drop) < MIN_OBJECTS or np.ptp(relevance) == 0 or np.ptp(drop) == 0:
        return None
    return float(spearmanr(relevance, drop).statistic)


def guarded(row: dict, method: str, compute) -> None:
    """``row["methods"][method] = compute()``; an exception is recorded in ``row["failed"]`` instead, and the first
    warning in ``row["warned"]``, so one method failing (or warning) on one example neither ends a long run nor
    floods the terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row["methods"][method] = compute()
        except Exception as error:  # noqa: BLE001  (any failure of a method is its own, reported with the results)
            row["failed"][method] = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    if caught:
        row["warned"][method] = " ".join(str(caught[0].message).split())[:300]


def scored_rows(seeds, n: int, items, row, methods, model, cache, desc: str, progress: bool = True) -> list[dict]:
    """``row(model, inputs, scene, item, methods, seed)`` for every (scene, item, inputs) of ``items(seed, n)`` over
    ``seeds``, with the scene's image features from ``cache`` and one progress bar: the VQA and VCR tables' loop."""
    rows = []
    with tqdm(total=n * len(seeds), desc=desc, disable=not progress) as bar:
        for seed in seeds:
            for scene, item, inputs in items(seed, n):
                inputs = inputs.for_model(model)
                inputs.image_features = cache.features(model, inputs.model_inputs["pixel_values"])
                rows.append(row(model, inputs, scene, item, methods, seed))
                bar.update()
    return rows
