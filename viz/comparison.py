"""Faithfulness curves and side-by-side method comparison with a rank-agreement matrix."""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import ConstantInputWarning, spearmanr

from vle.metrics import curve_auc

from ._base import check_array, infer_signed, new_axes
from .heatmap import plot_patch_relevance

_ORDER_STYLES = ("-", "--", ":", "-.")


def compute_auc(fractions, values) -> float:
    """Area under a curve sampled at ``fractions`` (trapezoid rule), normalised by the fraction range: the same
    metric the faithfulness benchmark reports (``vle.metrics.curve_auc``), after checking the arrays.

    >>> compute_auc([0, 0.5, 1], [1, 1, 1])
    1.0
    """
    fractions = check_array(fractions, "fractions", 1, "(n_steps,)")
    values = check_array(values, "curve values", 1, "(n_steps,)")
    return curve_auc(fractions, values)


def plot_perturbation_curves(fractions, curves, *, title: str | None = None, ylabel: str = "target probability",
                             xlabel: str = "fraction of patches removed", ax=None, figsize=(6.5, 4.6)):
    """Removal curves: ``fractions`` (n_steps,) and ``curves`` {name: (n_steps,)} or {method: {order: (n_steps,)}}
    (e.g. order "most relevant first" / "least relevant first"). Colour follows the method, line style the order;
    each legend entry carries its AUC. Returns the Figure.

    >>> fig = plot_perturbation_curves([0, .5, 1], {"grad": {"positive": [.9, .3, .1], "negative": [.9, .8, .1]}})
    >>> fig.axes[0].get_legend().get_texts()[0].get_text()
    'grad · positive (AUC 0.400)'
    """
    if not curves:
        raise ValueError("no curves to plot: give {name: values} or {method: {order: values}}")
    figure, ax = new_axes(ax, figsize)
    nested = {name: (value if isinstance(value, dict) else {None: value}) for name, value in curves.items()}
    for colour_index, (method, orders) in enumerate(nested.items()):
        for style_index, (order, values) in enumerate(orders.items()):
            label = method if order is None else f"{method} · {order}"
            auc = compute_auc(fractions, values)
            ax.plot(fractions, values, color=f"C{colour_index}", linestyle=_ORDER_STYLES[style_index % 4],
                    marker="o", markersize=3, label=f"{label} (AUC {auc:.3f})")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=2 if sum(len(orders) for orders in nested.values()) > 2 else 1)
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def correlate_ranks(maps) -> np.ndarray:
    """Spearman rank correlation (``scipy.stats.spearmanr``, ties ranked by their mean) between every pair of
    same-shaped score maps: (n_maps, n_maps). A constant map correlates with nothing (NaN off the diagonal).

    >>> correlate_ranks([np.arange(4.0), np.arange(4.0) ** 2, -np.arange(4.0)]).round(2).tolist()[0]
    [1.0, 1.0, -1.0]
    """
    arrays = [check_array(m, f"map {index}", (1, 2), "(rows, cols) or (n,)") for index, m in enumerate(maps)]
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(f"maps to compare must share one patch grid, got shapes {sorted(shapes)}")
    values = np.array([array.ravel() for array in arrays], dtype=np.float64)  # (n_maps, n_scores)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):  # a constant map: NaN, by design
        warnings.simplefilter("ignore", ConstantInputWarning)
        matrix = np.atleast_2d(spearmanr(values, axis=1).statistic).astype(np.float64)
    if len(values) == 2 and matrix.shape != (2, 2):  # scipy gives one number for a pair
        matrix = np.array([[1.0, matrix.item()], [matrix.item(), 1.0]])
    np.fill_diagonal(matrix, 1.0)
    return matrix


def plot_method_comparison(maps, image, *, signed=None, opacity: float = 0.6, title: str | None = None,
                           agreement: bool = True, panel_size: float = 2.6, columns: int | None = None):
    """The same target under several methods: ``maps`` {method: (rows, cols) scores} drawn side by side over
    ``image``, each on its own colour scale (methods' units differ), and a Spearman rank-agreement matrix.
    ``signed``: one bool for all, {method: bool}, or None to infer from the signs. ``columns``: panels per row
    (default: all in one row). Returns the Figure."""
    if not maps:
        raise ValueError("no maps to compare: give {method name: (rows, cols) scores}")
    names = list(maps)
    n_panels = len(names) + (1 if agreement else 0)
    columns = min(columns or n_panels, n_panels)
    rows = -(-n_panels // columns)
    figure = Figure(figsize=(panel_size * columns + 0.4, (panel_size + 1.1) * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n_panels:]:  # the last row's empty places
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        scores = check_array(maps[name], f"map {name!r}", 2, "(rows, cols)")
        method_signed = signed.get(name) if isinstance(signed, dict) else signed
        method_signed = infer_signed(scores, method_signed)
        plot_patch_relevance(scores, image, signed=method_signed, opacity=opacity, title=name, ax=ax,
                             colorbar="bottom", label="signed score" if method_signed else "score")
    if agreement:
        _draw_agreement(axes[n_panels - 1], names, correlate_ranks([maps[name] for name in names]))
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _draw_agreement(ax, names, matrix) -> None:
    shown = ax.imshow(np.nan_to_num(matrix, nan=0.0), cmap="PiYG", vmin=-1, vmax=1)
    for (row, col), value in np.ndenumerate(matrix):
        text = "–" if np.isnan(value) else f"{value:.2f}"
        ax.text(col, row, text, ha="center", va="center", fontsize=8, color="black" if abs(value) < 0.7 else "white")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("rank agreement (Spearman)", fontsize=9)
    bar = ax.figure.colorbar(shown, ax=ax, shrink=0.8, pad=0.02, location="bottom", aspect=15)
    bar.ax.tick_params(labelsize=7)
