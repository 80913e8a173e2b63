"""Data sources for batch runs: each yields ``Example`` records (an image, a text, the truth and slice fields), from the
shapes world's held-out split, VQA v2 and VCR files as distributed, a plain JSONL / CSV table, or a Hugging Face
``datasets`` dataset. Nothing is read until iterated; a bad record becomes an ``Example`` with ``problem`` set, so a
long run counts and skips it instead of stopping.

>>> examples = list(shapes_source(1_000_003, 2).examples())
>>> examples[0].kind, examples[0].slices["family"] in VQA_FAMILIES, examples[0].truth is not None
('vqa', True, True)
>>> vqa_accuracy("Two", ["2", "two", "2", "3", "2", "2", "two", "2", "2", "1"])
1.0
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from .errors import InputError, read_json
from .shapes import VQA_FAMILIES, make_scene, make_vqa, object_patches, patch_coverage
from .shapes.data import HELD_OUT_SEED
from .shapes.tasks_vcr import draw_vcr
from .vcr import TASKS, check_annotation

KINDS = ("vqa", "vcr")


@dataclass
class Source:
    """A dataset: its ``kind`` (vqa or vcr: which head can serve it; ``task``: a VCR task), a ``fingerprint`` that
    changes when the data does (a run records it), ``examples()``, and the number of examples (``count``: a number,
    a function that counts without reading images, or None). ``image_refs`` says how an example's ``ref`` finds its
    image again (``path``, ``shapes``, or ``hf:<folder>``)."""

    name: str
    kind: str
    fingerprint: str
    examples: object  # () -> Iterator[Example]
    count: object = None  # int | (() -> int) | None
    task: str | None = None
    image_refs: str = "path"

    def total(self) -> int | None:
        return self.count() if callable(self.count) else self.count

    def first(self, n: int) -> "Source":
        """The same data, only its first ``n`` examples."""
        if n < 1:
            raise InputError(f"the number of examples must be at least 1, got {n}")
        return replace(self, name=f"{self.name}, first {n}", fingerprint=f"{self.fingerprint}:first{n}",
                       examples=lambda: itertools.islice(self.examples(), n),
                       count=lambda: min(n, self.total()) if self.total() is not None else None)


@dataclass
class Example:
    """One item of a dataset. ``image``: a path, PIL image or array (read by the one loader when run); ``text``: the
    question (VQA) or a readable form of it (VCR); ``truth``: the answer (a string), the human answers (VQA v2: a list)
    or the right choice (VCR: an int), None when unknown; ``slices``: fields to group and filter by; ``evidence``
    (patch grid) bool and ``coverage`` float maps where the evidence is known; ``annotation`` / ``metadata``: a VCR
    item; ``problem``: why the example cannot be run (it is then counted and skipped)."""

    id: str
    kind: str
    image: object
    text: str
    truth: object = None
    slices: dict = field(default_factory=dict)
    evidence: np.ndarray | None = None
    coverage: np.ndarray | None = None
    annotation: dict | None = None
    metadata: dict | None = None
    problem: str | None = None
    ref: str = ""  # where the image can be found again: a path, shapes:<seed>, hf:<row>


# -- the shapes world -------------------------------------------------------------------------------------------

def shapes_source(seed: int, n: int, kind: str = "vqa", patch_size: int = 16, task: str = "q2a") -> Source:
    """Held-out shapes scenes ``seed .. seed + n - 1``: every VQA family that applies to each scene (with its
    evidence masks), or one VCR item per scene (``task``: its Q2A or QA2R truth)."""
    if task not in TASKS:
        raise InputError(f"the VCR task must be one of {', '.join(TASKS)}, got {task!r}")
    if seed < HELD_OUT_SEED:
        raise InputError(f"held-out scenes start at seed {HELD_OUT_SEED}; seed {seed} was used for training")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    name = f"shapes world, scenes {seed}..{seed + n - 1}" + (f", VCR {task.upper()}" if kind == "vcr" else "")
    return Source(name, kind, f"shapes:{seed}:{n}:{kind}:{patch_size}" + (f":{task}" if kind == "vcr" else ""),
                  lambda: _shapes_examples(seed, n, kind, patch_size, task),
                  n if kind == "vcr" else lambda: _count_shapes_vqa(seed, n), task if kind == "vcr" else None,
                  "shapes")


def _count_shapes_vqa(seed: int, n: int) -> int:
    """How many questions scenes ``seed .. seed + n - 1`` have (from their layouts: no pixels drawn)."""
    return sum(make_vqa(scene, np.random.default_rng([s, 0]), family=family) is not None
               for s in range(seed, seed + n) for scene in [make_scene(s)] for family in VQA_FAMILIES)


def _shapes_examples(seed: int, n: int, kind: str, patch_size: int, task: str = "q2a") -> Iterator[Example]:
    for offset in range(n):
        scene = make_scene(seed + offset)
        image, ref = (lambda scene=scene: scene.image), f"shapes:{seed + offset}"  # drawn when a process runs it
        if kind == "vcr":
            annotation, metadata = draw_vcr(scene, np.random.default_rng([seed + offset, 4]), f"{seed + offset}.png")
            yield Example(f"shapes-{seed + offset}-vcr", "vcr", image, vcr_text(annotation),
                          annotation.get("answer_label" if task == "q2a" else "rationale_label"),
                          {"family": annotation.get("question_family", "")},
                          annotation=annotation, metadata=metadata, ref=ref)
            continue
        rng = np.random.default_rng([seed + offset, 0])
        for family in VQA_FAMILIES:
            example = make_vqa(scene, rng, family=family)
            if example is None:
                continue
            evidence = np.zeros((scene.image_size // patch_size,) * 2, dtype=bool)
            union = np.zeros((scene.image_size, scene.image_size), dtype=bool)
            for index in example.evidence:
                evidence |= object_patches(scene, index, patch_size)
                union |= scene.objects[index].mask
            yield Example(f"shapes-{seed + offset}-{family}", "vqa", image, example.question, example.answer,
                          {"family": family, "relational": example.relational, "objects": len(scene.objects)},
                          evidence=evidence if example.evidence else None,
                          coverage=patch_coverage(union, patch_size) if example.evidence else None, ref=ref)


# -- VQA v2 -----------------------------------------------------------------------------------------------------

def vqa2_source(questions: str, annotations: str | None, images: str) -> Source:
    """VQA v2 as distributed: the questions JSON, the annotations JSON (ten human answers, ``question_type``,
    ``answer_type``; optional, for test splits) and the image folder (``COCO_<split>_<12-digit id>.jpg``)."""
    questions_data = read_json(questions, "VQA v2 questions")
    if not isinstance(questions_data, dict) or not isinstance(questions_data.get("questions"), list):
        raise InputError(f"{questions} is not a VQA v2 questions file: it needs a 'questions' list")
    if not os.path.isdir(images):
        raise InputError(f"the image folder {images} does not exist")
    files = [questions] + ([annotations] if annotations else [])
    return Source(f"VQA v2 {os.path.basename(questions)}", "vqa", "vqa2:" + file_digest(*files),
                  lambda: _vqa2_examples(questions, annotations, images), len(questions_data["questions"]))


def _vqa2_examples(questions: str, annotations: str | None, images: str) -> Iterator[Example]:
    questions_data = read_json(questions, "VQA v2 questions")
    split = str(questions_data.get("data_subtype", ""))
    by_question, by_image_id = {}, None
    if annotations:
        annotation_data = read_json(annotations, "VQA v2 annotations")
        if not isinstance(annotation_data, dict) or not isinstance(annotation_data.get("annotations"), list):
            raise InputError(f"{annotations} is not a VQA v2 annotations file: it needs an 'annotations' list")
        by_question = {a.get("question_id"): a for a in annotation_data["annotations"] if isinstance(a, dict)}
    for index, record in enumerate(questions_data["questions"]):
        if not isinstance(record, dict) or "question_id" not in record:
            yield Example(f"vqa2-?-{index}", "vqa", None, "", problem=f"question record {index} has no question_id")
            continue
        qid, image_id = record["question_id"], record.get("image_id")
        example = Example(f"vqa2-{qid}", "vqa", None, str(record.get("question", "")))
        if not isinstance(image_id, int) or not example.text.strip():
            example.problem = "the question record lacks image_id or question"
            yield example
            continue
        example.image = os.path.join(images, f"COCO_{split or 'unknown'}_{image_id:012d}.jpg")
        if not os.path.isfile(example.image):  # test-dev2015's images are test2015's; listed once, not per question
            by_image_id = _images_by_id(images) if by_image_id is None else by_image_id
            example.image = by_image_id.get(image_id, example.image)
        annotation = by_question.get(qid)
        if annotation is not None:
            answers = [a.get("answer", "") for a in annotation.get("answers", []) if isinstance(a, dict)]
            example.truth = answers or None
            example.slices = {"question_type": str(annotation.get("question_type", "")),
                              "answer_type": str(annotation.get("answer_type", ""))}
        yield example


def _images_by_id(folder: str) -> dict[int, str]:
    """The folder's COCO images (``COCO_<split>_<12-digit id>.jpg``) by id."""
    found = (re.fullmatch(r"COCO_.*_(\d{12})\.jpg", name) for name in sorted(os.listdir(folder)))
    return {int(match[1]): os.path.join(folder, match[0]) for match in found if match}


