"""Figures of a batch run's slices: reliability diagram, answer confusion, mean relevance map, a gallery of examples
with their heatmaps, and a static projection (the explorer's interactive one is a bqplot widget), plus the slice's
self-contained HTML report.

>>> fig = plot_reliability([{"low": 0.0, "high": 0.5, "count": 2, "confidence": 0.4, "accuracy": 0.5}], 0.1)
>>> fig.axes[0].get_title()
'reliability (ECE 0.100)'
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ._base import check_array, new_axes
from .export import _img_tag, html_table
from .heatmap import render_heatmap


def plot_reliability(bins: list[dict], ece: float | None, *, ax=None, figsize=(3.6, 3.4)):
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and each bin's count."""
    figure, ax = new_axes(ax, figsize)
    if not any(b["count"] for b in bins):
        return _nothing(ax, "no answers with a known truth")
    filled = [b for b in bins if b["count"]]
    width = filled[0]["high"] - filled[0]["low"] if filled else 0.1
    ax.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           color="#4c72b0", edgecolor="white", label="accuracy")
    ax.plot([0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label="calibrated")
    for b in filled:
        ax.text(b["low"] + width / 2, min(b["accuracy"] + 0.02, 0.97), str(b["count"]), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top answer's probability)", ylabel="accuracy")
    ax.set_title("reliability" + ("" if ece is None else f" (ECE {ece:.3f})"), fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return figure


def plot_confusion(labels: list[str], matrix, *, ax=None, figsize=(3.8, 3.4)):
    """Counts of (truth, prediction) pairs, truth on the rows."""
    figure, ax = new_axes(ax, figsize)
    if not len(labels):
        return _nothing(ax, "no answers with a known truth")
    matrix = check_array(matrix, "confusion matrix", 2, "(labels, labels)")
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    top = matrix.max() if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            ax.text(column, row, str(int(count)), ha="center", va="center", fontsize=6,
                    color="white" if count > top / 2 else "#222222")
    ax.set(xlabel="prediction", ylabel="truth")
    ax.set_title("answers (truth × prediction)", fontsize=10)
    return figure


def _nothing(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#777777")
    ax.axis("off")
    return ax.figure


def plot_slice_overview(bins: list[dict], ece: float | None, labels: list[str], matrix, *, figsize=(7.4, 3.3)):
    """The reliability diagram and the answer confusion of a slice, side by side (a fixed layout: quick to redraw)."""
    figure = Figure(figsize=figsize)
    left = figure.add_axes((0.08, 0.15, 0.36, 0.75))
    right = figure.add_axes((0.62, 0.2, 0.34, 0.7))
    plot_reliability(bins, ece, ax=left)
    plot_confusion(labels, matrix, ax=right)
    return figure


def plot_mean_map(scores, *, title: str = "mean relevance", ax=None, figsize=(3.4, 3.3)):
    """A (rows, cols) patch map on its own (no image: a slice has many), sequential colours, a colorbar."""
    scores = check_array(scores, "patch scores", 2, "(rows, cols)")
    figure, ax = new_axes(ax, figsize, layout=None)
    shown = ax.imshow(scores, cmap="inferno", vmin=0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    figure.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    return figure


def gallery_html(images, maps, captions, *, width: int = 200, opacity: float = 0.6) -> str:
    """Examples side by side as HTML: each image with its (rows, cols) heatmap (``render_heatmap``: no figure, so
    quick enough to redraw on every filter) shown ``width`` pixels wide, and a caption."""
    if not len(images) == len(maps) == len(captions):
        raise ValueError(f"give one map and caption per image: {len(images)} images, {len(maps)} maps, "
                         f"{len(captions)} captions")
    if not images:
        return "<div style='color:#777'>no examples in this slice</div>"
    cells = []
    for image, scores, caption in zip(images, maps, captions):
        picture = Image.fromarray(render_heatmap(scores, image, opacity=opacity))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        source = base64.b64encode(buffer.getvalue()).decode("ascii")
        cells.append(f"<figure style='display:inline-block;margin:4px;width:{width}px;vertical-align:top'>"
                     f"<img src='data:image/png;base64,{source}' style='width:{width}px;image-rendering:pixelated'>"
                     f"<figcaption style='font-size:11px;line-height:1.2'>{html.escape(caption)}</figcaption>"
                     "</figure>")
    return "<div>" + "".join(cells) + "</div>"


def plot_projection(xy, groups, *, title: str = "pooled representations (PCA)", ax=None, figsize=(4.2, 3.8),
                    max_points: int = 20_000):
    """A 2-D projection, one colour per group (``groups``: a label per point); at most ``max_points`` drawn (an
    even sample), so a large run stays quick to draw."""
    xy = check_array(xy, "projection", 2, "(points, 2)")
    groups = np.asarray(groups, dtype=object)
    figure, ax = new_axes(ax, figsize)
    keep = np.linspace(0, len(xy) - 1, min(len(xy), max_points)).astype(int) if len(xy) else np.zeros(0, int)
    for number, group in enumerate(sorted(set(groups[keep].tolist()), key=str)):
        chosen = keep[groups[keep] == group]
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=4, alpha=0.6, color=f"C{number % 10}", label=str(group))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=3, loc="best")
    return figure


def slice_summary_html(summary: dict, total: int | None = None, *, cell_style: str = "") -> tuple[str, str]:
    """The slice's summary (``vle.analysis.slice_summary``) as two HTML tables: its facts (the count, ``of total``
    when given, accuracy, mean probability, calibration error) and, per method, the pointing game and relevance mass
    with their 95% intervals and the image share."""
    def number(value):
        return "–" if value is None else f"{value:.3f}"

    def interval(entry):
        return "–" if entry["value"] is None else (f"{entry['value']:.3f} <span style='color:#777'>"
                                                   f"[{entry['low']:.3f}, {entry['high']:.3f}]</span>")
    count = f"<b>{summary['count']}</b>" + ("" if total is None else f" of {total}")
    facts = [["examples", count], ["with ground truth", summary["with_truth"]],
             ["accuracy", number(summary["accuracy"])], ["mean probability", number(summary["mean_probability"])],
             ["calibration error (ECE)", number(summary["ece"])]]
    methods = [[html.escape(name), interval(m["pointing"]), interval(m["mass"]), number(m["image_share"])]
               for name, m in summary["methods"].items()]
    return (html_table(facts, escape=False, cell_style=cell_style),
            html_table(methods, ["method", "pointing game [95%]", "relevance mass [95%]", "image share"],
                       escape=False, cell_style=cell_style))


def slice_report_html(title: str, summary: dict, figures: dict, path=None, *, extra_html: str = "",
                      dpi: int = 110) -> str:
    """A self-contained HTML page of a slice: the summary tables (``slice_summary_html``), the figures (name →
    Figure) embedded as PNG, then ``extra_html`` (e.g. ``gallery_html``). Written to ``path`` if given."""
    facts, methods = slice_summary_html(summary)
    pictures = "".join(f"<figure>{_img_tag(figure, name, dpi)}<figcaption>{html.escape(name)}</figcaption></figure>"
                       for name, figure in figures.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:72em}td,th{padding:.2em .8em;text-align:left}"
            "figure{display:inline-block;margin:.5em}figcaption{font-size:.8em;color:#555}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{facts}<h2>Explanations</h2>{methods}{pictures}{extra_html}</body></html>")
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
    return page
