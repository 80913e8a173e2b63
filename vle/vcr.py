"""VCR inputs: from the VCR annotation format (token lists mixing words and object-index lists, boxes in pixels) to
batched multiple-choice model inputs with object token types and box → patch ids.

Semantics follow the original pipeline (object names, tag → token type, truncation rule, [CLS] Q [SEP] A [SEP]
layout) without its quirks: every call starts its person-name counter afresh, no token list is shared or mutated
between choices, pieces are converted to ids directly (no decode/re-encode drift), and boxes map onto the patch grid
through the processor's real resize and centre crop (``box_mapping="squash"`` reproduces the original mapping).

Example:
    >>> from vle.testing import tiny_processor
    >>> ann = {"objects": ["person", "car"], "question": ["is", [0], "left", "of", [1], "?"],
    ...        "answer_choices": [["yes"], ["no"], ["maybe"], [[1]]], "answer_label": 0,
    ...        "rationale_choices": [["because"], ["no"], ["a"], ["the"]], "rationale_label": 0}
    >>> meta = {"boxes": [[0, 0, 10, 10, 1.0], [20, 20, 31, 31, 1.0]], "width": 32, "height": 32}
    >>> batch = build_vcr_inputs(tiny_processor(), ann, np.zeros((32, 32, 3), np.uint8), meta, patch_size=8)
    >>> tuple(batch["input_ids"].shape), batch["extend_token_type_ids"][0][0][0]
    ((1, 4, 80), [2, 3])
"""

from __future__ import annotations

import math
import numbers
import unicodedata

import numpy as np  # noqa: F401  (used by the docstring example)
import torch
from transformers import BatchFeature

from .errors import InputError, check_int
from .image_utils import crop_geometry, load_image

TASKS = ("q2a", "qa2r")
BOX_MAPPINGS = ("crop", "squash")

PERSON_NAMES = ("Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody", "Kendall",
                "Payton", "Skyler", "Frankie", "Pat", "Quinn")


def object_names(objects: list[str]) -> list[str]:
    """Class names to the words used in text: each ``person`` gets the next gender-neutral name (per example)."""
    names, people = [], 0
    for name in objects:
        if name == "person":
            names.append(PERSON_NAMES[people % len(PERSON_NAMES)])
            people += 1
        else:
            names.append(name)
    return names


def tag_pieces(tokens: list, names: list[str], tokenizer) -> tuple[list[int], list[int]]:
    """A VCR token list → (piece ids, tags): tag = object index for pieces naming an object, else -1."""
    ids, tags = [], []
    and_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("and")[:1])[0]

    def add(text: str, tag: int) -> None:
        piece_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        ids.extend(piece_ids)
        tags.extend([tag] * len(piece_ids))

    for token in tokens:
        if isinstance(token, (list, tuple)):
            for position, index in enumerate(token):
                if not 0 <= int(index) < len(names):
                    raise InputError(f"object tag {index} is out of range: the annotation lists {len(names)} objects")
                if position:
                    ids.append(and_id)
                    tags.append(-1)
                add(names[int(index)], int(index))
        elif isinstance(token, str):
            if any(unicodedata.category(ch) == "Co" for ch in token):
                continue  # private-use glyphs carry no text
            add(token, -1)
        else:
            raise TypeError(f"VCR tokens are words or lists of object indices, got {type(token).__name__}")
    return ids, tags


def _truncate(segments: list[list], budget: int, task: str) -> list[list]:
    """Drop pieces from the end of the longest segment(s) until they fit (the original rule, on copies)."""
    segments = [list(segment) for segment in segments]
    while sum(len(s[0]) for s in segments) > budget:
        if task == "q2a":
            question, answer = segments
            victim = question if len(question[0]) > len(answer[0]) else answer
        else:
            question, answer, rationale = segments
            if len(rationale[0]) > len(question[0]) + len(answer[0]):
                victim = rationale
            elif len(question[0]) > 1:
                victim = question
            else:
                victim = answer
        victim[0], victim[1] = victim[0][:-1], victim[1][:-1]
    return segments


def box_to_patches(box, width: int, height: int, image_size: int, patch_size: int, mapping: str = "crop") -> list[int]:
    """Row-major patch ids covered by a pixel box [x1, y1, x2, y2(, score)] of the original image.

    ``crop``: through the processor's resize and centre crop (what the model sees). ``squash``: the original's mapping,
    which spreads the whole image over the grid.
    """
    grid = image_size // patch_size
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InputError(f"box {list(box[:4])} must hold four finite pixel coordinates")
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"box {list(box[:4])} is empty (x2 <= x1 or y2 <= y1)")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InputError(f"box {list(box[:4])} lies outside the {width}x{height} image")
    if mapping == "squash":
        pw, ph = width / grid, height / grid
        cols = (max(0, math.floor(x1 / pw)), min(grid, math.floor(x2 / pw) + 1))
        rows = (max(0, math.floor(y1 / ph)), min(grid, math.floor(y2 / ph) + 1))
    elif mapping == "crop":
        scale, left, top = crop_geometry(width, height, image_size)
        cx1, cx2 = (x1 * scale - left) / patch_size, (x2 * scale - left) / patch_size
        cy1, cy2 = (y1 * scale - top) / patch_size, (y2 * scale - top) / patch_size
        cols = _span(cx1, cx2, grid)
        rows = _span(cy1, cy2, grid)
    else:
        raise InputError(f"box_mapping must be 'crop' or 'squash', got {mapping!r}")
    return [row * grid + col for row in range(*rows) for col in range(*cols)]


