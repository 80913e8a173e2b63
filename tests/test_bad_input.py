"""Bad and unusual input, one table: every row is an input, the surface it enters through (the image loader, the
Python API, the command line, an explorer), and what must happen: an error of a given type whose message names the
problem, or a handled result that is checked. Command-line rows also check the exit status and that no traceback is
printed; explorer rows check that the error shows inside the widget and the last good result stays.

The rows cover the causes of issue 32 (silent wrong answers, tracebacks, undeadlined network calls) and the good
behaviour that came before them (corrupt files, odd image modes, missing fields, closed ports, released hooks).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import math
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from vle import VLEForITM, VLEForPBC, VLEForVCRQ2A, VLEForVCRQA2R, VLEForVQA
from vle.edits import blank_box, drop_word
from vle.errors import InputError, dumps
from vle.image_utils import ImageError, load_image
from vle.shapes.counterfactual import move_object, remove_object
from vle.shapes.world import make_scene
from vle.testing import save_tiny_model

from .test_vcr import ANNOTATION, META

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = {0: "red", 1: "blue", 2: "circle"}


# -- the world every row runs in: tiny saved models and a folder of good and bad files -------------------------

def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@dataclass
class World:
    root: Path
    models: dict
    files: dict
    image: np.ndarray  # the good scene, (40, 56, 3) uint8

    def file(self, name: str) -> str:
        return str(self.files[name])

    def write(self, name: str, content) -> str:
        path = self.root / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    models = {}
    for name, cls, extra in (("vqa", VLEForVQA, {"id2label": ANSWERS}), ("itm", VLEForITM, {}),
                             ("pbc", VLEForPBC, {}), ("vcr_q2a", VLEForVCRQ2A, {"num_token_types": 8}),
                             ("vcr_qa2r", VLEForVCRQA2R, {"num_token_types": 8})):
        save_tiny_model(cls, str(root / name), **extra)
        models[name] = str(root / name)
    broken = root / "broken-weights"
    broken.mkdir()
    for item in (root / "vqa").iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    models["broken"] = str(broken)
    bad_config = root / "bad-config"
    bad_config.mkdir()
    for item in (root / "vqa").iterdir():
        (bad_config / item.name).write_bytes(item.read_bytes())
    (bad_config / "config.json").write_text("{not json")
    models["bad_config"] = str(bad_config)

    rng = np.random.default_rng(0)
    image = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    files = {}

    def save(name, picture, **options):
        files[name] = root / name
        picture.save(files[name], **options)

    save("good.png", Image.fromarray(image))
    upright = Image.fromarray(image)  # 56 wide, 40 high, as every viewer shows the photo
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": the sensor wrote it 40 wide, 56 high
    save("exif.jpg", upright.transpose(Image.Transpose.ROTATE_90), exif=exif, quality=95)
    save("upright.jpg", upright, quality=95)
    grey = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    save("grey16.png", Image.fromarray(grey))
    save("grey16.tif", Image.fromarray(grey))
    save("float.tif", Image.fromarray(grey.astype(np.float32) / 65535))
    save("cmyk.jpg", Image.fromarray(image).convert("CMYK"))
    save("la.png", Image.fromarray(image).convert("LA"))
    palette = Image.fromarray(image).convert("P")
    save("palette.png", palette, transparency=0)
    frames = [Image.fromarray(image), Image.fromarray(255 - image)]
    files["anim.gif"] = root / "anim.gif"
    frames[0].save(files["anim.gif"], save_all=True, append_images=frames[1:])
    data = files["good.png"].read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    files["truncated.png"] = root / "truncated.png"
    jpeg = files["upright.jpg"].read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    files["truncated.jpg"] = root / "truncated.jpg"
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    files["corrupt.png"] = root / "corrupt.png"
    (root / "empty.png").write_bytes(b"")
    files["empty.png"] = root / "empty.png"
    (root / "notes.png").write_text("these are my notes, not a picture")
    files["notes.png"] = root / "notes.png"
    (root / "bomb.png").write_bytes(_png_declaring(30_000, 30_000))
    files["bomb.png"] = root / "bomb.png"
    save("strip.png", Image.new("RGB", (5000, 2), "red"))
    (root / "folder.png").mkdir()
    files["folder.png"] = root / "folder.png"
    files["missing.png"] = root / "missing.png"

    vcr_image = np.zeros((32, 32, 3), np.uint8)
    save("vcr.png", Image.fromarray(vcr_image))
    files["ann.json"] = Path(World(root, {}, {}, image).write("ann.json", ANNOTATION))
    files["meta.json"] = Path(World(root, {}, {}, image).write("meta.json", META))
    return World(root, models, files, image)


def cli(*argv) -> tuple[int, str, str]:
    """Run the command line in this process: (exit status, stdout, stderr)."""
    from vle.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def vcr_files(world: World, annotation=None, metadata=None, task: str = "q2a") -> list[str]:
    """The vcr command's arguments with a (changed) annotation and metadata written to files."""
    ann = world.write(f"ann-{id(annotation)}.json", ANNOTATION if annotation is None else annotation)
    meta = world.write(f"meta-{id(metadata)}.json", META if metadata is None else metadata)
    return ["vcr", ann, "--image", world.file("vcr.png"), "--metadata", meta, "--task", task,
            "--model", world.models[f"vcr_{task}"]]


def changed(base: dict, **fields) -> dict:
    value = copy.deepcopy(base)
    for key, item in fields.items():
        if item is None:
            value.pop(key, None)
        else:
            value[key] = item
    return value


def pipe(world: World, task: str):
    from vle.pipelines import pipeline

    return pipeline(task, world.models["vqa" if task == "vqa" else "itm" if task in ("itm", "classify") else task])


# -- rows ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    surface: str  # image | api | cli | explorer
    case: str
    run: Callable  # world → result (cli rows: (status, stdout, stderr))
    error: type | None = None  # the exception type an api/image row must raise
    fragment: str = ""  # in the error message (api/image rows) or in stderr (cli rows)
    check: Callable | None = None  # for a handled result: (result, world) → bool
    status: int = 2  # cli rows: the exit status


