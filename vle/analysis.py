"""Statistics of a batch run's slices, for the dataset explorer and notebooks (numpy, scipy and DuckDB; no plotting).

A slice is any subset of a run's rows, chosen by ``select`` (slice field values, right or wrong, a probability range,
words in the question, ids picked in the projection). Its summary gives the count, accuracy, mean probability,
calibration (expected calibration error over equal-width confidence bins, and the bins for a reliability diagram),
and each method's pointing game and relevance mass with 95% bootstrap intervals (scipy's ``stats.bootstrap``).

>>> import pandas as pd
>>> table = pd.DataFrame({"probability": [0.9, 0.8, 0.6, 0.3], "correct": [True, True, False, False],
...                       "score": [1.0, 1.0, 0.0, 0.0], "slice_family": ["color", "color", "count", "count"]})
>>> summary = slice_summary(table[select(table, {"family": "color"})])
>>> summary["count"], summary["accuracy"], round(summary["ece"], 3)
(2, 1.0, 0.15)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .store import Run, quote

CALIBRATION_BINS = 10
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LIMIT = 10_000  # values resampled one by one; beyond, the normal interval (see bootstrap_mean)
EXACT_PCA = 512  # widest vectors whose covariance is diagonalised exactly (see project)
SUMMARY_COLUMNS = ("id", "index", "kind", "image", "question", "truth", "prediction", "prediction_index",
                   "probability", "margin", "score", "correct")


def select(table: pd.DataFrame, slices: dict | None = None, correct: bool | None = None,
           probability: tuple[float, float] = (0.0, 1.0), search: str = "", ids=None) -> np.ndarray:
    """A boolean mask over ``table``'s rows: every slice field equal to its value (``{"family": "count"}``), right
    or wrong (``correct``), the probability within the range, every word of ``search`` in the question, the id in
    ``ids`` (None: any)."""
    mask = np.ones(len(table), dtype=bool)
    for field, value in (slices or {}).items():
        if value is not None:
            mask &= (table[f"slice_{field}"] == value).to_numpy()
    if correct is not None:
        mask &= (table["correct"] == correct).to_numpy(dtype=bool, na_value=False)
    low, high = probability
    if (low, high) != (0.0, 1.0):
        mask &= table["probability"].between(low, high).to_numpy()
    for word in search.lower().split():
        mask &= table["question"].str.lower().str.contains(word, regex=False).to_numpy()
    if ids is not None:
        mask &= table["id"].isin(ids).to_numpy()
    return mask


def summary_table(run: Run) -> pd.DataFrame:
    """The columns a slice is chosen and summarised by (no maps, no lists), every row, in the run's order."""
    wanted = list(SUMMARY_COLUMNS) + [c for c in run.columns if c.startswith("slice_") or c.endswith(
        ("__pointing", "__mass", "__image_share"))]
    present = [c for c in wanted if c in run.columns]
    return run.to_pandas(present).sort_values("index").reset_index(drop=True)


def calibration(probability, correct, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """(expected calibration error, bins): each bin of equal-width confidence with ``low``, ``high``, ``count``,
    ``confidence`` (mean probability) and ``accuracy``; the error weighs |accuracy - confidence| by the bin's share."""
    probability, correct = np.asarray(probability, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1], right=True), 0, bins - 1)
    rows, error = [], 0.0
    for number in range(bins):
        inside = which == number
        count = int(inside.sum())
        confidence = float(probability[inside].mean()) if count else None
        accuracy = float(correct[inside].mean()) if count else None
        if count:
            error += count / len(probability) * abs(accuracy - confidence)
        rows.append({"low": float(edges[number]), "high": float(edges[number + 1]), "count": count,
                     "confidence": confidence, "accuracy": accuracy})
    return float(error), rows


