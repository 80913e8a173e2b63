"""Where the model's patch grid sits on the user's original image.

The processor resizes the shortest edge to ``size`` and centre-crops a size×size square, so the patch grid covers the
centred square of side ``min(width, height)`` of the original. This is the same arithmetic as
``vle.image_utils.crop_geometry``, repeated here because importing anything from ``vle`` loads transformers and torch,
and ``viz`` must stay importable without them.
"""

from __future__ import annotations

import numpy as np


def crop_geometry(width: int, height: int, size: int) -> tuple[float, float, float]:
    """The processor's resize-shortest-edge-then-centre-crop as (scale, left, top): a pixel (x, y) of the original
    lands at (x * scale - left, y * scale - top) in the model's size×size input.

    >>> crop_geometry(200, 100, 50)
    (0.5, 25.0, 0.0)
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"width, height and size must be positive, got {width}, {height}, {size}")
    scale = size / min(width, height)
    left = (width * scale - size) / 2
    top = (height * scale - size) / 2
    return scale, left, top


def crop_region(width: int, height: int) -> tuple[float, float, float, float]:
    """The part of the original the model saw, as (x0, y0, x1, y1) in original pixels: inverting
    ``crop_geometry`` gives the centred square of side min(width, height), whatever the model's input size.

    >>> crop_region(200, 100)
    (50.0, 0.0, 150.0, 100.0)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}, {height}")
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return x0, y0, x0 + side, y0 + side


def patch_region(row: int, col: int, grid: tuple[int, int], width: int,
                 height: int) -> tuple[float, float, float, float]:
    """Patch (row, col) of a (rows, cols) grid as (x0, y0, x1, y1) in original pixels.

    >>> patch_region(0, 3, (4, 4), 200, 100)
    (125.0, 0.0, 150.0, 25.0)
    """
    rows, cols = grid
    if not (0 <= row < rows and 0 <= col < cols):
        raise IndexError(f"patch ({row}, {col}) is outside the {rows}x{cols} patch grid")
    x0, y0, x1, y1 = crop_region(width, height)
    step_x, step_y = (x1 - x0) / cols, (y1 - y0) / rows
    return x0 + col * step_x, y0 + row * step_y, x0 + (col + 1) * step_x, y0 + (row + 1) * step_y


def patch_scores_to_pixels(scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """Spread (rows, cols) patch scores over the original's pixels: (height, width) float array, NaN where the
    centre crop cut the image away (the model never saw those pixels).

    >>> patch_scores_to_pixels(np.array([[1.0, 2.0]]), 4, 2)[:, 1:3]
    array([[1., 2.],
           [1., 2.]])
    """
    rows, cols = scores.shape
    x0, y0, x1, y1 = crop_region(width, height)
    centres_x = np.arange(width) + 0.5  # sample each pixel at its centre
    centres_y = np.arange(height) + 0.5
    col_of_x = np.floor((centres_x - x0) / (x1 - x0) * cols).astype(int)
    row_of_y = np.floor((centres_y - y0) / (y1 - y0) * rows).astype(int)
    inside = (col_of_x >= 0) & (col_of_x < cols)
    inside_rows = (row_of_y >= 0) & (row_of_y < rows)
    heat = np.full((height, width), np.nan)
    block = scores[np.ix_(row_of_y[inside_rows], col_of_x[inside])]
    heat[np.ix_(np.flatnonzero(inside_rows), np.flatnonzero(inside))] = block
    return heat
