"""The synthetic "shapes world": seeded scene generation, rendering and per-object ground truth.

A scene holds 2-6 non-overlapping objects (circle / square / triangle, small / large), each with a colour that is
unique within its scene (as in Sort-of-CLEVR), so "the red object" always names one object.

>>> scene = make_scene(3)
>>> scene.image.size, scene.masks.shape[1:]
((128, 128), (128, 128))
>>> len({o.color for o in scene.objects}) == len(scene.objects)
True
>>> object_patches(scene, 0).shape
(8, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 225),
    "yellow": (240, 210, 30),
    "purple": (145, 55, 195),
    "orange": (250, 135, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
SIZE_PX: dict[str, int] = {"small": 14, "large": 24}  # extent across, in output pixels

SUPERSAMPLE = 4  # draw at 4x and box-downsample, for anti-aliased edges
GAP_PX = 3  # minimum empty space between object footprints
MARGIN_PX = 2  # minimum empty space between a footprint and the image border
BACKGROUND = 212  # light grey; clutter is darker grey and always achromatic
NOISE_STD = 5.0


@dataclass(frozen=True)
class ShapeObject:
    """One object's ground truth. ``box`` is (x1, y1, x2, y2) with x2/y2 exclusive, tight around ``mask``."""

    index: int
    shape: str
    color: str
    size: str
    center: tuple[int, int]  # (x, y) in pixels: the centre of the size x size footprint
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(compare=False, repr=False)  # (H, W) bool

    def to_json(self) -> dict:
        return {"index": self.index, "shape": self.shape, "color": self.color, "size": self.size,
                "center": list(self.center), "box": list(self.box)}


@dataclass(frozen=True)
class Scene:
    """A generated scene. Pixels are rendered lazily (and cached) from ``seed``, so layout-only users stay cheap."""

    seed: int
    image_size: int
    objects: tuple[ShapeObject, ...]

    @cached_property
    def pixels(self) -> np.ndarray:
        """(H, W, 3) uint8, read-only."""
        return _render(self)

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)

    @property
    def masks(self) -> np.ndarray:
        """(n_objects, H, W) bool."""
        if not self.objects:
            return np.zeros((0, self.image_size, self.image_size), dtype=bool)
        return np.stack([o.mask for o in self.objects])

    def to_json(self) -> dict:
        return {"seed": self.seed, "image_size": self.image_size, "objects": [o.to_json() for o in self.objects]}


def make_scene(seed: int, image_size: int = 128, min_objects: int = 2, max_objects: int = 6) -> Scene:
    """Sample a scene deterministically from ``seed`` (same seed and arguments -> identical scene and pixels)."""
    if not 1 <= min_objects <= max_objects <= len(COLORS):
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {len(COLORS)}, got {min_objects}, {max_objects}")
    if image_size < 4 * SIZE_PX["large"]:
        raise ValueError(f"image_size must be at least {4 * SIZE_PX['large']}, got {image_size}")
    rng = np.random.default_rng(_streams(seed)[0])
    n = int(rng.integers(min_objects, max_objects + 1))
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:n]]
    shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=n)]
    sizes = [SIZES[i] for i in rng.integers(len(SIZES), size=n)]
    centers = _place(rng, [SIZE_PX[s] for s in sizes], image_size)
    objects = []
    for i, (shape, color, size, center) in enumerate(zip(shapes, colors, sizes, centers)):
        mask = _shape_mask(shape, center, SIZE_PX[size], image_size)
        objects.append(ShapeObject(i, shape, color, size, center, _tight_box(mask), mask))
    return Scene(seed=seed, image_size=image_size, objects=tuple(objects))