def bootstrap_mean(values, confidence: float = 0.95, seed: int = 0) -> dict:
    """The mean of ``values`` with its 95% percentile bootstrap interval and how it was drawn (``how``).

    Resampling n values with replacement costs resamples × n draws, too slow to redraw on every filter of a large
    run, so: 0/1 values (pointing game hits) draw the resampled means directly, as Binomial(n, mean) / n, which is
    exactly their bootstrap distribution; other values resample with scipy's ``stats.bootstrap`` up to
    ``BOOTSTRAP_LIMIT`` values, and beyond it use the normal interval mean ± z·sd/√n, which the bootstrap of a mean
    matches at that size."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0, "how": "none"}
    mean = float(values.mean())
    if n < 2 or np.all(values == values[0]):
        return {"value": mean, "low": mean, "high": mean, "n": n, "how": "constant"}
    rng, tail = np.random.default_rng(seed), (1 - confidence) / 2
    if np.isin(values, (0.0, 1.0)).all():
        means = rng.binomial(n, mean, BOOTSTRAP_RESAMPLES) / n
        low, high, how = *np.quantile(means, [tail, 1 - tail]), "bootstrap (binomial)"
    elif n <= BOOTSTRAP_LIMIT:
        interval = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                                   method="percentile", rng=rng).confidence_interval
        low, high, how = interval.low, interval.high, "bootstrap"
    else:
        spread = stats.norm.ppf(1 - tail) * values.std(ddof=1) / np.sqrt(n)
        low, high, how = mean - spread, mean + spread, "normal"
    return {"value": mean, "low": float(low), "high": float(high), "n": n, "how": how}


def slice_summary(table: pd.DataFrame, methods=()) -> dict:
    """``count``, ``accuracy`` (mean score where the truth is known), ``mean_probability``, ``ece`` and
    ``reliability`` (``calibration``), and per method ``pointing`` and ``mass`` (``bootstrap_mean``)."""
    known = table[table["score"].notna()] if "score" in table else table.iloc[:0]
    summary = {"count": int(len(table)), "with_truth": int(len(known)),
               "accuracy": float(known["score"].mean()) if len(known) else None,
               "mean_probability": float(table["probability"].mean()) if len(table) else None,
               "ece": None, "reliability": [], "methods": {}}
    if len(known):
        summary["ece"], summary["reliability"] = calibration(known["probability"], known["correct"].astype(bool))
    for method in methods:
        summary["methods"][method] = {
            "pointing": bootstrap_mean(table.get(f"{method}__pointing", pd.Series(dtype=float)).dropna()),
            "mass": bootstrap_mean(table.get(f"{method}__mass", pd.Series(dtype=float)).dropna()),
            "image_share": float(table[f"{method}__image_share"].mean()) if len(table) else None}
    return summary


def confusion(table: pd.DataFrame, top: int = 8) -> tuple[list[str], np.ndarray]:
    """(labels, counts): the slice's answer confusion matrix over its ``top`` most frequent truths and predictions
    (rows: truth, columns: prediction; the rest pooled as "other")."""
    known = table[table["truth"].notna()]
    frequent = pd.concat([known["truth"], known["prediction"]]).value_counts()
    labels = sorted(frequent.index[:top].tolist())
    names = labels + (["other"] if len(frequent) > top else [])
    codes = [pd.Categorical(known[column], categories=labels).codes for column in ("truth", "prediction")]
    rows, columns = (np.where(code < 0, len(labels), code) for code in codes)  # -1: not a top label → "other"
    matrix = np.zeros((len(names), len(names)), dtype=int)
    if len(names):
        np.add.at(matrix, (rows, columns), 1)
    return names, matrix


def worst_errors(table: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The slice's wrong answers given with the highest probability (the confident mistakes), at most ``n``."""
    wrong = table[table["correct"].eq(False)]
    return wrong.sort_values(["probability", "index"], ascending=[False, True]).head(n)


