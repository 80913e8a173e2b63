"""Co-attention views: one word over the image, one patch over the words, and a layer × head grid of small maps.

Inputs are plain arrays of attention probabilities, as the model's fusion layers return them stacked:

- text → image (``fusion_text_cross_attentions``): (layers, heads, text_len, image_len)
- image → text (``fusion_image_cross_attentions``): (layers, heads, image_len, text_len)

(heads, q, k) and (q, k) are accepted too. The image side is laid out as [CLS, patch_0 … patch_{rows*cols-1},
box tokens …]; ``grid`` (rows, cols) says where the patches are. Without it the grid is inferred for image_len equal
to rows*cols (no CLS) or 1 + rows*cols (CLS first) with a square grid; with box tokens, pass ``grid``.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._base import UNSIGNED_CMAP, as_rgb_array, check_array, new_axes
from .geometry import patch_region
from .heatmap import plot_patch_relevance, render_heatmap


def select_attention(attention, *, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """(layers, heads, q, k) → (q, k): one layer/head, or the mean over those left as None.

    >>> select_attention(np.ones((2, 3, 4, 5)), layer=1).shape
    (4, 5)
    """
    attention = check_array(attention, "attention", (2, 3, 4), "(layers, heads, queries, keys)")
    attention = attention.reshape((1,) * (4 - attention.ndim) + attention.shape)
    layers, heads = attention.shape[:2]
    if layer is not None and not -layers <= layer < layers:
        raise IndexError(f"layer {layer} does not exist: the attention has {layers} layer(s)")
    if head is not None and not -heads <= head < heads:
        raise IndexError(f"head {head} does not exist: the attention has {heads} attention head(s)")
    attention = attention.mean(axis=0) if layer is None else attention[layer]
    return attention.mean(axis=0) if head is None else attention[head]


def patch_grid_of(image_len: int, grid=None) -> tuple[tuple[int, int], int]:
    """((rows, cols), offset of the first patch) for an image side of ``image_len`` positions.

    >>> patch_grid_of(17)
    ((4, 4), 1)
    """
    if grid is not None:
        rows, cols = (grid, grid) if isinstance(grid, int) else tuple(grid)
        if image_len == rows * cols:
            return (rows, cols), 0
        if image_len >= rows * cols + 1:
            return (rows, cols), 1
        raise ValueError(f"a {rows}x{cols} patch grid needs at least {rows * cols} image positions, got {image_len}")
    for offset in (0, 1):
        side = math.isqrt(image_len - offset)
        if side > 0 and side * side == image_len - offset:
            return (side, side), offset
    raise ValueError(f"cannot infer the patch grid from {image_len} image positions (box tokens or a non-square "
                     "grid?): pass grid=(rows, cols)")


def _where(layer, head) -> str:
    if layer is None and head is None:
        return "mean of layers and heads"
    return ", ".join([f"layer {layer}" if layer is not None else "mean of layers",
                      f"head {head}" if head is not None else "mean of heads"])


def _token_name(tokens, token: int) -> str:
    """A token as a reader sees it: SentencePiece's word-start mark "▁" left out."""
    return repr(str(tokens[token]).lstrip("▁") or str(tokens[token])) if tokens is not None else f"token {token}"


def _patch_map(values: np.ndarray, grid) -> np.ndarray:
    (rows, cols), offset = patch_grid_of(len(values), grid)
    return values[offset: offset + rows * cols].reshape(rows, cols)


def plot_word_attention(attention, image, token: int, *, tokens=None, layer: int | None = None,
                        head: int | None = None, grid=None, opacity: float = 0.6, ax=None, **kwargs):
    """Text → image attention of one ``token`` (a text position) drawn on the original ``image``. Returns the Figure.

    >>> fig = plot_word_attention(np.full((2, 2, 3, 17), 1 / 17), np.zeros((32, 32, 3)), 1, layer=0)
    """
    weights = select_attention(attention, layer=layer, head=head)  # (text_len, image_len)
    if not -len(weights) <= token < len(weights):
        raise IndexError(f"token {token} does not exist: the text has {len(weights)} positions")
    if tokens is not None and len(tokens) != len(weights):
        raise ValueError(f"{len(tokens)} tokens but the attention has {len(weights)} text positions")
    title = f"{_token_name(tokens, token)} → image ({_where(layer, head)})"
    return plot_patch_relevance(_patch_map(weights[token], grid), image, signed=False, opacity=opacity,
                                title=kwargs.pop("title", title), label="attention weight", ax=ax, **kwargs)


