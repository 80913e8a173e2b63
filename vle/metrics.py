"""Faithfulness and localisation metrics on any examples: numpy only (no torch), so ``viz`` uses the same ones.

>>> curve_auc([0, 0.5, 1], [1, 0, 0])
0.25
>>> localisation(np.array([[0.0, 3.0], [1.0, 0.0]]), np.array([[False, True], [False, False]]),
...              np.array([[0.0, 1.0], [0.5, 0.0]]))
(1.0, 0.875)
"""

from __future__ import annotations

import numpy as np


def curve_auc(fractions, values) -> float:
    """Area under a curve sampled at increasing ``fractions`` (trapezoid rule), normalised by the fraction range:
    a constant curve at v has area v."""
    fractions = np.asarray(fractions, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if fractions.ndim != 1 or values.ndim != 1 or len(fractions) != len(values) or len(fractions) < 2:
        raise ValueError(f"a curve needs one value per fraction and at least two points, got {fractions.shape} "
                         f"fractions and {values.shape} values")
    if not (np.isfinite(fractions).all() and np.isfinite(values).all()):
        raise ValueError("curve fractions and values must be finite")
    span = fractions[-1] - fractions[0]
    if span <= 0 or np.any(np.diff(fractions) < 0):
        raise ValueError("fractions must increase (from the first removal step to the last)")
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2 / span)


def localisation(patch_scores, evidence_patches, coverage) -> tuple[float, float]:
    """(pointing-game hit, relevance mass) of a (rows, cols) patch map against the evidence: ``evidence_patches``
    (rows, cols) bool, the patches an evidence object covers enough to count as a hit; ``coverage`` (rows, cols),
    the fraction of each patch the evidence covers. The hit is 1 when the top patch is an evidence patch; the mass is
    the share of positive relevance on the evidence, weighted by coverage (0 without positive relevance)."""
    patch_scores = np.asarray(patch_scores, dtype=np.float64)
    top = np.unravel_index(np.argmax(patch_scores), patch_scores.shape)
    positive = np.clip(patch_scores, 0, None)
    mass = float((positive * coverage).sum() / positive.sum()) if positive.sum() > 0 else 0.0
    return float(np.asarray(evidence_patches)[top]), mass