def patch_coverage(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Fraction of each ``patch_size`` patch covered by ``mask`` (H, W) -> (grid, grid) float."""
    h, w = mask.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"mask {mask.shape} is not divisible into {patch_size}px patches")
    grid = mask.reshape(h // patch_size, patch_size, w // patch_size, patch_size)
    return grid.mean(axis=(1, 3))


def object_patches(scene: Scene, index: int, patch_size: int = 16, threshold: float = 0.25) -> np.ndarray:
    """(grid, grid) bool of patches the object covers by at least ``threshold``; never empty.

    Row-major patch id = row * grid + col, e.g. ``np.flatnonzero(object_patches(scene, 0))``.
    """
    return _covered(patch_coverage(scene.objects[index].mask, patch_size), threshold)


def _covered(coverage: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Patches whose ``coverage`` (any shape) reaches ``threshold``; never empty."""
    hit = coverage >= threshold
    if not hit.any():
        # A small object straddling a patch corner can cover < threshold of every patch; keep its best patch.
        hit[np.unravel_index(np.argmax(coverage), coverage.shape)] = True
    return hit


def patch_attributes(scene: Scene, patch_size: int = 16) -> dict[str, np.ndarray]:
    """What each patch shows, row-major (``grid * grid`` entries): a dense ground truth for training the image tower.

    ``color``, ``shape`` and ``size`` are 1 + the index of the covering object's value in ``COLORS`` / ``SHAPES`` /
    ``SIZES`` (0: no object). A patch is covered as in ``object_patches``; where two objects cover it, the one with
    more pixels there wins, and the patch that holds an object's centre always shows that object. ``center`` is 1 on
    the patch that holds an object's centre pixel (one patch per object, so objects can be counted), and ``position``
    (grid², 2) is the covering object's centre (x, y) / image size (0 where no object).

    >>> truth = patch_attributes(make_scene(3))
    >>> int(truth["center"].sum()) == len(make_scene(3).objects), truth["position"].shape
    (True, (64, 2))
    """
    size = scene.image_size
    if size % patch_size:
        raise ValueError(f"image size {size} is not divisible into {patch_size}px patches")
    grid = size // patch_size
    best = np.zeros(grid * grid)  # coverage of the object shown so far
    truth = {"color": np.zeros(grid * grid, np.int64), "shape": np.zeros(grid * grid, np.int64),
             "size": np.zeros(grid * grid, np.int64), "center": np.zeros(grid * grid, np.int64),
             "position": np.zeros((grid * grid, 2), np.float32)}

    def show(patches: np.ndarray, o: ShapeObject) -> None:
        truth["color"][patches] = 1 + list(COLORS).index(o.color)
        truth["shape"][patches] = 1 + SHAPES.index(o.shape)
        truth["size"][patches] = 1 + SIZES.index(o.size)
        truth["position"][patches] = np.asarray(o.center, np.float32) / size

    for o in scene.objects:
        coverage = patch_coverage(o.mask, patch_size).reshape(-1)
        wins = _covered(coverage) & (coverage > best)
        best[wins] = coverage[wins]
        show(wins, o)
    for o in scene.objects:  # centres last: an object's centre patch shows that object whatever else covers it
        center = (o.center[1] // patch_size) * grid + o.center[0] // patch_size
        truth["center"][center] = 1
        show(np.array([center]), o)
    return truth


def _streams(seed: int) -> list[np.random.SeedSequence]:
    # Independent layout and rendering streams: changing the renderer never changes the ground truth.
    return np.random.SeedSequence(seed).spawn(2)


def _place(rng: np.random.Generator, extents: list[int], image_size: int) -> list[tuple[int, int]]:
    """Rejection-sample integer centres so footprints keep ``GAP_PX`` apart and stay inside the image."""
    while True:  # restarting from scratch is rare; 6 large objects fill only ~30% of a 128px image
        centers: list[tuple[int, int]] = []
        for extent in extents:
            low, high = MARGIN_PX + extent // 2, image_size - MARGIN_PX - (extent - extent // 2)
            for _ in range(500):
                c = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
                if all(_apart(c, extent, other, extents[j]) for j, other in enumerate(centers)):
                    centers.append(c)
                    break
            else:
                break
        if len(centers) == len(extents):
            return centers


def _apart(a: tuple[int, int], extent_a: int, b: tuple[int, int], extent_b: int) -> bool:
    # Square footprints are disjoint (with a gap) iff they are separated along at least one axis.
    need = (extent_a + extent_b) / 2 + GAP_PX
    return abs(a[0] - b[0]) >= need or abs(a[1] - b[1]) >= need


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, center: tuple[float, float], extent: float, fill,
                scale: int, offset: tuple[float, float] = (0.0, 0.0)) -> None:
    """Draw one shape at ``scale`` x resolution; the same geometry serves both the image and the masks."""
    cx, cy = (center[0] - offset[0]) * scale, (center[1] - offset[1]) * scale
    r = extent * scale / 2
    x0, y0, x1, y1 = cx - r, cy - r, cx + r - 1, cy + r - 1  # PIL bounds are inclusive
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _shape_mask(shape: str, center: tuple[int, int], extent: int, image_size: int) -> np.ndarray:
    """(H, W) bool: output pixels at least half covered by the supersampled shape."""
    s = SUPERSAMPLE
    # Only rasterise a padded crop around the footprint; the rest of the mask is empty anyway.
    x0, y0 = max(center[0] - extent // 2 - 2, 0), max(center[1] - extent // 2 - 2, 0)
    x1, y1 = min(center[0] + extent // 2 + 3, image_size), min(center[1] + extent // 2 + 3, image_size)
    crop = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    _draw_shape(ImageDraw.Draw(crop), shape, center, extent, 255, s, offset=(x0, y0))
    cover = np.asarray(crop, dtype=np.float32).reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3)) / 255.0
    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[y0:y1, x0:x1] = cover >= 0.5
    mask.setflags(write=False)  # scenes are frozen, and so is their ground truth
    return mask


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _render(scene: Scene) -> np.ndarray:
    """(H, W, 3) uint8: grey background, achromatic clutter, supersampled objects, then pixel noise."""
    rng = np.random.default_rng(_streams(scene.seed)[1])
    s, size = SUPERSAMPLE, scene.image_size
    canvas = Image.new("RGB", (size * s, size * s), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    # Clutter goes under the objects so it never changes what an object's mask means.
    for _ in range(int(rng.integers(2, 5))):
        grey = int(rng.integers(120, 180))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size * s, size=4))
        draw.line((x0, y0, x1, y1), fill=(grey,) * 3, width=s)
    for _ in range(int(rng.integers(3, 9))):
        grey = int(rng.integers(100, 170))
        x, y = (float(v) for v in rng.uniform(0, size * s, size=2))
        r = float(rng.uniform(0.6, 1.5)) * s
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(grey,) * 3)
    for o in scene.objects:
        _draw_shape(draw, o.shape, o.center, SIZE_PX[o.size], COLORS[o.color], s)
    small = np.asarray(canvas.reduce(s), dtype=np.float32)  # reduce() is a box filter
    noisy = small + rng.normal(0.0, NOISE_STD, size=small.shape)  # (H, W, 3)
    pixels = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    pixels.setflags(write=False)
    return pixels
