"""Counterfactual inputs for any image and text: a region painted over with the background, a word replaced or
dropped. The edited input is asked again to see what the answer depended on ("what if the object were not there?").

Images are anything ``load_image`` reads (a PIL image, an (H, W, 3) uint8 array, a path); the edits return a new
RGB PIL image and never change the one given. Boxes are (x1, y1, x2, y2) in image pixels with x2 / y2 exclusive.

>>> import numpy as np
>>> picture = np.full((32, 32, 3), 200, np.uint8)
>>> picture[8:16, 8:16] = (220, 40, 40)
>>> background_color(picture)
(200, 200, 200)
>>> blank_box(picture, (8, 8, 16, 16)).getpixel((10, 10))
(200, 200, 200)
>>> drop_word(replace_word("what color is the circle ?", 4, "square"), 1)
'what is the square ?'
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageColor

from .errors import InputError, check_int, check_text
from .image_utils import load_image


def background_color(image) -> tuple[int, int, int]:
    """The median colour of the image's border pixels (its outermost rows and columns): what a removed region is
    painted with, so it shows nothing rather than a grey square the model can read as an object."""
    pixels = np.asarray(load_image(image))  # (H, W, 3)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # (2W + 2H, 3)
    return tuple(int(v) for v in np.rint(np.median(border, axis=0)))


def _fill_color(image: Image.Image, color) -> tuple[int, int, int]:
    if color is None:
        return background_color(image)
    if isinstance(color, str):
        try:
            return ImageColor.getrgb(color)[:3]
        except ValueError:
            raise InputError(f"unknown colour {color!r}: give a name such as 'white', '#d4d4d4' or (r, g, b)") from None
    if not isinstance(color, (tuple, list, np.ndarray)) or len(color) != 3:
        raise InputError(f"color must be (r, g, b) with values 0..255 or a colour name, got {color!r}")
    return tuple(check_int(v, f"color[{i}]", low=0, high=255) for i, v in enumerate(color))


def blank_box(image, box, color=None) -> Image.Image:
    """A copy of ``image`` with ``box`` filled with the background colour (``background_color``) or ``color``."""
    picture = load_image(image)
    if not isinstance(box, (tuple, list, np.ndarray)) or len(box) != 4:
        raise InputError(f"box must be (x1, y1, x2, y2) in pixels, got {box!r}")
    x1, y1, x2, y2 = (check_int(v, f"box {name}") for v, name in zip(box, ("x1", "y1", "x2", "y2")))
    width, height = picture.size
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"box {(x1, y1, x2, y2)} is empty: x2 must be above x1 and y2 above y1 (x2, y2 exclusive)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InputError(f"box {(x1, y1, x2, y2)} reaches outside the {width}x{height} image: x within 0..{width}, "
                         f"y within 0..{height}")
    pixels = np.array(picture)  # (H, W, 3), a copy
    pixels[y1:y2, x1:x2] = _fill_color(picture, color)
    return Image.fromarray(pixels)


def blank_patches(image, patches, grid: int, color=None) -> Image.Image:
    """A copy of ``image`` with the chosen patches of a ``grid`` x ``grid`` split filled with the background colour
    (or ``color``). ``patches``: row-major patch ids (row * grid + col), or a (grid, grid) / (grid * grid,) boolean
    array such as a PBC region or a thresholded heatmap. Patch edges are at ``i * size // grid``, so a size that
    does not divide evenly still splits the whole image."""
    picture = load_image(image)
    width, height = picture.size
    grid = check_int(grid, "grid", low=1, high=min(width, height))
    ids = _patch_ids(patches, grid)
    pixels = np.array(picture)  # (H, W, 3), a copy
    fill = _fill_color(picture, color)
    for patch in ids:
        row, col = divmod(patch, grid)
        pixels[row * height // grid:(row + 1) * height // grid, col * width // grid:(col + 1) * width // grid] = fill
    return Image.fromarray(pixels)


def _patch_ids(patches, grid: int) -> list[int]:
    count = grid * grid
    values = np.asarray(patches)
    if values.dtype == bool:
        if values.shape not in ((grid, grid), (count,)):
            raise InputError(f"a patch mask must be ({grid}, {grid}) or ({count},) for a {grid} x {grid} grid, got "
                             f"{values.shape}")
        return [int(i) for i in np.flatnonzero(values)]
    if values.ndim > 1:
        raise InputError(f"patches must be patch ids or a boolean mask, got an array of shape {values.shape}")
    return [check_int(p, f"patch id (a {grid} x {grid} grid has ids 0..{count - 1})", low=0, high=count - 1)
            for p in np.atleast_1d(patches).tolist()]


# --- text ---------------------------------------------------------------------------------------------------------

def _words(text) -> list[str]:
    return check_text(text, "text").split()


def _check_word_index(words: list[str], index) -> int:
    return check_int(index, f"word index (the text has {len(words)} words, 0..{len(words) - 1})", low=0,
                     high=len(words) - 1)


def replace_word(text: str, index: int, word: str) -> str:
    """``text`` with word ``index`` (words split on whitespace, joined by single spaces) replaced by ``word``."""
    words = _words(text)
    index = _check_word_index(words, index)
    word = check_text(word, "the replacement word")
    if len(word.split()) > 1:
        raise InputError(f"the replacement {word!r} is several words: replace one word with one word")
    return " ".join(words[:index] + [word] + words[index + 1:])


def drop_word(text: str, index: int) -> str:
    """``text`` without word ``index`` (words split on whitespace, joined by single spaces)."""
    words = _words(text)
    index = _check_word_index(words, index)
    if len(words) == 1:
        raise InputError(f"{words[0]!r} is the only word: dropping it leaves no text to ask")
    return " ".join(words[:index] + words[index + 1:])
