"""The one way images come in: every entry point (pipelines, processor, explainer, command line, explorers, VQA + LLM
captioners, batch runs) reads user images through ``load_image``, so an image means the same thing everywhere.

``load_image`` takes a path, bytes (or a binary file object), a PIL image, a numpy array or a torch tensor and
returns an RGB PIL image:

- the EXIF orientation a camera or phone wrote is applied (the picture is upright, as every viewer shows it);
- 16-bit images map their full range 0-65535 onto 0-255 (a fixed scale: the same file reads the same everywhere);
- float images hold values in [0, 1] (or, when their largest value is above 1, in [0, 255]); NaN, infinite,
  negative or larger values are refused by name (a normalised tensor is not an image);
- transparent pixels are composited on white;
- empty images, images with an aspect ratio above ``MAX_ASPECT_RATIO`` (the model sees a centred square, and the
  resize would blow up memory) and images above ``MAX_PIXELS`` (decompression bombs) are refused with a sentence.

Every refusal is an ``ImageError`` (a ``ValueError``) whose message names the image and says what to do.

>>> load_image(np.zeros((4, 5), dtype=np.uint8)).size
(5, 4)
>>> load_image(np.full((2, 2), 65535, dtype=np.uint16)).getpixel((0, 0))
(255, 255, 255)
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own decompression-bomb threshold (about 89 megapixels)
MAX_ASPECT_RATIO = 50  # long side / short side; a 50:1 strip is already 98% cropped away by the model's square
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(InputError):
    """An image that cannot be read, or holds what no picture does; the message names it and says why."""


def load_image(image, name: str | None = None) -> Image.Image:
    """Return a new RGB PIL image from a path, bytes, binary file object, PIL image, numpy array or torch tensor;
    ``name`` is how error messages refer to it (default: the path, or "the image")."""
    if isinstance(image, (str, os.PathLike)):
        name = name or os.fspath(image)
        image = _open_path(os.fspath(image))
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image = _open_bytes(bytes(image), name or "the image bytes")
    elif hasattr(image, "read") and not isinstance(image, Image.Image):
        image = _open_bytes(image.read(), name or getattr(image, "name", None) or "the image file object")
    elif isinstance(image, Image.Image):
        image = _decoded(image, name or "the PIL image")
    elif isinstance(image, np.ndarray) or _is_tensor(image):
        image = array_to_image(image, name or "the image array")
    elif isinstance(image, (list, tuple)):
        raise ImageError(f"expected one image, got a {type(image).__name__} of {len(image)}: pass the images one at a "
                         "time, or as a list where a function takes several")
    else:
        raise TypeError(f"expected an image as a path, bytes, PIL image, numpy array or torch tensor, got "
                        f"{type(image).__name__}")
    name = name or "the image"
    check_size(image.width, image.height, name)
    return to_rgb(image, name)


def check_size(width: int, height: int, name: str = "the image") -> None:
    """Refuse empty images, absurd aspect ratios and decompression bombs, naming the size."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} has zero size ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels allowed (a guard against decompression bombs): downscale "
                         "it first; the model sees it at a few hundred pixels anyway")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"{name} is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1 (at most "
                         f"{MAX_ASPECT_RATIO}:1): the model sees a centred square of it, so crop the part you mean")


def _open_path(path: str) -> Image.Image:
    if "://" in path and not os.path.exists(path):
        raise ImageError(f"{path} is a URL: images are not downloaded; save the image and pass its file path")
    if os.path.isdir(path):
        raise ImageError(f"{path} is a folder, not an image file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ImageError(f"cannot read {path}: {error.strerror or error}") from None
    return _open_bytes(data, path)


def _open_bytes(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name} declares more than {MAX_PIXELS / 1e6:.0f} megapixels (a decompression bomb "
                             "guard): downscale it first") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP ...)") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"cannot read {name}: the file is corrupt ({error})") from None
    check_size(opened.width, opened.height, name)  # from the header, before decoding a single pixel
    return _decoded(opened, name)


def _decoded(image: Image.Image, name: str) -> Image.Image:
    """Decode fully (so a truncated file fails here, by name) and turn it upright by its EXIF orientation."""
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = "truncated" if "truncated" in str(error) else "corrupt"
        raise ImageError(f"cannot read {name}: the file is {reason} ({error})") from None
    return upright if upright is not None else image


def to_rgb(image: Image.Image, name: str = "the image") -> Image.Image:
    """Any PIL mode as RGB: 16-bit and 32-bit integer images through the fixed 0-65535 scale, float images through
    ``array_to_image``'s rules, transparent pixels composited on white."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):  # "I": how Pillow may open 16-bit files
        return to_rgb(array_to_image(np.asarray(image), name, wide_ints_are_16_bit=True), name)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"{name} has the PIL mode {image.mode!r}, which cannot be shown as RGB ({error})") from None


def array_to_image(array, name: str = "the image array", wide_ints_are_16_bit: bool = False) -> Image.Image:
    """A numpy array or torch tensor, (H, W), (H, W, 1|2|3|4), channels first (1|2|3|4, H, W) or a batch of one,
    as a PIL image (RGB, RGBA, L or LA) with the value rules of ``load_image``. Integers wider than 8 bits are
    refused unless the array is uint16 (or ``wide_ints_are_16_bit``, for Pillow's 32-bit mode of 16-bit files):
    an int64 array holding values up to 1000 has no one scale."""
    if _is_tensor(array):
        array = array.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]  # a batch of one, as tensors usually come
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first → channels last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        hint = (f": that is a batch of {array.shape[0]}; pass the images one at a time" if array.ndim == 4 else
                ": expected (H, W), (H, W, 3), (H, W, 4) or channels first (3, H, W)")
        raise ImageError(f"cannot read an image from {name} of shape {tuple(array.shape)}{hint}")
    if array.size == 0:
        raise ImageError(f"{name} is empty (shape {tuple(array.shape)})")
    check_size(array.shape[1], array.shape[0], name)
    array = _to_uint8(array, name, wide_ints_are_16_bit)
    mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}}[array.ndim]
    mode = mode if isinstance(mode, str) else mode[array.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _to_uint8(array: np.ndarray, name: str, wide_ints_are_16_bit: bool) -> np.ndarray:
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if wide_ints_are_16_bit and low >= 0 and high <= 65535:
            return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
        raise ImageError(f"{name} holds {array.dtype} values from {low} to {high}: 8-bit images lie in 0-255; pass "
                         "a 16-bit image as uint16 (0-65535), or rescale it to uint8")
    if kind == "f":
        values = array.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            bad = "NaN" if np.isnan(values).any() else "infinite"
            raise ImageError(f"{name} holds {bad} values ({int((~finite).sum())} of {values.size}): an image needs "
                             "finite pixel values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            raise ImageError(f"{name} holds floats from {low:.3g} to {high:.3g}: float images lie in [0, 1] (or "
                             "[0, 255]); a normalised tensor must be un-normalised first")
        if high <= 1.0:
            values = values * 255.0
        return np.round(values).astype(np.uint8)
    raise ImageError(f"{name} has dtype {array.dtype}: expected unsigned integers, booleans or floats")


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def crop_geometry(width: int, height: int, size: int) -> tuple[float, float, float]:
    """The processor's resize-shortest-edge-then-centre-crop as (scale, left, top): a pixel (x, y) of the original
    lands at ((x * scale) - left, (y * scale) - top) in the model's size×size input.

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