def handled(surface, case, run, check):
    return Row(surface, case, run, check=check)


def refused(surface, case, run, error, fragment):
    return Row(surface, case, run, error=error, fragment=fragment)


def cli_row(case, argv, fragment, status=2, check=None):
    return Row("cli", case, lambda w: cli(*argv(w)), fragment=fragment, status=status, check=check)


def _same_pixels(a, b, tolerance: float = 0.0) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and float(np.abs(a - b).mean()) <= tolerance


IMAGE_ROWS = [
    # what a camera writes: the picture must come out upright
    handled("image", "EXIF orientation is applied", lambda w: load_image(w.file("exif.jpg")),
            lambda r, w: r.size == (56, 40) and _same_pixels(r, load_image(w.file("upright.jpg")), 3.0)),
    handled("image", "EXIF orientation also for an opened PIL image",
            lambda w: load_image(Image.open(w.file("exif.jpg"))), lambda r, w: r.size == (56, 40)),
    # 16-bit and float: one fixed scale, the same from a path, bytes, a PIL image and an array
    handled("image", "16-bit PNG maps 0-65535 onto 0-255", lambda w: load_image(w.file("grey16.png")),
            lambda r, w: r.mode == "RGB" and r.getpixel((0, 0)) == (0, 0, 0) and r.getpixel((55, 39))[0] == 255),
    handled("image", "16-bit PNG reads the same from a path, bytes and PIL",
            lambda w: [load_image(w.file("grey16.png")), load_image(Path(w.file("grey16.png")).read_bytes()),
                       load_image(Image.open(w.file("grey16.png"))), load_image(w.file("grey16.tif"))],
            lambda r, w: all(_same_pixels(r[0], other) for other in r[1:])),
    handled("image", "uint16 array matches the 16-bit file",
            lambda w: load_image(np.asarray(Image.open(w.file("grey16.png")))),
            lambda r, w: _same_pixels(r, load_image(w.file("grey16.png")))),
    handled("image", "float TIFF in [0, 1] matches the 16-bit file", lambda w: load_image(w.file("float.tif")),
            lambda r, w: _same_pixels(r, load_image(w.file("grey16.png")), 1.0)),
    handled("image", "float array in [0, 255]", lambda w: load_image(w.image.astype(np.float64)),
            lambda r, w: _same_pixels(r, w.image)),
    handled("image", "float array in [0, 1]", lambda w: load_image(w.image / 255.0),
            lambda r, w: _same_pixels(r, w.image)),
    handled("image", "tensor channels first", lambda w: load_image(torch.from_numpy(w.image).permute(2, 0, 1)),
            lambda r, w: _same_pixels(r, w.image)),
    handled("image", "tensor batch of one in [0, 1]",
            lambda w: load_image(torch.from_numpy(w.image).permute(2, 0, 1)[None].float() / 255),
            lambda r, w: _same_pixels(r, w.image)),
    handled("image", "bfloat16 tensor", lambda w: load_image(torch.zeros(3, 8, 8, dtype=torch.bfloat16)),
            lambda r, w: r.size == (8, 8)),
    handled("image", "int64 array in 0-255", lambda w: load_image(w.image.astype(np.int64)),
            lambda r, w: _same_pixels(r, w.image)),
    handled("image", "bool mask", lambda w: load_image(np.eye(8, dtype=bool)), lambda r, w: r.getpixel((0, 0)) ==
            (255, 255, 255)),
    handled("image", "bytes and a file object", lambda w: [load_image(Path(w.file("good.png")).read_bytes()),
                                                           load_image(io.BytesIO(Path(w.file("good.png")).read_bytes()))],
            lambda r, w: all(_same_pixels(x, w.image) for x in r)),
    handled("image", "1x1 image", lambda w: load_image(np.zeros((1, 1, 3), np.uint8)), lambda r, w: r.size == (1, 1)),
    *[handled("image", f"PIL mode {mode}", lambda w, m=mode: load_image(Image.fromarray(w.image).convert(m)),
              lambda r, w: r.mode == "RGB" and r.size == (56, 40))
      for mode in ("L", "LA", "P", "RGBA", "CMYK", "1", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "RGBX", "RGBa")],
    handled("image", "CMYK JPEG, LA and transparent palette files",
            lambda w: [load_image(w.file(n)) for n in ("cmyk.jpg", "la.png", "palette.png")],
            lambda r, w: all(x.mode == "RGB" and x.size == (56, 40) for x in r)),
    handled("image", "animated GIF reads its first frame", lambda w: load_image(w.file("anim.gif")),
            lambda r, w: _same_pixels(r, load_image(Image.open(w.file("anim.gif")).convert("RGB")))),
    handled("image", "transparent pixels are composited on white",
            lambda w: load_image(np.zeros((4, 4, 4), np.uint8)), lambda r, w: r.getpixel((0, 0)) == (255, 255, 255)),
    # refused, by name
    refused("image", "NaN in a float image", lambda w: load_image(np.full((8, 8, 3), np.nan)), ImageError,
            "holds NaN values"),
    refused("image", "one NaN pixel", lambda w: load_image(np.where(np.eye(8)[..., None] > 0, np.nan, 0.5)),
            ImageError, "NaN"),
    refused("image", "infinity in a tensor", lambda w: load_image(torch.full((3, 8, 8), float("inf"))), ImageError,
            "infinite"),
    refused("image", "a normalised tensor", lambda w: load_image(torch.randn(3, 8, 8)), ImageError,
            "un-normalised"),
    refused("image", "floats above 255", lambda w: load_image(np.full((8, 8), 300.0)), ImageError, "[0, 1]"),
    refused("image", "int32 above 16 bits", lambda w: load_image(np.full((8, 8), 70000, np.int32)), ImageError,
            "0-65535"),
    refused("image", "int64 above 255", lambda w: load_image(np.arange(64).reshape(8, 8) * 16), ImageError,
            "pass a 16-bit image as uint16"),
    refused("image", "complex array", lambda w: load_image(np.zeros((8, 8), complex)), ImageError, "dtype"),
    refused("image", "a batch of two", lambda w: load_image(torch.zeros(2, 3, 8, 8)), ImageError, "batch of 2"),
    refused("image", "5-channel array", lambda w: load_image(np.zeros((8, 8, 5), np.uint8)), ImageError,
            "shape (8, 8, 5)"),
    refused("image", "1-D array", lambda w: load_image(np.zeros(8, np.uint8)), ImageError, "shape (8,)"),
    refused("image", "empty array", lambda w: load_image(np.zeros((0, 4, 3), np.uint8)), ImageError, "empty"),
    refused("image", "zero-size PIL image", lambda w: load_image(Image.new("RGB", (0, 3))), ImageError, "zero size"),
    refused("image", "a 5000x2 strip", lambda w: load_image(w.file("strip.png")), ImageError, "aspect ratio"),
    refused("image", "decompression bomb", lambda w: load_image(w.file("bomb.png")), ImageError,
            "decompression bomb"),
    refused("image", "decompression bomb as bytes", lambda w: load_image(Path(w.file("bomb.png")).read_bytes()),
            ImageError, "megapixels"),
    refused("image", "truncated PNG", lambda w: load_image(w.file("truncated.png")), ImageError, "truncated.png"),
    refused("image", "truncated JPEG", lambda w: load_image(w.file("truncated.jpg")), ImageError, "truncated"),
    refused("image", "corrupt PNG", lambda w: load_image(w.file("corrupt.png")), ImageError, "corrupt.png"),
    refused("image", "empty file", lambda w: load_image(w.file("empty.png")), ImageError, "is empty (0 bytes)"),
    refused("image", "a text file named .png", lambda w: load_image(w.file("notes.png")), ImageError,
            "not an image Pillow can read"),
    refused("image", "a folder", lambda w: load_image(w.file("folder.png")), ImageError, "is a folder"),
    refused("image", "a missing file", lambda w: load_image(w.file("missing.png")), FileNotFoundError,
            "missing.png"),
    refused("image", "a URL", lambda w: load_image("https://example.com/cat.jpg"), ImageError,
            "images are not downloaded"),
    refused("image", "a number", lambda w: load_image(42), TypeError, "got int"),
    refused("image", "None", lambda w: load_image(None), TypeError, "got NoneType"),
    refused("image", "a list where one image belongs", lambda w: load_image([w.image, w.image]), ImageError,
            "expected one image, got a list of 2"),
]


