"""Where the model's patch grid sits on the user's original image: the processor resizes the shortest edge and
centre-crops a square, so the patch grid covers the centred square of side ``min(width, height)`` of the original.
The arithmetic lives in ``vle.image_utils`` (numpy only), shared with the pipelines; this module adds what drawing
needs on top of it.
"""

from __future__ import annotations

from vle.image_utils import crop_geometry, crop_region, patch_scores_to_pixels

__all__ = ["crop_geometry", "crop_region", "patch_region", "patch_scores_to_pixels"]


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