# The official VQA evaluation's answer normalisation: lower case, punctuation, number words, articles, contractions
# (the common ones of its list; it has no "its" or "im": those stay as they are).
_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                 "wont": "won't", "couldnt": "couldn't", "wouldnt": "wouldn't", "shouldnt": "shouldn't",
                 "whats": "what's", "thats": "that's", "youre": "you're", "theyre": "they're", "hes": "he's",
                 "shes": "she's", "didnt": "didn't", "wasnt": "wasn't", "werent": "weren't", "hasnt": "hasn't",
                 "havent": "haven't", "theres": "there's", "wheres": "where's", "whos": "who's", "oclock": "o'clock"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!]")  # the official list: "3:00" and "50%" stay


def normalize_answer(answer: str) -> str:
    text = str(answer).lower().replace("\n", " ").replace("\t", " ").strip()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,000 → 1000
    text = _PUNCTUATION.sub(" ", text)
    text = re.sub(r"\.(?!\d)", "", text)  # a period not followed by a digit: "2." → "2", "3.5" stays
    words = [_NUMBERS.get(word, word) for word in text.split() if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA v2 accuracy: min(1, humans who gave the normalised prediction / 3) (of ten humans, 3 agreeing give 1). The
    official script also averages this over the ten sets of nine humans (3 agreeing then give 0.9); the plain form is
    the one the VQA paper states and the one runs store. A single answer is matched exactly (after normalisation)."""
    predicted = normalize_answer(prediction)
    matches = sum(normalize_answer(answer) == predicted for answer in answers)
    return float(matches > 0) if len(answers) < 2 else min(1.0, matches / 3.0)


# -- VCR --------------------------------------------------------------------------------------------------------

def vcr_source(annotations: str, images: str, task: str = "q2a") -> Source:
    """VCR as distributed: ``val.jsonl`` (one annotation per line) and the image folder, where each image
    (``img_fn``) has its metadata JSON beside it (``metadata_fn``)."""
    if task not in TASKS:
        raise InputError(f"the VCR task must be one of {', '.join(TASKS)}, got {task!r}")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"VCR annotations not found: {annotations}")
    if not os.path.isdir(images):
        raise InputError(f"the image folder {images} does not exist")
    return Source(f"VCR {os.path.basename(annotations)} ({task})", "vcr", f"vcr:{task}:" + file_digest(annotations),
                  lambda: _vcr_examples(annotations, images, task), task=task)


def _vcr_examples(annotations: str, images: str, task: str) -> Iterator[Example]:
    with open(annotations, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            example = Example(f"vcr-{number}", "vcr", None, "")
            try:
                annotation = json.loads(line)
                example.id = f"vcr-{annotation.get('annot_id', number)}"
                example.image = os.path.join(images, annotation["img_fn"])
                metadata_path = os.path.join(images, annotation.get("metadata_fn") or
                                             os.path.splitext(annotation["img_fn"])[0] + ".json")
                example.metadata = read_json(metadata_path, "VCR metadata")
                check_annotation(annotation, task, f"line {number} of {annotations}")
                example.annotation = annotation
                example.text = vcr_text(annotation)
                example.truth = annotation.get("answer_label" if task == "q2a" else "rationale_label")
                example.slices = {"task": task, "question_type": str(annotation.get("question_family", "") or
                                                                     _first_word(annotation.get("question")))}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
                example.problem = f"line {number} of {annotations} is not a VCR annotation ({error})"
            except (InputError, FileNotFoundError) as error:
                example.problem = str(error)
            yield example


def vcr_text(annotation: dict) -> str:
    """A VCR question as readable text (object tags as their indices)."""
    tokens = annotation.get("question", [])
    return " ".join(str(t) if isinstance(t, str) else "[" + ",".join(map(str, t)) + "]" for t in tokens)


def _first_word(tokens) -> str:
    return str(tokens[0]).lower() if isinstance(tokens, list) and tokens and isinstance(tokens[0], str) else ""


# -- plain tables -----------------------------------------------------------------------------------------------

def table_source(path: str, images: str | None = None) -> Source:
    """A JSONL or CSV file with ``image`` (a path, relative to ``images`` or to the file's folder), ``question`` and
    an optional ``answer``; any other column becomes a slice field."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    return Source(f"table {os.path.basename(path)}", "vqa", "table:" + file_digest(path),
                  lambda: _table_examples(path, images))


def _table_examples(path: str, images: str | None) -> Iterator[Example]:
    folder = images or os.path.dirname(os.path.abspath(path))
    if path.lower().endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if path.lower().endswith(".tsv") else ",")
            # the reader's line number, not a count of rows: blank lines and quoted line breaks move it on
            records = [(reader.line_num, row) for row in reader]
    else:
        records = _jsonl(path)
    for number, record in records:
        yield _table_example(record, number, path, folder)