def _vqa(w, **kwargs):
    return pipe(w, "vqa")(**kwargs)


def _session(w):
    from vle.explain import Session

    vqa = pipe(w, "vqa")
    return Session(vqa.model, vqa.processor)


def _vcr_explain(w, target):
    from vle.explain import ExplainInputs, explain
    from vle.processing_vle import VLEProcessor

    model = VLEForVCRQ2A.from_pretrained(w.models["vcr_q2a"]).eval()
    processor = VLEProcessor.from_pretrained(w.models["vcr_q2a"])
    batch = processor.vcr(ANNOTATION, np.zeros((32, 32, 3), np.uint8), META, patch_size=model.config.patch_size)
    return explain(model, ExplainInputs.from_batch(dict(batch), processor), target, "rollout")


def _pipeline_consistency(w):
    """The same 16-bit file through the pipeline by path, by PIL and by upload bytes: one answer."""
    vqa = pipe(w, "vqa")
    path = w.file("grey16.png")
    return [vqa(image=image, question="what color ?", top_k=3)
            for image in (path, Image.open(path), Path(path).read_bytes())]


def _hooks_released(w):
    from vle.explain import VQAAnswer, explain, hook_count

    session = _session(w)
    before = hook_count(session.model)
    inputs = session.prepare(w.image, "what color ?")
    with pytest.raises(InputError):
        explain(session.model, inputs, VQAAnswer(0), "raw_attention", layer=99)
    return hook_count(session.model) == before


