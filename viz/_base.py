"""Shared plumbing for the renderers: input checks with readable errors, images as arrays, figures without pyplot,
and the colour rules (diverging and centred on zero for signed scores, sequential for unsigned ones)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from vle.image_utils import load_image

SIGNED_CMAP = "RdBu_r"  # red = supports the target, blue = speaks against it, white = zero
UNSIGNED_CMAP = "inferno"
BOX_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def check_array(values, name: str, ndim: int | tuple[int, ...], shape_doc: str) -> np.ndarray:
    """``values`` as a finite float array of the expected rank, or a ValueError that names the argument."""
    array = np.asarray(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name} must be a {shape_doc} array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); expected {shape_doc}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; scores must be finite")
    return array


def check_same_length(labels, scores: np.ndarray, label_name: str, score_name: str) -> None:
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} {label_name} but {len(scores)} {score_name}: give one score per entry")


def as_rgb_array(image) -> np.ndarray:
    """A path, PIL image, array or tensor as a (H, W, 3) uint8 array, read by ``vle``'s one image loader (so a
    picture is drawn exactly as the model read it)."""

    return np.asarray(load_image(image))


def new_axes(ax=None, figsize=(5, 5), layout="constrained"):
    """(figure, axes): the caller's axes and its figure, or a new pyplot-free Figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=figsize, layout=layout)
    return figure, figure.add_subplot()


def infer_signed(scores: np.ndarray, signed: bool | None) -> bool:
    return bool(np.min(scores) < 0) if signed is None else bool(signed)


def color_limits(scores: np.ndarray, signed: bool) -> tuple[float, float]:
    """Colour limits: symmetric around zero for signed scores (so white means zero), [min(0, low), high] for
    unsigned ones. Flat maps get a unit range instead of a zero-width one.

    >>> color_limits(np.array([-1.0, 3.0]), signed=True)
    (-3.0, 3.0)
    """
    if signed:
        top = float(np.max(np.abs(scores)))
        top = top if top > 0 else 1.0
        return -top, top
    low, high = min(0.0, float(np.min(scores))), float(np.max(scores))
    return (low, high) if high > low else (low, low + 1.0)


def score_cmap(signed: bool, cmap: str | Colormap | None = None) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    return colormaps[cmap or (SIGNED_CMAP if signed else UNSIGNED_CMAP)]


def score_colors(scores: np.ndarray, signed: bool, cmap=None, limits=None) -> np.ndarray:
    """(n, 4) RGBA colours of ``scores`` under the colour rules."""
    low, high = limits or color_limits(scores, signed)
    return score_cmap(signed, cmap)(Normalize(low, high)(scores))


def readable_text_color(rgba) -> str:
    """Black or white, whichever reads better on a background of this colour (relative luminance, WCAG)."""
    channels = np.asarray(rgba[:3], dtype=np.float64)
    linear = np.where(channels <= 0.03928, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.179 else "white"


def box_color(index: int) -> str:
    return BOX_COLORS[index % len(BOX_COLORS)]