def _span(start: float, stop: float, grid: int) -> tuple[int, int]:
    """Patches a [start, stop) interval (in patch units) touches, clamped to the grid and never empty (a box cut
    away by the centre crop keeps its nearest patch)."""
    first = min(max(0, math.floor(start)), grid - 1)
    last = max(min(grid, math.ceil(stop)), first + 1)
    return first, last



def check_annotation(annotation, task: str = "q2a", source: str = "the annotation") -> None:
    """A VCR annotation's schema: ``objects`` (class names), ``question`` and the choices as token lists (words and
    lists of object indices within ``objects``), labels within the choices. Errors name the field and ``source``."""
    if task not in TASKS:
        raise InputError(f"the VCR task must be one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(annotation, dict):
        raise InputError(f"{source} must be a JSON object with objects, question and answer_choices; got "
                         f"{type(annotation).__name__}")
    needed = ("objects", "question", "answer_choices") + (("answer_label", "rationale_choices") if task == "qa2r"
                                                          else ())
    missing = [key for key in needed if key not in annotation]
    if missing:
        raise InputError(f"{source} lacks {', '.join(missing)}: a VCR {task.upper()} item needs {', '.join(needed)}")
    objects = annotation["objects"]
    if not isinstance(objects, list) or not all(isinstance(name, str) and name.strip() for name in objects):
        raise InputError(f"{source}: objects must be a list of class names (strings), got {str(objects)[:80]}")
    _check_tokens(annotation["question"], len(objects), f"{source}: question")
    for key, label in (("answer_choices", "answer_label"), ("rationale_choices", "rationale_label")):
        if key not in annotation:
            continue
        choices = annotation[key]
        if not isinstance(choices, list) or len(choices) < 2:
            raise InputError(f"{source}: {key} must be a list of at least two choices (token lists), got "
                             f"{str(choices)[:80]}")
        for index, choice in enumerate(choices):
            _check_tokens(choice, len(objects), f"{source}: {key}[{index}]")
        if annotation.get(label) is not None:
            value = annotation[label]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < len(choices):
                raise InputError(f"{source}: {label} must be a choice index from 0 to {len(choices) - 1}, got "
                                 f"{value!r}")


def _check_tokens(tokens, n_objects: int, where: str) -> None:
    if not isinstance(tokens, list) or not tokens:
        raise InputError(f"{where} must be a non-empty list of words and object tags, got {str(tokens)[:80]}")
    for token in tokens:
        if isinstance(token, str):
            continue
        if not isinstance(token, list) or not token:
            raise InputError(f"{where}: a token is a word or a non-empty list of object indices, got {token!r}")
        for index in token:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral):
                raise InputError(f"{where}: object tags are whole numbers, got {index!r}")
            if not 0 <= index < n_objects:
                raise InputError(f"{where}: object tag {index} is out of range: the annotation lists {n_objects} "
                                 "objects (tags count from 0)")


def check_metadata(metadata, width: int, height: int, n_objects: int, source: str = "the metadata") -> list:
    """A VCR metadata record: ``boxes`` of four finite pixel coordinates (and an optional score), one per object at
    least, and a ``width`` / ``height`` that match the image's. Returns the boxes."""
    if not isinstance(metadata, dict):
        raise InputError(f"{source} must be a JSON object with boxes, width and height; got "
                         f"{type(metadata).__name__}")
    if "boxes" not in metadata:
        raise InputError(f"{source} lacks boxes: a VCR metadata record gives one [x1, y1, x2, y2, score] per object")
    for key, actual in (("width", width), ("height", height)):
        if key in metadata:
            value = metadata[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value <= 0:
                raise InputError(f"{source}: {key} must be a positive number of pixels, got {value!r}")
    if int(metadata.get("width", width)) != width or int(metadata.get("height", height)) != height:
        raise InputError(f"{source} describes a {metadata.get('width', width)}x{metadata.get('height', height)} "
                         f"image but the image is {width}x{height}: its boxes would land on the wrong patches. Use the "
                         "image the metadata was written for (or scale the boxes and the size together)")
    boxes = metadata["boxes"]
    if not isinstance(boxes, list):
        raise InputError(f"{source}: boxes must be a list of [x1, y1, x2, y2(, score)], got {str(boxes)[:80]}")
    if len(boxes) < n_objects:
        raise InputError(f"{source} has {len(boxes)} boxes for {n_objects} objects: give one box per object")
    for index, box in enumerate(boxes[:n_objects]):
        where = f"{source}: boxes[{index}]"
        if not isinstance(box, (list, tuple)) or len(box) < 4:
            raise InputError(f"{where} must be [x1, y1, x2, y2(, score)], got {box!r}")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in box[:4]):
            raise InputError(f"{where} must hold four finite pixel coordinates, got {list(box[:4])}")
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        if x2 <= x1 or y2 <= y1:
            raise InputError(f"{where} {list(box[:4])} is empty (x2 <= x1 or y2 <= y1)")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise InputError(f"{where} {list(box[:4])} lies outside the {width}x{height} image")
    return boxes