API_ROWS = [
    handled("api", "a 16-bit PNG gives one answer by path, PIL and bytes", _pipeline_consistency,
            lambda r, w: r[0] == r[1] == r[2]),
    handled("api", "an EXIF photo is answered upright",
            lambda w: [pipe(w, "vqa").preprocess({"image": w.file(n), "question": "what color ?"})["pixel_values"]
                       for n in ("exif.jpg", "upright.jpg")],
            lambda r, w: float((r[0] - r[1]).abs().mean()) < 0.05),
    handled("api", "hooks are released when an explanation is refused", _hooks_released, lambda r, w: r is True),
    refused("api", "a list where one question belongs",
            lambda w: _vqa(w, image=w.image, question=["what color ?", "what shape ?"]), InputError,
            "question must be one string"),
    refused("api", "a number as the question", lambda w: _vqa(w, image=w.image, question=7), InputError,
            "question must be a string"),
    refused("api", "an empty question", lambda w: _vqa(w, image=w.image, question="  "), InputError,
            "question is empty"),
    refused("api", "None as the image", lambda w: _vqa(w, image=None, question="what ?"), InputError,
            "missing: image"),
    refused("api", "top_k True", lambda w: _vqa(w, image=w.image, question="what ?", top_k=True), InputError,
            "top_k must be a whole number, got True"),
    refused("api", "a missing question", lambda w: _vqa(w, image=w.image), InputError, "missing: question"),
    refused("api", "a misspelt key", lambda w: pipe(w, "vqa")({"image": w.image, "questoin": "what ?"}), InputError,
            "unknown questoin"),
    refused("api", "a bad example in a list",
            lambda w: pipe(w, "vqa")([{"image": w.image, "question": "a"}, {"image": w.image, "question": ""}]),
            InputError, "example 1: question is empty"),
    refused("api", "an empty list of examples", lambda w: pipe(w, "vqa")([]), InputError, "empty"),
    refused("api", "top_k 0", lambda w: _vqa(w, image=w.image, question="what ?", top_k=0), InputError,
            "top_k must be at least 1"),
    refused("api", "top_k NaN", lambda w: _vqa(w, image=w.image, question="what ?", top_k=float("nan")), InputError,
            "top_k must be a whole number"),
    refused("api", "top_k as text", lambda w: _vqa(w, image=w.image, question="what ?", top_k="3"), InputError,
            "top_k must be a whole number"),
    refused("api", "an option the pipeline does not take",
            lambda w: _vqa(w, image=w.image, question="what ?", topk=3), InputError, "does not take topk"),
    refused("api", "batch_size 0", lambda w: pipe(w, "vqa")([{"image": w.image, "question": "what ?"}], batch_size=0),
            InputError, "batch_size must be at least 1"),
    refused("api", "batch_size for VCR items", lambda w: pipe(w, "vcr_q2a")(
        [{"image": np.zeros((32, 32, 3), np.uint8), "annotation": ANNOTATION, "metadata": META}], batch_size=4),
        InputError, "one example at a time"),
    refused("api", "one string where a list of labels belongs",
            lambda w: pipe(w, "classify")(image=w.image, candidate_labels="cat"), InputError,
            "must be a list of strings, got one string 'cat'"),
    refused("api", "repeated labels", lambda w: pipe(w, "classify")(image=w.image, candidate_labels=["a", "a"]),
            InputError, "repeats 'a'"),
    refused("api", "a number among the labels",
            lambda w: pipe(w, "classify")(image=w.image, candidate_labels=["cat", 3]), InputError,
            "candidate_labels[1] must be a string"),
    refused("api", "a template with a named field",
            lambda w: pipe(w, "classify")(image=w.image, candidate_labels=["cat"], hypothesis_template="a {x}"),
            InputError, "one empty {}"),
    refused("api", "a template without a slot",
            lambda w: pipe(w, "classify")(image=w.image, candidate_labels=["cat"], hypothesis_template="a photo"),
            InputError, "exactly one {}"),
    refused("api", "a number as the model", lambda w: __import__("vle.pipelines").pipelines.pipeline("vqa", 42),
            InputError, "model must be a shipped name"),
    refused("api", "an ITM model in the VQA pipeline",
            lambda w: __import__("vle.pipelines").pipelines.pipeline("vqa", pipe(w, "itm").model,
                                                                      pipe(w, "itm").processor),
            InputError, "needs a VLEForVQA, got a VLEForITM"),
    refused("api", "an unknown task", lambda w: __import__("vle.pipelines").pipelines.pipeline("caption", "x"),
            InputError, "unknown task 'caption'"),
    refused("api", "a device this machine lacks",
            lambda w: __import__("vle.pipelines").pipelines.pipeline("vqa", w.models["vqa"], device="cuda:7"),
            InputError, "not available here"),
    refused("api", "a truncated model.safetensors",
            lambda w: __import__("vle.pipelines").pipelines.pipeline("vqa", w.models["broken"]), InputError,
            "truncated or corrupt"),
    refused("api", "a config.json that is not JSON",
            lambda w: __import__("vle.pipelines").pipelines.pipeline("vqa", w.models["bad_config"]), InputError,
            "cannot load the model"),
    # VCR: schema and consistency
    refused("api", "VCR metadata of another size",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((64, 64, 3), np.uint8), annotation=ANNOTATION, metadata=META),
            InputError, "describes a 32x32 image but the image is 64x64"),
    refused("api", "VCR annotation without objects",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=changed(ANNOTATION,
                                                                                                    objects=None),
                                         metadata=META), InputError, "lacks objects"),
    refused("api", "VCR tag out of range",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8),
                                         annotation=changed(ANNOTATION, question=["is", [5], "?"]), metadata=META),
            InputError, "object tag 5 is out of range"),
    refused("api", "VCR tag that is a string",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8),
                                         annotation=changed(ANNOTATION, question=["is", ["0"], "?"]), metadata=META),
            InputError, "object tags are whole numbers"),
    refused("api", "VCR label outside the choices",
            lambda w: pipe(w, "vcr_qa2r")(image=np.zeros((32, 32, 3), np.uint8),
                                          annotation=changed(ANNOTATION, answer_label=7), metadata=META),
            InputError, "answer_label must be a choice index from 0 to 3"),
    refused("api", "VCR box with infinity",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata=changed(META, boxes=[[0, 0, math.inf, 8]] + META["boxes"][1:])),
            InputError, "four finite pixel coordinates"),
    refused("api", "VCR box with NaN",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata=changed(META, boxes=[[0, 0, math.nan, 8]] + META["boxes"][1:])),
            InputError, "four finite pixel coordinates"),
    refused("api", "VCR empty box",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata=changed(META, boxes=[[8, 8, 8, 20]] + META["boxes"][1:])),
            InputError, "is empty"),
    refused("api", "VCR fewer boxes than objects",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata=changed(META, boxes=META["boxes"][:1])),
            InputError, "1 boxes for 3 objects"),
    refused("api", "VCR metadata of zero width",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata=changed(META, width=0)), InputError,
            "width must be a positive number of pixels"),
    refused("api", "VCR metadata without boxes",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=ANNOTATION,
                                         metadata={"width": 32, "height": 32}), InputError, "lacks boxes"),
    refused("api", "VCR annotation that is a list",
            lambda w: pipe(w, "vcr_q2a")(image=np.zeros((32, 32, 3), np.uint8), annotation=[1, 2], metadata=META),
            InputError, "must be a JSON object"),
    refused("api", "VCR lists of different lengths",
            lambda w: __import__("vle.vcr").vcr.build_vcr_inputs(
                pipe(w, "vcr_q2a").processor, [ANNOTATION, ANNOTATION], [np.zeros((32, 32, 3), np.uint8)],
                [META, META], patch_size=8), InputError, "2 annotations, 1 images"),
    # explanations
    refused("api", "a contrast with itself", lambda w: __import__("vle.explain").explain.VQAContrast(1, 1),
            InputError, "two different answers"),
    refused("api", "a VCR contrast with itself", lambda w: __import__("vle.explain").explain.VCRContrast(0, 0),
            InputError, "two different choices"),
    refused("api", "an answer the model does not know",
            lambda w: _session(w).explain(w.image, "what ?", answer="purple"), InputError,
            "'purple' is not one of the model's 3 answers"),
    refused("api", "an answer index out of range",
            lambda w: _session(w).explain(w.image, "what ?", target=__import__("vle.explain").explain.VQAAnswer(9)),
            InputError, "answer index 9 is out of range"),
    refused("api", "a negative answer index", lambda w: __import__("vle.explain").explain.VQAAnswer(-1),
            InputError, "whole number from 0"),
    refused("api", "a VCR choice out of range",
            lambda w: _vcr_explain(w, __import__("vle.explain").explain.VCRChoice(6)), InputError,
            "choice 6 is out of range: the item has 4 choices"),
    refused("api", "a layer the fusion lacks",
            lambda w: _session(w).explain(w.image, "what ?", method="raw_attention", layer=99), InputError,
            "layer 99 is out of range"),
    refused("api", "an attention head the fusion lacks",
            lambda w: _session(w).explain(w.image, "what ?", method="raw_attention", head=-100), InputError,
            "head -100 is out of range"),
    refused("api", "zero integration steps",
            lambda w: _session(w).explain(w.image, "what ?", method="integrated_gradients", n_steps=0),
            InputError, "n_steps must be at least 1"),
    refused("api", "GradientShap with a negative noise level",
            lambda w: _session(w).explain(w.image, "what ?", method="gradient_shap", stdevs=-1), InputError,
            "stdevs must be a finite number >= 0, got -1"),
    refused("api", "GradientShap with no samples",
            lambda w: _session(w).explain(w.image, "what ?", method="gradient_shap", n_samples=0), InputError,
            "option n_samples must be at least 1, got 0"),
    refused("api", "KernelSHAP with no samples",
            lambda w: _session(w).explain(w.image, "what ?", method="kernel_shap", n_samples=0), InputError,
            "option n_samples must be at least 1, got 0"),
    refused("api", "an unknown method", lambda w: _session(w).explain(w.image, "what ?", method="lime"), InputError,
            "unknown explanation method 'lime'"),
    refused("api", "an unknown option", lambda w: _session(w).explain(w.image, "what ?", method="rollout", steps=3),
            InputError, "has no option steps"),
    refused("api", "a PBC patch outside the grid",
            lambda w: __import__("vle.explain").explain.explain(
                pipe(w, "pbc").model, __import__("vle.explain").explain.ExplainInputs.build(
                    pipe(w, "pbc").processor, w.image, "a red"),
                __import__("vle.explain").explain.PBCPhrase(patches=(99,)), "pbc"), InputError,
            "outside the model's 16 patches"),
    refused("api", "answer and target both", lambda w: _session(w).explain(
        w.image, "what ?", answer="red", target=__import__("vle.explain").explain.VQAAnswer(0)), InputError,
        "not both"),
    refused("api", "a file that is not a saved explanation",
            lambda w: __import__("vle.explain").explain.Explanation.load(w.file("good.png")), InputError,
            "is not a saved Explanation"),
    refused("api", "NaN image through the session", lambda w: _session(w).explain(np.full((8, 8, 3), np.nan),
                                                                                      "what ?"), ImageError, "NaN"),
    # VQA + LLM
    refused("api", "an ftp:// LLM", lambda w: __import__("vle.llm").llm.resolve_llm("ftp://host/v1", model="m"),
            InputError, "uses the scheme ftp://, which is not supported"),
    refused("api", "an infinite timeout",
            lambda w: __import__("vle.llm").llm.ChatCompletionsBackend("http://127.0.0.1:1/v1",
                                                                      timeout=float("inf")), InputError,
            "finite number of seconds"),
    refused("api", "a zero timeout",
            lambda w: __import__("vle.llm").llm.ChatCompletionsBackend("http://127.0.0.1:1/v1", timeout=0),
            InputError, "above 0"),
    refused("api", "a timeout for a local model",
            lambda w: __import__("vle.llm").llm.resolve_llm("some/local-model", timeout=3.0), InputError,
            "a local transformers model does not take timeout"),
    refused("api", "a negative retry count",
            lambda w: __import__("vle.llm").llm.ChatCompletionsBackend("http://127.0.0.1:1/v1", retries=-1),
            InputError, "retries must be a whole number"),
    refused("api", "answers that are one dict",
            lambda w: __import__("vle.llm").llm.answer_with_llm(lambda p, **s: "A", "what ?", "a cat",
                                                                {"answer": "cat", "score": 1.0}), InputError,
            "must be a list"),
    refused("api", "a NaN score among the answers",
            lambda w: __import__("vle.llm").llm.answer_with_llm(lambda p, **s: "A", "what ?", "a cat",
                                                                [{"answer": "cat", "score": math.nan}]), InputError,
            "must be a finite number"),
    refused("api", "a negative temperature",
            lambda w: __import__("vle.llm").llm.answer_with_llm(lambda p, **s: "A", "what ?", "a cat",
                                                                [{"answer": "cat", "score": 1.0}], temperature=-1),
            InputError, "temperature must be at least 0"),
    handled("api", "strict JSON has null where a value is undefined",
            lambda w: dumps({"auc": math.nan, "curve": np.array([1.0, np.inf]), "n": np.int64(3)}),
            lambda r, w: json.loads(r, parse_constant=lambda c: pytest.fail(c)) == {"auc": None,
                                                                                    "curve": [1.0, None], "n": 3}),
    refused("api", "removing an object the scene does not have",
            lambda w: remove_object(make_scene(3), 9), InputError, "at most"),
    refused("api", "moving an object onto another",
            lambda w: move_object(make_scene(3), 0, make_scene(3).objects[1].center), InputError, "px apart"),
    refused("api", "blanking a box outside the image",
            lambda w: blank_box(w.image, (50, 0, 60, 10)), InputError,
            "reaches outside the 56x40 image"),
    refused("api", "dropping the only word", lambda w: drop_word("what", 0), InputError, "the only word"),
]


