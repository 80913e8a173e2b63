"""Patch relevance drawn over the original image, lined up through the processor's resize and centre crop."""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from ._base import as_rgb_array, box_color, check_array, color_limits, infer_signed, new_axes, score_cmap
from .geometry import crop_region, patch_scores_to_pixels

OUTSIDE_DIM = 0.45  # how much to darken the parts of the image the centre crop cut away


def plot_patch_relevance(scores, image, *, signed: bool | None = None, opacity: float = 0.6, fade: bool = True,
                         cmap=None,
                         limits: tuple[float, float] | None = None, grid_lines: bool = False, boxes=None,
                         title: str | None = None, colorbar: bool | str = True, label: str | None = None, ax=None,
                         figsize=None):
    """Draw (rows, cols) patch ``scores`` over the original ``image`` (path, PIL or (H, W, 3) array).

    The patch grid covers the centred square the model saw; the rest of the image is dimmed. Signed scores use a
    diverging colormap with limits symmetric around zero; unsigned ones a sequential colormap. ``opacity`` is the
    heat's opacity at the strongest score; with ``fade`` weaker scores are more transparent (zero: invisible), so
    the image stays readable where nothing happens. ``boxes`` are (x0, y0, x1, y1[, label]) in original pixels.
    ``colorbar``: True (right), "bottom" or False. Returns the Figure.

    >>> fig = plot_patch_relevance(np.eye(4), np.zeros((60, 80, 3), np.uint8), grid_lines=True)
    >>> fig.axes[0].images[1].get_extent()
    [10.0, 70.0, 60.0, 0.0]
    """
    scores = check_array(scores, "patch scores", 2, "(rows, cols)")
    _check_opacity(opacity)
    pixels = as_rgb_array(image)
    height, width = pixels.shape[:2]
    signed = infer_signed(scores, signed)
    low, high = limits or color_limits(scores, signed)
    colormap = score_cmap(signed, cmap)
    if figsize is None:  # follow the image's aspect so the colorbar matches the picture's height
        figsize = (5.5, float(np.clip(4.6 * height / width + (0.7 if title else 0.4), 2.2, 9.0)))
    figure, ax = new_axes(ax, figsize)

    ax.imshow(pixels, extent=(0, width, height, 0), interpolation="nearest")
    x0, y0, x1, y1 = crop_region(width, height)
    alpha = _heat_alpha(scores, signed, (low, high), opacity, fade)
    ax.imshow(scores, extent=(x0, x1, y1, y0), cmap=colormap, vmin=low, vmax=high, alpha=alpha,
              interpolation="nearest")
    _dim_outside_crop(ax, (x0, y0, x1, y1), width, height)
    if grid_lines:
        _draw_patch_grid(ax, scores.shape, (x0, y0, x1, y1))
    if boxes is not None:
        plot_boxes(boxes, ax)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        location = "bottom" if colorbar == "bottom" else "right"
        bar = figure.colorbar(ScalarMappable(Normalize(low, high), colormap), ax=ax, shrink=0.8, pad=0.02,
                              location=location, aspect=15 if location == "bottom" else 20)
        bar.set_label(label or ("relevance (signed)" if signed else "relevance"), fontsize=9)
        bar.ax.tick_params(labelsize=8)
    return figure


def render_heatmap(scores, image, *, signed: bool | None = None, opacity: float = 0.6, fade: bool = True,
                   cmap=None, limits: tuple[float, float] | None = None) -> np.ndarray:
    """The same overlay as ``plot_patch_relevance`` as a (H, W, 3) uint8 array at the original's resolution, for
    fast display (no figure, no axes, no colorbar).

    >>> render_heatmap(np.ones((2, 2)), np.zeros((10, 20, 3), np.uint8)).shape
    (10, 20, 3)
    """
    scores = check_array(scores, "patch scores", 2, "(rows, cols)")
    _check_opacity(opacity)
    pixels = as_rgb_array(image).astype(np.float64) / 255
    height, width = pixels.shape[:2]
    signed = infer_signed(scores, signed)
    low, high = limits or color_limits(scores, signed)
    heat = patch_scores_to_pixels(scores, width, height)  # (height, width), NaN outside the crop
    inside = ~np.isnan(heat)
    heat = np.where(inside, heat, low)
    colours = score_cmap(signed, cmap)(Normalize(low, high)(heat))[..., :3]
    alpha = np.broadcast_to(_heat_alpha(heat, signed, (low, high), opacity, fade), heat.shape)[..., None]
    blended = np.where(inside[..., None], (1 - alpha) * pixels + alpha * colours, pixels * (1 - OUTSIDE_DIM))
    return np.round(blended * 255).astype(np.uint8)


def plot_boxes(boxes, ax, *, highlight=None, linewidth: float = 1.8):
    """Draw (x0, y0, x1, y1[, label]) boxes (original pixels) on ``ax``; a numeric fifth entry (a detector score)
    is not a label. ``highlight``: box indices to draw thick, the others are drawn thin and faint. Returns the
    Figure of ``ax``."""
    for index, box in enumerate(boxes):
        if len(box) < 4:
            raise ValueError(f"box {index} must be (x0, y0, x1, y1[, label]), got {tuple(box)}")
        bx0, by0, bx1, by1 = (float(v) for v in box[:4])
        if bx1 <= bx0 or by1 <= by0:
            raise ValueError(f"box {index} {tuple(box[:4])} is empty: need x0 < x1 and y0 < y1")
        label = box[4] if len(box) > 4 and isinstance(box[4], str) else None
        faint = highlight is not None and index not in highlight
        colour = "#bbbbbb" if faint else box_color(index)
        ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor=colour,
                               linewidth=linewidth * (0.5 if faint else 1), alpha=0.6 if faint else 1.0))
        if label and not faint:
            ax.text(bx0, by0, label, fontsize=7, color="white", va="bottom", ha="left", clip_on=True,
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1.0, alpha=0.9))
    return ax.figure


def _draw_patch_grid(ax, grid, crop) -> None:
    rows, cols = grid
    x0, y0, x1, y1 = crop
    style = dict(colors="white", linewidths=0.5, alpha=0.5)
    ax.vlines(np.linspace(x0, x1, cols + 1), y0, y1, **style)
    ax.hlines(np.linspace(y0, y1, rows + 1), x0, x1, **style)


def _dim_outside_crop(ax, crop, width, height) -> None:
    """Darken what the centre crop cut away and outline the crop, so nobody reads meaning into unseen pixels."""
    x0, y0, x1, y1 = crop
    strips = [(0, 0, x0, height), (x1, 0, width - x1, height), (x0, 0, x1 - x0, y0), (x0, y1, x1 - x0, height - y1)]
    strips = [strip for strip in strips if strip[2] > 0.5 and strip[3] > 0.5]
    for left, top, w, h in strips:
        ax.add_patch(Rectangle((left, top), w, h, facecolor="black", edgecolor="none", alpha=OUTSIDE_DIM))
    if strips:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--",
                               linewidth=1.0))


def _heat_alpha(scores: np.ndarray, signed: bool, limits, opacity: float, fade: bool):
    """Opacity of each score: constant, or (fade) growing with its distance from zero (signed) or from the
    bottom of the scale (unsigned)."""
    if not fade:
        return opacity
    low, high = limits
    level = np.abs(scores) / high if signed else (scores - low) / (high - low)
    return opacity * np.clip(level, 0.0, 1.0)


def _check_opacity(opacity: float) -> None:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