def _one_example(processor, annotation: dict, image, metadata: dict, task: str, max_length: int, box_mapping: str,
                 patch_size: int):
    check_annotation(annotation, task)
    if box_mapping not in BOX_MAPPINGS:
        raise InputError(f"box_mapping must be 'crop' or 'squash', got {box_mapping!r}")
    boxes = check_metadata(metadata, image.width, image.height, len(annotation["objects"]))
    tokenizer = processor.tokenizer
    names = object_names(list(annotation["objects"]))
    question = tag_pieces(annotation["question"], names, tokenizer)
    if task == "q2a":
        choices = annotation["answer_choices"]
        prefix = [question]
    else:
        choices = annotation["rationale_choices"]
        prefix = [question, tag_pieces(annotation["answer_choices"][annotation["answer_label"]], names, tokenizer)]
    width, height = image.width, image.height
    budget = max_length - len(prefix) - 2  # [CLS], one [SEP] per segment
    rows = []
    for choice in choices:
        segments = _truncate(prefix + [tag_pieces(choice, names, tokenizer)], budget, task)
        ids, tags = [tokenizer.cls_token_id], [-1]
        for piece_ids, piece_tags in segments:
            ids += piece_ids + [tokenizer.sep_token_id]
            tags += piece_tags + [-1]
        related = sorted({tag for tag in tags if tag >= 0})
        type_of = {obj: k + 2 for k, obj in enumerate(related)}
        text_types = [type_of.get(tag, 0) for tag in tags]
        patches = [box_to_patches(boxes[obj], width, height, processor.image_size, patch_size, box_mapping)
                   for obj in related]
        rows.append((ids, text_types, patches, [type_of[obj] for obj in related]))
    return rows


def build_vcr_inputs(processor, annotations, images, metadatas, task: str = "q2a", max_length: int = 80,
                     box_mapping: str = "crop", patch_size: int = 16, pixel_values=None) -> BatchFeature:
    """One or a list of VCR examples → ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (batch, choices,
    max_length), ``pixel_values`` (batch, 3, S, S), ``patch_ids`` [batch][choice][box][patch],
    ``extend_token_type_ids`` [batch][choice] of (image-added types, text types), and ``labels`` (batch,) when the
    annotations carry them. ``pixel_values`` already computed for these images skips the image processor."""
    single = isinstance(annotations, dict)
    annotations, images, metadatas = ([annotations], [images], [metadatas]) if single else (annotations, images,
                                                                                           metadatas)
    if not isinstance(annotations, (list, tuple)) or not isinstance(images, (list, tuple)) or \
            not isinstance(metadatas, (list, tuple)):
        raise InputError("give one annotation, image and metadata, or three lists of them")
    if not len(annotations) == len(images) == len(metadatas) or not annotations:
        raise InputError(f"{len(annotations)} annotations, {len(images)} images and {len(metadatas)} metadata records: "
                         "give one of each per example")
    max_length = check_int(max_length, "max_length", low=8, high=processor.max_text_length)
    pil_images = [load_image(image) for image in images]
    examples = []
    for index, (annotation, image, metadata) in enumerate(zip(annotations, pil_images, metadatas)):
        try:
            examples.append(_one_example(processor, annotation, image, metadata, task, max_length, box_mapping,
                                         patch_size))
        except InputError as error:
            raise InputError(f"VCR example {index}: {error}" if not single else str(error)) from None
    choices = {len(rows) for rows in examples}
    if len(choices) != 1:
        raise InputError(f"every example needs the same number of choices, got {sorted(choices)}")
    batch, count = len(examples), choices.pop()
    input_ids = torch.full((batch, count, max_length), processor.tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for b, rows in enumerate(examples):
        for c, (ids, *_rest) in enumerate(rows):
            input_ids[b, c, :len(ids)] = torch.tensor(ids)
            attention_mask[b, c, :len(ids)] = 1
    data = {
        "input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": processor.preprocess_images(pil_images) if pixel_values is None else pixel_values,
        "patch_ids": [[rows[c][2] for c in range(count)] for rows in examples],
        "extend_token_type_ids": [[(rows[c][3], rows[c][1]) for c in range(count)] for rows in examples],
    }
    label_key = "answer_label" if task == "q2a" else "rationale_label"
    if all(label_key in a for a in annotations):
        data["labels"] = torch.tensor([int(a[label_key]) for a in annotations])
    return BatchFeature(data)


__all__ = ["PERSON_NAMES", "box_to_patches", "build_vcr_inputs", "object_names", "tag_pieces"]