CLI_ROWS = [
    cli_row("vcr annotation without objects", lambda w: vcr_files(w, changed(ANNOTATION, objects=None)),
            "lacks objects"),
    cli_row("vcr qa2r answer_label out of range", lambda w: vcr_files(w, changed(ANNOTATION, answer_label=9),
                                                                      task="qa2r"),
            "answer_label must be a choice index from 0 to 3"),
    cli_row("vcr box with Infinity (not JSON)",
            lambda w: vcr_files(w, metadata=None)[:5] + [w.write("inf.json", '{"boxes": [[0, 0, Infinity, 8]], '
                                                                             '"width": 32, "height": 32}'),
                                                          "--model", w.models["vcr_q2a"]],
            "holds Infinity, which is not a JSON number"),
    cli_row("vcr box with 1e999", lambda w: vcr_files(w)[:5] + [w.write("big.json", '{"boxes": [[0, 0, 1e999, 8], '
                                                                                   '[0,0,8,8], [0,0,8,8]], "width": 32,'
                                                                                   ' "height": 32}'),
                                                             "--model", w.models["vcr_q2a"]],
            "four finite pixel coordinates"),
    cli_row("vcr metadata of another image", lambda w: vcr_files(w, metadata=changed(META, width=640, height=480)),
            "describes a 640x480 image but the image is 32x32"),
    cli_row("vcr annotation that is not JSON", lambda w: ["vcr", w.write("broken.json", '{"objects": ['), "--image",
                                                          w.file("vcr.png"), "--metadata", w.file("meta.json"),
                                                          "--model", w.models["vcr_q2a"]],
            "is not valid JSON: Expecting value at line 1"),
    cli_row("vcr annotation file missing", lambda w: ["vcr", w.root / "nope.json", "--image", w.file("vcr.png"),
                                                      "--metadata", w.file("meta.json")], "not found"),
    cli_row("a truncated model.safetensors", lambda w: ["vqa", w.file("good.png"), "what ?", "--model",
                                                        w.models["broken"]], "truncated or corrupt"),
    cli_row("a decompression bomb", lambda w: ["vqa", w.file("bomb.png"), "what ?", "--model", w.models["vqa"]],
            "decompression bomb"),
    cli_row("a NaN image file is refused before the model runs",
            lambda w: ["explain", w.file("corrupt.png"), "what ?", "--model", w.models["vqa"], "--out",
                       w.root / "r.html"], "corrupt"),
    cli_row("classify with a named template field",
            lambda w: ["classify", w.file("good.png"), "cat", "dog", "--template", "a {x}", "--model", w.models["itm"]],
            "one empty {}"),
    cli_row("classify with repeated labels",
            lambda w: ["classify", w.file("good.png"), "cat", "cat", "--model", w.models["itm"]], "repeats 'cat'"),
    cli_row("vqa-llm --timeout inf", lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--timeout", "inf"],
            "finite number of seconds"),
    cli_row("vqa-llm --timeout nan", lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--timeout", "nan"],
            "finite number of seconds"),
    cli_row("vqa-llm --timeout 0", lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--timeout", "0"],
            "above 0"),
    cli_row("vqa-llm --base-url ftp://", lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--base-url",
                                                    "ftp://127.0.0.1/v1", "--vqa-model", w.models["vqa"],
                                                    "--captioner", "shapes"], "scheme ftp://"),
    cli_row("vqa-llm --local with --timeout", lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--local", "x",
                                                         "--timeout", "3"], "--timeout only apply to a server"),
    cli_row("explain --answer A --rather-than A",
            lambda w: ["explain", w.file("good.png"), "what ?", "--answer", "circle", "--rather-than", "circle",
                       "--model", w.models["vqa"], "--out", w.root / "same.html"], "two different answers"),
    cli_row("explain --rather-than without --answer",
            lambda w: ["explain", w.file("good.png"), "what ?", "--rather-than", "circle", "--model", w.models["vqa"],
                       "--out", w.root / "r.html"], "--rather-than needs --answer"),
    cli_row("explain an unknown answer", lambda w: ["explain", w.file("good.png"), "what ?", "--answer", "purple",
                                                    "--model", w.models["vqa"], "--out", w.root / "r.html"],
            "'purple' is not one of the model's 3 answers"),
    cli_row("explain an unknown method", lambda w: ["explain", w.file("good.png"), "what ?", "--method", "lime",
                                                    "--out", w.root / "r.html"], "unknown explanation method 'lime'"),
    cli_row("explain --out into a missing folder", lambda w: ["explain", w.file("good.png"), "what ?", "--out",
                                                              w.root / "no" / "such" / "r.html"], "does not exist"),
    cli_row("explain --out with a wrong suffix", lambda w: ["explain", w.file("good.png"), "what ?", "--out",
                                                            w.root / "r.png"], "must end in .html"),
    cli_row("pbc --out with an unknown image suffix", lambda w: ["pbc", w.file("good.png"), "a red", "--out",
                                                                 w.root / "overlay.xyz"], "must end in .png"),
    cli_row("vqa --top-k 0", lambda w: ["vqa", w.file("good.png"), "what ?", "--top-k", "0"], "must be at least 1"),
    cli_row("vqa --top-k abc", lambda w: ["vqa", w.file("good.png"), "what ?", "--top-k", "abc"],
            "expected a whole number"),
    cli_row("vqa with an empty question", lambda w: ["vqa", w.file("good.png"), "", "--model", w.models["vqa"]],
            "question is empty"),
    cli_row("vqa on a folder", lambda w: ["vqa", w.file("folder.png"), "what ?", "--model", w.models["vqa"]],
            "is a folder"),
    cli_row("vqa with a number as the model", lambda w: ["vqa", w.file("good.png"), "what ?", "--model", "42"],
            "unknown model '42'"),
    cli_row("vqa-llm with a captioner folder that does not exist",
            lambda w: ["vqa-llm", w.file("good.png"), "what ?", "--base-url", "http://127.0.0.1:9/v1", "--vqa-model",
                       w.models["vqa"], "--captioner", w.root / "no-captioner"], "there is no folder"),
    cli_row("demo does not take --model", lambda w: ["demo", "--model", "x"], "unrecognized arguments: --model"),
    cli_row("an unknown command", lambda w: ["caption", "x"], "invalid choice: 'caption'"),
    cli_row("evaluate --n 0", lambda w: ["evaluate", "--n", "0"], "must be at least 1"),
    cli_row("evaluate on a training seed", lambda w: ["evaluate", "--seed", "5", "--n", "1"],
            "seeds must be held out"),
    cli_row("faithfulness --n -3", lambda w: ["faithfulness", "--n", "-3"], "must be at least 1"),
    cli_row("faithfulness on a training seed", lambda w: ["faithfulness", "--seeds", "1000003,5", "--n", "1"],
            "seeds must be held out"),
    cli_row("faithfulness seeds that share scenes",
            lambda w: ["faithfulness", "--seeds", "1000000,1000010", "--n", "20"], "share scenes"),
    cli_row("faithfulness --seed and --seeds", lambda w: ["faithfulness", "--seed", "1000000", "--seeds", "2000000"],
            "not allowed with argument"),
    cli_row("faithfulness --seeds with a word", lambda w: ["faithfulness", "--seeds", "1000000,first"],
            "expected a whole number"),
    cli_row("faithfulness --vcr -1", lambda w: ["faithfulness", "--vcr", "-1"], "must be at least 0"),
    cli_row("faithfulness with an unknown method", lambda w: ["faithfulness", "--n", "1", "--methods", "rollout,lime"],
            "unknown explanation method 'lime'"),
    cli_row("faithfulness with a method that cannot explain VQA",
            lambda w: ["faithfulness", "--n", "1", "--methods", "pbc"], "does not explain VQA answers"),
    cli_row("counterfactual on a training seed", lambda w: ["counterfactual", "--seed", "5", "--n", "1"],
            "seeds must be held out"),
    cli_row("counterfactual --n 0", lambda w: ["counterfactual", "--n", "0"], "must be at least 1"),
    cli_row("counterfactual with an unknown method",
            lambda w: ["counterfactual", "--n", "1", "--methods", "rollout,lime"], "unknown explanation method 'lime'"),
    cli_row("counterfactual with no methods", lambda w: ["counterfactual", "--n", "1", "--methods", ","],
            "methods is empty"),
    cli_row("batch without --data", lambda w: ["batch", "--out", w.root / "run"], "required: --data"),
    cli_row("batch over VQA v2 without its files", lambda w: ["batch", "--data", "vqa2", "--out", w.root / "run"],
            "needs --questions and --images"),
    cli_row("batch with an unknown method",
            lambda w: ["batch", "--data", "shapes", "--n", "1", "--methods", "lime", "--out", w.root / "run"],
            "unknown method lime"),
    cli_row("batch of VCR items on a VQA model",
            lambda w: ["batch", "--data", "shapes", "--task", "q2a", "--n", "1", "--model", w.models["vqa"], "--out",
                       w.root / "run"], "is VCR data, but the model answers VQA"),
    cli_row("batch into a file", lambda w: ["batch", "--data", "shapes", "--n", "1", "--out", w.file("good.png")],
            "is a file"),
    cli_row("batch into a folder of other files",
            lambda w: ["batch", "--data", "shapes", "--n", "1", "--out", w.root], "holds other files"),
    cli_row("batch over a dataset folder that does not exist",
            lambda w: ["batch", "--data", "hf", "--dataset", w.root / "nowhere", "--out", w.root / "run"],
            "is not a dataset folder"),
    cli_row("batch over a table that does not exist",
            lambda w: ["batch", "--data", "jsonl", "--file", w.root / "none.jsonl", "--out", w.root / "run"],
            "data file not found"),
    cli_row("batch --limit 0", lambda w: ["batch", "--data", "shapes", "--limit", "0", "--out", w.root / "run"],
            "must be at least 1"),
    cli_row("a report is written whole or not at all",
            lambda w: ["explain", w.file("good.png"), "what ?", "--model", w.models["vqa"], "--method", "rollout",
                       "--out", w.root / "kept.html"], "", status=0,
            check=lambda r, w: (w.root / "kept.html").read_text().startswith("<!DOCTYPE html>")
            and not list(w.root.glob(".vle-*.part"))),
    cli_row("a 16-bit PNG: vqa and explain read the same picture",
            lambda w: ["vqa", w.file("grey16.png"), "what color ?", "--model", w.models["vqa"], "--top-k", "3"], "",
            status=0, check=lambda r, w: json.loads(r[1]) == json.loads(cli(
                "explain", w.file("grey16.png"), "what color ?", "--model", w.models["vqa"], "--top-k", "3",
                "--method", "rollout", "--out", w.root / "grey.html")[1])["answers"]),
]