def stored_maps(run: Run, ids, method: str) -> tuple[list[str], np.ndarray]:
    """(ids, maps (n, rows, cols)) of ``method``'s stored patch maps for ``ids`` (read from the parts by DuckDB,
    only those rows and that column)."""
    ids = [str(i) for i in ids]
    if not ids:
        return [], np.zeros((0, 0, 0), dtype=np.float32)
    column = quote(f"{method}__patches")
    found = run.query(f"select id, grid, {column} from examples where id in (select unnest(?))", [ids]).fetchall()
    by_id = {row[0]: row for row in found}
    rows = [by_id[i] for i in ids if i in by_id]
    grid = rows[0][1]
    maps = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.float16).astype(np.float32)
    return [row[0] for row in rows], maps.reshape(len(rows), grid, grid)


def all_maps(run: Run, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, maps (n, rows, cols) float16) of every stored example, in the run's order: one scan of one column, to
    keep in memory where slices are averaged again and again."""
    found = run.query(f"select id, grid, {quote(method + '__patches')} from examples where "
                      f"{quote(method + '__patches')} is not null order by index").fetchnumpy()
    if len(found["id"]) == 0:
        return np.asarray(found["id"], dtype=object), np.zeros((0, 0, 0), dtype=np.float16)
    grid = int(found["grid"][0])
    maps = np.frombuffer(b"".join(found[f"{method}__patches"].tolist()), dtype=np.float16)
    return np.asarray(found["id"], dtype=object), maps.reshape(len(found["id"]), grid, grid)


def mean_map(run: Run, ids, method: str, normalize: bool = True) -> np.ndarray:
    """The mean of ``method``'s stored patch maps over ``ids`` (``average_maps``)."""
    return average_maps(stored_maps(run, ids, method)[1], normalize)


def average_maps(maps: np.ndarray, normalize: bool = True) -> np.ndarray:
    """The mean of (n, rows, cols) patch maps; with ``normalize`` each map first scaled to sum to one over its
    positive part, so every example counts alike."""
    if len(maps) == 0:
        raise ValueError("the slice is empty: no map to average")
    maps = maps.astype(np.float32)
    if normalize:
        positive = np.clip(maps, 0, None)
        maps = positive / np.maximum(positive.sum(axis=(1, 2), keepdims=True), 1e-12)
    return maps.mean(axis=0)


def pooled(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, 2H) float32) every stored example's pooled representation, in the run's order."""
    found = run.query("select id, pooled from examples where pooled is not null order by index").fetchnumpy()
    ids = np.asarray(found["id"], dtype=object)
    data = b"".join(found["pooled"].tolist())
    return ids, np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(len(ids), -1)


def project(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of (n, d) ``vectors``: PCA (the top two principal components, each one's sign fixed), or
    UMAP when ``umap-learn`` is installed. PCA diagonalises the d × d covariance for d up to ``EXACT_PCA``, and beyond
    uses randomised subspace iteration with a fixed seed (a wide model's pooled pair: 1536 or 2048 numbers)."""
    if method == "umap":
        try:
            import umap  # optional: not a dependency
        except ImportError:
            raise ValueError("UMAP needs the umap-learn package (pip install umap-learn); PCA needs nothing") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors).astype(np.float32)
    if method != "pca":
        raise ValueError(f"projection must be pca or umap, got {method!r}")
    centred = np.asarray(vectors, dtype=np.float32)
    centred = centred - centred.mean(axis=0, keepdims=True)
    if len(centred) < 2:
        return np.zeros((len(centred), 2), dtype=np.float32)
    if centred.shape[1] <= EXACT_PCA:
        _, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
        components = eigenvectors[:, ::-1][:, :2]
    else:
        basis = np.random.default_rng(seed).standard_normal((centred.shape[1], 20)).astype(np.float32)
        for _ in range(6):  # subspace iteration: the span converges to the top principal directions
            basis, _ = np.linalg.qr(centred.T @ (centred @ basis))
        _, _, directions = np.linalg.svd(centred @ basis, full_matrices=False)
        components = basis @ directions[:2].T  # (d, 2)
    components = components * np.sign(components[np.abs(components).argmax(axis=0), range(2)])
    return (centred @ components.astype(np.float32)).astype(np.float32)
