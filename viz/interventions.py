"""What interventions look like: the colours of an ablation sweep's layer × head cells, the picture a user clicks
on to pick an object, drag a box or choose a patch (the image enlarged, with outlines), the sweep as four layer × head
heatmaps, and one score against another per site (causal effect against attention, or an estimate against the exact
effect). Pure: data in, colours, an RGB array or a Figure out.

>>> [text for _, text in ablation_cell_colors([-1.0, 0.0, 0.25])]
['white', 'black', 'black']
>>> render_edit_canvas(np.zeros((8, 8, 3), np.uint8), scale=3, boxes=[(0, 0, 4, 4)]).shape
(24, 24, 3)
>>> effects = [{"site": f"fusion.{s}.{i}.{k}", "head": h, "delta": 0.1 * h} for s in ("text", "image")
...            for i in range(2) for k in ("self_attention", "cross_attention") for h in range(4)]
>>> len(plot_head_effects(effects).axes)  # four panels and the colour bar
5
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ._base import SIGNED_CMAP, as_rgb_array, new_axes, readable_text_color, score_colors

SITE_KINDS = (("text", "self_attention", "text self-attention"), ("text", "cross_attention", "text → image cross"),
              ("image", "self_attention", "image self-attention"), ("image", "cross_attention", "image → text cross"))

PICKED = "#ffcc00"  # the picked object or patch
DRAWN = "#00bcd4"  # boxes drawn by the user (blanked regions)


def ablation_cell_colors(deltas, limit: float | None = None) -> list[tuple[str, str]]:
    """(background, text) colours of each change in probability, on a diverging colormap centred on zero (blue: the
    answer lost probability without the head, red: it gained). ``limit``: the |delta| of the strongest colour
    (default: the largest |delta|, at least 0.05 so that noise stays white)."""
    values = np.asarray(deltas, dtype=np.float64).ravel()
    top = max(float(np.max(np.abs(values))) if values.size else 0.0, 0.05) if limit is None else float(limit)
    colors = score_colors(values, signed=True, limits=(-top, top))
    return [(to_hex(rgba), readable_text_color(rgba)) for rgba in colors]


def render_edit_canvas(image, *, scale: int = 3, boxes=(), highlight=None, grid: int | None = None,
                       patch: tuple[int, int] | None = None, crop=None) -> np.ndarray:
    """``image`` enlarged ``scale`` times (nearest neighbour: pixels stay crisp) with outlines, as (H * scale,
    W * scale, 3) uint8: ``boxes`` (x1, y1, x2, y2) in image pixels drawn thin, ``highlight`` (one box) drawn thick;
    with ``grid`` the patch grid over ``crop`` (x0, y0, x1, y1; default the whole image) and ``patch`` (row, col)
    outlined."""
    pixels = as_rgb_array(image)
    height, width = pixels.shape[:2]
    picture = Image.fromarray(pixels).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    if grid:
        x0, y0, x1, y1 = crop or (0, 0, width, height)
        step_x, step_y = (x1 - x0) / grid * scale, (y1 - y0) / grid * scale
        for i in range(grid + 1):
            draw.line([(x0 * scale + i * step_x, y0 * scale), (x0 * scale + i * step_x, y1 * scale)],
                      fill=(255, 255, 255), width=1)
            draw.line([(x0 * scale, y0 * scale + i * step_y), (x1 * scale, y0 * scale + i * step_y)],
                      fill=(255, 255, 255), width=1)
        if patch is not None:
            row, col = patch
            draw.rectangle([x0 * scale + col * step_x, y0 * scale + row * step_y,
                            x0 * scale + (col + 1) * step_x, y0 * scale + (row + 1) * step_y], outline=PICKED, width=3)
    for box in boxes:
        draw.rectangle([v * scale for v in box[:4]], outline=DRAWN, width=2)
    if highlight is not None:
        x1, y1, x2, y2 = (v * scale for v in highlight[:4])
        draw.rectangle([x1 - 3, y1 - 3, x2 + 2, y2 + 2], outline=PICKED, width=3)
    return np.asarray(picture)


def head_effect_grids(effects, key: str = "delta") -> dict[tuple[str, str], np.ndarray]:
    """(stream, kind) → (layers, heads) array of ``key`` from sweep effects ({"site", "head", key}); NaN where
    absent."""
    parsed = [(e["site"].split("."), e["head"], float(e[key])) for e in effects]
    layers = 1 + max(int(parts[2]) for parts, _, _ in parsed)
    heads = 1 + max(head for _, head, _ in parsed)
    grids = {(stream, kind): np.full((layers, heads), np.nan) for stream, kind, _ in SITE_KINDS}
    for (_, stream, layer, kind), head, value in parsed:
        grids[stream, kind][int(layer), head] = value
    return grids


def plot_head_effects(effects, key: str = "delta", title: str | None = None, limit: float | None = None,
                      label: str = "Δ p(answer) with the head ablated", annotate: bool = True) -> Figure:
    """An ablation sweep (``effects`` of ``ablation_sweep``, or any per-head values under ``key``) as four layer ×
    head heatmaps, one per attention site kind, on one diverging scale centred on zero (blue: the answer loses without
    the head). ``limit``: the |value| of the strongest colour (default: the largest). Returns the Figure."""
    grids = head_effect_grids(effects, key)
    layers, heads = next(iter(grids.values())).shape
    top = limit or max(float(np.nanmax(np.abs(g))) if np.isfinite(g).any() else 0.0 for g in grids.values()) or 1.0
    figure = Figure(figsize=(2 * (0.55 * heads + 0.9) + 1.0, 2 * (0.5 * layers + 0.8) + (0.3 if title else 0)),
                    layout="constrained")
    axes = figure.subplots(2, 2, squeeze=False)
    for ax, (stream, kind, name) in zip(axes.ravel(), SITE_KINDS):
        grid = grids[stream, kind]
        image = ax.imshow(grid, cmap=SIGNED_CMAP, vmin=-top, vmax=top, aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(heads), [f"h{h}" for h in range(heads)], fontsize=7)
        ax.set_yticks(range(layers), [f"L{i}" for i in range(layers)], fontsize=7)
        if annotate and heads * layers <= 64:
            for (layer, head), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(head, layer, f"{value:+.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(value) > 0.6 * top else "black")
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=label)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_site_scatter(x, y, labels=None, *, xlabel: str, ylabel: str, title: str | None = None, highlight: int = 5,
                      ax=None) -> Figure:
    """One point per site (or head): ``y`` against ``x``, the ``highlight`` points farthest from the origin labelled
    with ``labels``. Returns the Figure."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be two 1-D arrays of the same length, got {x.shape} and {y.shape}")
    figure, ax = new_axes(ax, figsize=(4.6, 4.0))
    ax.axhline(0, color="#bbb", lw=0.8)
    ax.axvline(0, color="#bbb", lw=0.8)
    ax.scatter(x, y, s=22, color="#3b6fb6", alpha=0.8)
    if labels is not None and highlight:
        farthest = np.argsort(-(np.abs(x) / (np.abs(x).max() or 1) + np.abs(y) / (np.abs(y).max() or 1)))
        for rank, i in enumerate(farthest[:highlight]):  # alternately above and below: neighbours stay readable
            ax.annotate(str(labels[i]), (x[i], y[i]), fontsize=7, xytext=(4, 3 if rank % 2 == 0 else -10),
                        textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return figure