def _broken_handler(args):
    raise KeyError("an internal slip")


def test_an_internal_error_is_one_line_and_status_1_with_the_traceback_behind_debug(monkeypatch, world):
    import vle.cli

    monkeypatch.setattr(vle.cli, "cmd_vqa", _broken_handler)
    code, _, err = cli("vqa", world.file("good.png"), "what ?")
    assert code == 1 and "Traceback" not in err and "a bug in vle-workbench (KeyError)" in err
    assert "--debug" in err
    code, _, err = cli("--debug", "vqa", world.file("good.png"), "what ?")
    assert code == 1 and "Traceback" in err and "an internal slip" in err


# -- explorers: the error shows inside the widget and the last good result stays ----------------------------------

needs_shipped = pytest.mark.skipif(not (ROOT / "vle" / "checkpoints" / "vle-tiny-shapes-vqa" / "config.json").is_file(),
                                   reason="the embedded models are not shipped")


def _upload(data: bytes, name: str = "mine.png"):
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)},)


@pytest.fixture(scope="module")
def vqa_explorer():
    from widgets import VQAExplorer

    explorer = VQAExplorer(image="shapes_0")
    explorer.question.value = "what color is the circle ?"
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    return explorer


def _after_bad_run(explorer, setup) -> tuple[str, list]:
    """Run the explorer after ``setup`` broke its input; return its message and whether it kept its answers."""
    kept = (copy.deepcopy(explorer.answers), explorer.heatmap.value)
    setup(explorer)
    explorer.run_button.click()
    message = explorer.status.message.value
    ok = (explorer.answers, explorer.heatmap.value) == kept and not explorer.run_button.disabled
    explorer.picker.source.value, explorer.question.value = "shapes_0", "what color is the circle ?"
    return message, ok