def _jsonl(path: str):
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    yield number, f"not JSON ({error.msg})"


def _table_example(record, number: int, path: str, folder: str) -> Example:
    if not isinstance(record, dict):
        return Example(f"row-{number}", "vqa", None, "", problem=f"line {number} of {path}: {record}")
    if None in record:  # csv.DictReader's key for fields beyond the header
        return Example(f"row-{number}", "vqa", None, "", problem=f"line {number} of {path} has more fields than the "
                       "header")
    missing = [key for key in ("image", "question") if not str(record.get(key) or "").strip()]
    if missing:
        return Example(str(record.get("id") or f"row-{number}"), "vqa", None, "",
                       problem=f"line {number} of {path} lacks {', '.join(missing)}")
    image = str(record["image"])
    slices = {k: v for k, v in record.items() if k not in ("id", "image", "question", "answer")}
    return Example(str(record.get("id") or f"row-{number}"), "vqa",
                   image if os.path.isabs(image) else os.path.join(folder, image), str(record["question"]),
                   _truth(record.get("answer")), slices)


def _truth(answer):
    """An answer as text (a number is an answer too), a list of them as texts, None when empty."""
    if answer is None or answer == "" or answer == []:
        return None
    return [str(a) for a in answer] if isinstance(answer, list) else str(answer)