def plot_patch_attention(attention, tokens, patch, *, image=None, layer: int | None = None, head: int | None = None,
                         grid=None, ax=None, figsize=(8, 3.2)):
    """Image → text attention of one ``patch`` (index into the grid, or (row, col)) over the ``tokens``, as bars.
    With ``image`` (and no ``ax``) the patch is also shown on the image. Returns the Figure."""
    weights = select_attention(attention, layer=layer, head=head)  # (image_len, text_len)
    (rows, cols), offset = patch_grid_of(len(weights), grid)
    row, col = divmod(int(patch), cols) if np.ndim(patch) == 0 else (int(patch[0]), int(patch[1]))
    if not (0 <= row < rows and 0 <= col < cols):
        raise IndexError(f"patch {patch} is outside the {rows}x{cols} patch grid")
    if len(tokens) != weights.shape[1]:
        raise ValueError(f"{len(tokens)} tokens but the attention has {weights.shape[1]} text positions")
    values = weights[offset + row * cols + col]  # (text_len,)

    if ax is None and image is not None:
        figure = Figure(figsize=figsize, layout="constrained")
        image_ax, ax = figure.subplots(1, 2, width_ratios=(1, 2.6))
        pixels = as_rgb_array(image)
        height, width = pixels.shape[:2]
        image_ax.imshow(pixels, extent=(0, width, height, 0))
        x0, y0, x1, y1 = patch_region(row, col, (rows, cols), width, height)
        image_ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#ffcc00", linewidth=2.5))
        image_ax.set_axis_off()
        image_ax.set_title(f"patch ({row}, {col})", fontsize=9)
    else:
        figure, ax = new_axes(ax, figsize)
    positions = np.arange(len(values))
    ax.bar(positions, values, color="#c44e52", edgecolor="#333333", linewidth=0.4)
    ax.set_xticks(positions, [str(token) for token in tokens], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.set_ylabel("attention weight", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"patch ({row}, {col}) → words ({_where(layer, head)})", fontsize=10)
    return figure


def plot_attention_grid(attention, token: int, *, tokens=None, image=None, grid=None, shared_scale: bool = True,
                        cell_size: float = 1.3, opacity: float = 0.7):
    """A layer × head grid of small text → image maps of one ``token``; ``attention`` is (layers, heads, text_len,
    image_len). ``shared_scale``: one colour scale for all cells (compare heads) or one per cell (see each head's
    pattern). With ``image`` each map is drawn over it. Returns the Figure."""
    attention = check_array(attention, "attention", 4, "(layers, heads, text_len, image_len)")
    layers, heads, text_len, image_len = attention.shape
    if not -text_len <= token < text_len:
        raise IndexError(f"token {token} does not exist: the text has {text_len} positions")
    (rows, cols), offset = patch_grid_of(image_len, grid)
    maps = attention[:, :, token, offset: offset + rows * cols].reshape(layers, heads, rows, cols)
    top = float(maps.max()) or 1.0
    pixels = None if image is None else as_rgb_array(image)

    figure = Figure(figsize=(heads * cell_size + (0.9 if shared_scale else 0.3), layers * cell_size + 0.6),
                    layout="constrained")
    axes = np.atleast_2d(figure.subplots(layers, heads, squeeze=False))
    for layer in range(layers):
        for head in range(heads):
            ax, cell = axes[layer, head], maps[layer, head]
            limits = (0.0, top) if shared_scale else (0.0, float(cell.max()) or 1.0)
            if pixels is None:
                ax.imshow(cell, cmap=UNSIGNED_CMAP, vmin=limits[0], vmax=limits[1], interpolation="nearest")
            else:
                ax.imshow(render_heatmap(cell, pixels, signed=False, opacity=opacity, limits=limits))
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    if shared_scale:
        bar = figure.colorbar(ScalarMappable(Normalize(0, top), UNSIGNED_CMAP), ax=axes, shrink=0.6)
        bar.ax.tick_params(labelsize=7)
    scale = "one colour scale" if shared_scale else "each cell scaled to its own maximum"
    figure.suptitle(f"{_token_name(tokens, token)} → image, every layer and head ({scale})", fontsize=9)
    return figure