def _set_path(path):
    def setup(explorer):
        explorer.picker.source.value = "(path)"
        explorer.picker.path.value = str(path)
    return setup


def _set_upload(data: bytes):
    def setup(explorer):
        explorer.picker.source.value = "(upload)"
        explorer.picker.upload.value = _upload(data)
    return setup


EXPLORER_ROWS = [
    ("a missing file", lambda w: _set_path(w.root / "missing.png"), "image file not found"),
    ("a corrupt upload", lambda w: _set_upload(b"\x89PNG\r\n\x1a\n garbage"), "the file is corrupt"),
    ("an empty upload", lambda w: _set_upload(b""), "is empty (0 bytes)"),
    ("a decompression bomb upload", lambda w: _set_upload(_png_declaring(30_000, 30_000)), "decompression bomb"),
    ("a 5000x2 strip", lambda w: _set_path(w.file("strip.png")), "aspect ratio"),
    ("a folder", lambda w: _set_path(w.file("folder.png")), "is a folder"),
    ("a URL", lambda w: _set_path("https://example.com/cat.png"), "images are not downloaded"),
    ("an empty question", lambda w: (lambda e: setattr(e.question, "value", "   ")), "type a question"),
]


@needs_shipped
@pytest.mark.parametrize("case, setup, fragment", EXPLORER_ROWS, ids=[row[0] for row in EXPLORER_ROWS])
def test_explorer_rows(vqa_explorer, world, case, setup, fragment):
    message, kept = _after_bad_run(vqa_explorer, setup(world))
    assert fragment in message, message
    assert kept, f"{case}: the explorer lost its last good result"