# -- Hugging Face datasets --------------------------------------------------------------------------------------

def hf_source(dataset, image_column: str = "image", question_column: str = "question",
              answer_column: str | None = "answer", split: str | None = None) -> Source:
    """A ``datasets.Dataset`` (or a ``DatasetDict`` with ``split``), or a folder saved with ``save_to_disk``.
    Images may be PIL images (an ``Image`` feature) or paths; other scalar columns become slice fields."""
    import datasets  # the ecosystem's loader; imported here only for this source (heavy: pandas, pyarrow)

    folder = os.path.abspath(dataset) if isinstance(dataset, (str, os.PathLike)) else ""
    if isinstance(dataset, (str, os.PathLike)):
        if not os.path.isdir(dataset):
            raise InputError(f"{dataset} is not a dataset folder (datasets' save_to_disk writes one)")
        dataset = datasets.load_from_disk(os.fspath(dataset))
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise InputError(f"the dataset has splits {', '.join(dataset)}: name one (--split)" if split is None else
                             f"the dataset has no split {split}; its splits: {', '.join(dataset)}")
        dataset = dataset[split]
    missing = [c for c in (image_column, question_column) if c not in dataset.column_names]
    if missing:
        raise InputError(f"the dataset has no column {', '.join(missing)}; its columns: "
                         f"{', '.join(dataset.column_names)}")
    fingerprint = "hf:" + str(getattr(dataset, "_fingerprint", "") or len(dataset))
    return Source(f"datasets {getattr(dataset, 'info', None) and dataset.info.dataset_name or 'dataset'}", "vqa",
                  fingerprint, lambda: _hf_examples(dataset, image_column, question_column, answer_column),
                  len(dataset), image_refs=f"hf:{image_column}:{folder}")


def _hf_examples(dataset, image_column: str, question_column: str, answer_column: str | None) -> Iterator[Example]:
    extra = [c for c in dataset.column_names if c not in (image_column, question_column, answer_column, "id")]
    for index, row in enumerate(dataset):
        slices = {c: row[c] for c in extra if isinstance(row[c], (str, int, float, bool))}
        question = str(row[question_column] or "")
        problem = (f"row {index} has no image" if row[image_column] is None else
                   None if question.strip() else f"row {index} has no question")
        image = row[image_column]  # a path (found again by itself) or an image (found again as its row)
        yield Example(str(row.get("id", index)), "vqa", image, question,
                      _truth(row.get(answer_column)) if answer_column else None, slices, problem=problem,
                      ref="" if isinstance(image, str) else f"hf:{index}")


def file_digest(*paths: str) -> str:
    """A short digest of files' contents (a run's data fingerprint)."""
    digest = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
