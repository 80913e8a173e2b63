"""Reading user images: paths, PIL images or numpy arrays, in any common mode, to RGB PIL images with clear errors."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError


def load_image(image) -> Image.Image:
    """Return an RGB PIL image. Paths are opened (and fully decoded, so corrupt files fail here, by name); modes such
    as L, LA, P, RGBA, CMYK and I;16 are converted; zero-size images are rejected.

    >>> load_image(np.zeros((4, 5), dtype=np.uint8)).size
    (5, 4)
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"cannot read image {path}: the file is not an image or is corrupt ({error})") from None
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"expected an image as a path, PIL image or numpy array, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image has zero size ({image.width}x{image.height})")
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent areas are composited on white, 16-bit greys are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size and array.max() > 0 else 1.0
        return Image.fromarray((array / top * 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first → channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot read an image from an array of shape {array.shape}: expected (H, W), (H, W, 3|4)")
    if array.size == 0:
        raise ValueError(f"the image array is empty (shape {array.shape})")
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        if array.max() <= 1.0 and array.min() >= 0.0:
            array = array * 255  # float images in [0, 1]
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def crop_geometry(width: int, height: int, size: int) -> tuple[float, float, float]:
    """The processor's resize-shortest-edge-then-centre-crop as (scale, left, top): a pixel (x, y) of the original
    lands at ((x * scale) - left, (y * scale) - top) in the model's size×size input."""
    scale = size / min(width, height)
    left = (width * scale - size) / 2
    top = (height * scale - size) / 2
    return scale, left, top