@needs_shipped
def test_explorer_reads_an_exif_upload_upright_and_a_16_bit_upload_like_the_command_line(vqa_explorer, world):
    vqa_explorer.picker.source.value = "(upload)"
    vqa_explorer.picker.upload.value = _upload(Path(world.file("exif.jpg")).read_bytes(), "photo.jpg")
    assert vqa_explorer.picker.image.size == (56, 40)
    vqa_explorer.picker.upload.value = _upload(Path(world.file("grey16.png")).read_bytes())
    assert _same_pixels(vqa_explorer.picker.image, load_image(world.file("grey16.png")))
    vqa_explorer.picker.source.value = "shapes_0"


@needs_shipped
def test_itm_explorer_keeps_its_match_after_a_bad_template():
    from widgets import ITMExplorer

    explorer = ITMExplorer(image="shapes_0")
    explorer.run_button.click()
    assert explorer.status.error is None, explorer.status.message.value
    match, pbc = explorer.match.value, explorer.pbc
    explorer.template.value = "a {x}"
    explorer.run_button.click()
    assert "one empty {}" in explorer.status.message.value
    assert explorer.match.value == match and explorer.pbc is pbc and not explorer.run_button.disabled


def test_llm_panel_names_an_unsupported_scheme():
    from widgets.llm_panel import LLMPanel

    panel = LLMPanel(source=lambda: None, llm="ftp://127.0.0.1/v1")
    assert "ftp://" in panel.setup.value and panel.ask_button.disabled


# -- network deadlines: a real server on 127.0.0.1 that misbehaves ---------------------------------------------

class _Trickle(BaseHTTPRequestHandler):
    """Sends headers, then one byte of the body every ``interval`` seconds."""

    interval = 0.3

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"choices": [{"message": {"content": "A"}}]}'
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.interval)
        except OSError:  # the client gave up, as it should
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickle_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_trickling_server_cannot_stretch_the_timeout(trickle_server):
    from vle.llm import ChatCompletionsBackend, LLMError

    backend = ChatCompletionsBackend(trickle_server, model="m", timeout=1.0, retries=3, backoff=0.0)
    started = time.monotonic()
    with pytest.raises(LLMError, match="within the 1 s timeout"):
        backend.generate("hi")
    assert time.monotonic() - started < 1.6  # one deadline for the whole request, retries included


def test_a_closed_port_is_a_clear_llm_error():
    from vle.llm import ChatCompletionsBackend, LLMError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LLMError, match="cannot connect"):
        ChatCompletionsBackend(f"http://127.0.0.1:{port}/v1", model="m", timeout=2.0, retries=0).generate("hi")


def test_the_command_line_falls_back_within_its_timeout_on_a_trickling_server(trickle_server, world):
    started = time.monotonic()
    code, out, err = cli("vqa-llm", world.file("good.png"), "what color ?", "--base-url", trickle_server,
                         "--model", "m", "--timeout", "1", "--vqa-model", world.models["vqa"], "--captioner", "shapes",
                         "--json")
    result = json.loads(out)
    assert code == 0, err
    assert result["source"] == "llm error" and "within the 1 s timeout" in result["error"]
    assert time.monotonic() - started < 15  # models load in a few seconds; the LLM gets its one second


def test_faithfulness_json_is_strict_json():
    code, out, err = cli("faithfulness", "--n", "2", "--json")
    assert code == 0, err
    json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


# -- the table ----------------------------------------------------------------------------------------------------

ROWS = IMAGE_ROWS + API_ROWS + CLI_ROWS


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.surface}: {row.case}" for row in ROWS])
def test_bad_input_table(row: Row, world):
    if row.surface == "cli":
        code, out, err = row.run(world)
        assert "Traceback" not in err, err
        assert code == row.status, (code, err)
        assert row.fragment in err, err
        if row.status == 2:
            assert 1 <= len(err.strip().splitlines()) <= 3, err  # a sentence or two, not a dump
        if row.check is not None:
            assert row.check((code, out, err), world)
        return
    if row.error is not None:
        with pytest.raises(row.error) as caught:
            row.run(world)
        assert row.fragment in str(caught.value), str(caught.value)
        return
    assert row.check(row.run(world), world)
