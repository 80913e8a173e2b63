"""Data sources on fixtures in each distributed format, built from held-out shapes-world scenes (nothing downloaded):
VQA v2 questions / annotations JSON with COCO-named images (ids, texts, truth, slices, image paths, fingerprints, bad
records), the official VQA answer normalisation and accuracy, VCR ``val.jsonl`` with per-image metadata JSON (Q2A and
QA2R truth, bad lines), JSONL and CSV tables, Hugging Face ``datasets`` (in memory, with splits, saved to disk), and
the shapes world's own held-out source (families, evidence on the patch grid, VCR items, the training-seed guard)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from vle.data import (hf_source, normalize_answer, shapes_source, table_source, vcr_source, vcr_text, vqa2_source,
                      vqa_accuracy)
from vle.errors import InputError
from vle.shapes import ANSWERS, VQA_FAMILIES, make_scene, make_vqa
from vle.shapes.data import HELD_OUT_SEED
from vle.shapes.tasks_vcr import draw_vcr

SEEDS = [HELD_OUT_SEED + offset for offset in range(3)]


def run(source):
    return list(source.examples())


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return str(path)


def answer_type(answer):
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"


# -- VQA v2 -----------------------------------------------------------------------------------------------------

def vqa2_files(root, subtype="val2014", image_subtype=None):
    """Questions and annotations JSON as distributed, and COCO-named JPEGs of the scenes: one question per scene
    (question_id = image_id * 1000 + k as in VQA v2) whose ten human answers are 7 right and 3 others."""
    images = root / "images"
    images.mkdir(parents=True)
    questions, annotations = [], []
    for seed in SEEDS:
        scene = make_scene(seed)
        scene.image.save(images / f"COCO_{image_subtype or subtype}_{seed:012d}.jpg", quality=95)
        example = make_vqa(scene, np.random.default_rng(seed))
        qid = seed * 1000
        questions.append({"image_id": seed, "question": example.question, "question_id": qid})
        answers = [example.answer] * 7 + ["blue", "no", "2"]
        annotations.append({"question_id": qid, "image_id": seed, "answer_type": answer_type(example.answer),
                            "question_type": " ".join(example.question.split()[:2]),
                            "multiple_choice_answer": example.answer,
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                        for i, a in enumerate(answers)]})
    questions += [{"image_id": SEEDS[0] + 99, "question": "what is missing ?", "question_id": 7},  # no image file
                  {"question": "whose image ?", "question_id": 8}, {"image_id": SEEDS[0], "question_id": 9},
                  {"image_id": SEEDS[0], "question": "which id ?"}, {"image_id": SEEDS[0], "question": "and which ?"},
                  {"image_id": SEEDS[0], "question": " ", "question_id": 10}]
    info = {"description": "shapes-world fixture", "version": "2.0", "year": 2017}
    q = write_json(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
                   {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                    "data_subtype": subtype, "questions": questions})
    a = write_json(root / f"v2_mscoco_{subtype}_annotations.json",
                   {"info": info, "license": {}, "data_subtype": subtype, "annotations": annotations})
    return q, a, str(images)


def test_vqa2_as_distributed(tmp_path):
    questions, annotations, images = vqa2_files(tmp_path)
    source = vqa2_source(questions, annotations, images)
    assert (source.kind, source.count) == ("vqa", 9)
    examples = run(source)
    good = examples[:3]
    assert [e.id for e in good] == [f"vqa2-{seed * 1000}" for seed in SEEDS]
    for seed, example in zip(SEEDS, good, strict=True):
        truth = make_vqa(make_scene(seed), np.random.default_rng(seed))
        assert example.problem is None and example.kind == "vqa"
        assert example.text == truth.question and example.truth == [truth.answer] * 7 + ["blue", "no", "2"]
        assert example.slices == {"question_type": " ".join(truth.question.split()[:2]),
                                  "answer_type": answer_type(truth.answer)}
        assert os.path.isfile(example.image) and example.image.endswith(f"COCO_val2014_{seed:012d}.jpg")
    missing = examples[3]
    assert missing.problem is None and not os.path.exists(missing.image)  # the runner skips it
    assert [e.problem is not None for e in examples[4:]] == [True] * 5
    assert "image_id or question" in examples[4].problem and "question_id" in examples[6].problem
    assert "image_id or question" in examples[8].problem
    assert len({e.id for e in examples}) == len(examples)


def test_vqa2_without_annotations_and_fingerprint(tmp_path):
    questions, annotations, images = vqa2_files(tmp_path)
    unlabelled = run(vqa2_source(questions, None, images))[:3]
    assert all(e.truth is None and e.slices == {} and os.path.isfile(e.image) for e in unlabelled)
    before = vqa2_source(questions, annotations, images).fingerprint
    assert vqa2_source(questions, annotations, images).fingerprint == before
    data = json.loads(Path(annotations).read_text())
    data["annotations"][0]["answers"][0]["answer"] = "purple"
    write_json(tmp_path / os.path.basename(annotations), data)
    assert vqa2_source(questions, annotations, images).fingerprint != before
    assert vqa2_source(questions, None, images).fingerprint != before


def test_vqa2_test_dev_images_are_test2015(tmp_path):
    # test-dev questions say data_subtype test-dev2015; their images are named COCO_test2015_...
    questions, _, images = vqa2_files(tmp_path, "test-dev2015", image_subtype="test2015")
    examples = run(vqa2_source(questions, None, images))
    assert all(os.path.isfile(e.image) and "COCO_test2015_" in e.image for e in examples[:3])
    assert not os.path.exists(examples[3].image)
    data = json.loads(Path(questions).read_text())
    del data["data_subtype"]  # found by id alone
    examples = run(vqa2_source(write_json(tmp_path / "bare.json", data), None, images))
    assert all(os.path.isfile(e.image) for e in examples[:3]) and not os.path.exists(examples[3].image)


def test_vqa2_bad_files(tmp_path):
    questions, annotations, images = vqa2_files(tmp_path)
    with pytest.raises(InputError, match="questions"):
        vqa2_source(annotations, None, images)
    with pytest.raises(InputError, match="image folder"):
        vqa2_source(questions, annotations, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="annotations"):
        run(vqa2_source(questions, questions, images))


# -- VQA accuracy and answer normalisation (the official evaluation's rules) ----------------------------------------

@pytest.mark.parametrize("answer, normal", [
    ("Two", "2"), ("none", "0"), ("TEN", "10"), ("a dog", "dog"), ("The Red Ball.", "red ball"), ("an apple", "apple"),
    ("dont", "don't"), ("isnt", "isn't"), ("it's", "it's"), ("yes!", "yes"), ("yes.", "yes"), ("2.", "2"),
    ("3.5", "3.5"), ("1,000", "1000"), ("t-shirt", "t shirt"), ("red, white", "red white"), ("  Yes\n", "yes"),
    ("(left)", "left"), ("hot dog?", "hot dog"), ("3:00", "3:00"), ("50%", "50%"), ("its", "its")])
def test_normalize_answer(answer, normal):
    assert normalize_answer(answer) == normal


def test_vqa_accuracy_is_a_third_per_agreeing_human():
    # min(1, matching humans / 3), as the VQA paper states it
    for matches, expected in [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (4, 1.0), (10, 1.0)]:
        answers = ["two"] * matches + ["3"] * (10 - matches)
        assert vqa_accuracy("2", answers) == pytest.approx(expected)
    assert vqa_accuracy("A Dog.", ["dog"] * 10) == 1.0
    assert vqa_accuracy("dog", ["cat"] * 10) == 0.0
    assert vqa_accuracy("yes", []) == 0.0
    assert (vqa_accuracy("Yes", ["yes"]), vqa_accuracy("no", ["yes"])) == (1.0, 0.0)  # one answer: an exact match


# -- VCR --------------------------------------------------------------------------------------------------------

def vcr_files(root):
    """``val.jsonl`` as distributed (movie folders, metadata JSON beside each image) for three scenes, then bad lines:
    not JSON, no img_fn, metadata missing, no answer_choices."""
    images, lines, annotations = root / "vcr1images", [], []
    for index, seed in enumerate(SEEDS):
        scene = make_scene(seed)
        movie = f"lsmdc_{seed}_Shapes_World"
        img_fn = f"{movie}/{seed}_Shapes_World_00.00.0{index}.000-00.00.0{index}.500@0.jpg"
        annotation, metadata = draw_vcr(scene, np.random.default_rng([seed, 4]), img_fn)
        annotation.update(movie=movie, annot_id=f"val-{index}", img_id=f"val-{index}", question_number=index,
                          question_orig=vcr_text(annotation), answer_orig="", rationale_orig="",
                          answer_match_iter=[2, 0, 1, 3], answer_sources=[1, 2, 3, 4],
                          rationale_match_iter=[0, 1, 2, 3], rationale_sources=[5, 6, 7, 8], interesting_scores=[0, 1])
        x1, y1, x2, y2 = zip(*(o.box for o in scene.objects), strict=True)
        metadata["segms"] = [[[[a, b], [c, b], [c, d]]] for a, b, c, d in zip(x1, y1, x2, y2, strict=True)]
        (images / movie).mkdir(parents=True)
        scene.image.save(images / img_fn, quality=95)
        write_json(images / annotation["metadata_fn"], metadata)
        annotations.append(annotation)
        lines.append(json.dumps(annotation))
    no_image = {k: v for k, v in annotations[0].items() if k != "img_fn"}
    no_metadata = dict(annotations[1], annot_id="val-5", metadata_fn="lsmdc_gone/gone@0.json")
    no_answers = {k: v for k, v in annotations[2].items() if k != "answer_choices"} | {"annot_id": "val-6"}
    lines += ["", '{"movie": "broken', json.dumps(no_image), json.dumps(no_metadata), json.dumps(no_answers)]
    path = root / "val.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path), str(images), annotations


@pytest.mark.parametrize("task, label", [("q2a", "answer_label"), ("qa2r", "rationale_label")])
def test_vcr_as_distributed(tmp_path, task, label):
    path, images, annotations = vcr_files(tmp_path)
    source = vcr_source(path, images, task)
    assert source.kind == "vcr" and task in source.name
    examples = run(source)
    assert len(examples) == 7  # the blank line is no example
    for annotation, example in zip(annotations, examples[:3], strict=True):
        assert example.problem is None and example.id == f"vcr-{annotation['annot_id']}"
        assert example.truth == annotation[label] and example.annotation == annotation
        assert os.path.isfile(example.image) and example.image == os.path.join(images, annotation["img_fn"])
        assert len(example.metadata["boxes"]) == len(annotation["objects"]) and "segms" in example.metadata
        assert example.text == vcr_text(annotation) and "[" in example.text
        assert example.slices == {"task": task, "question_type": annotation["question_family"]}
    bad_json, no_image, no_metadata, no_answers = examples[3:]
    assert "line 5" in bad_json.problem and "not a VCR annotation" in bad_json.problem
    assert "img_fn" in no_image.problem
    assert "metadata" in no_metadata.problem and "gone@0.json" in no_metadata.problem
    assert "answer_choices" in no_answers.problem and no_answers.id == "vcr-val-6"


def test_vcr_bad_arguments_and_fingerprint(tmp_path):
    path, images, _ = vcr_files(tmp_path)
    with pytest.raises(InputError, match="q2a, qa2r"):
        vcr_source(path, images, "a2q")
    with pytest.raises(FileNotFoundError):
        vcr_source(str(tmp_path / "test.jsonl"), images)
    with pytest.raises(InputError, match="image folder"):
        vcr_source(path, str(tmp_path / "nowhere"))
    before = vcr_source(path, images).fingerprint
    assert vcr_source(path, images, "qa2r").fingerprint != before
    with open(path, "a") as handle:
        handle.write("\n")
    assert vcr_source(path, images).fingerprint != before


# -- JSONL and CSV tables ---------------------------------------------------------------------------------------

def scene_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        make_scene(seed).image.save(folder / f"{seed}.png")
    return [str(folder / f"{seed}.png") for seed in SEEDS]


def test_jsonl_table(tmp_path):
    paths = scene_files(tmp_path / "pics")
    rows = [{"id": "a", "image": f"pics/{SEEDS[0]}.png", "question": "what color is the circle ?", "answer": "red",
             "level": "easy"},
            {"image": paths[1], "question": "how many objects are there ?", "answer": 0, "level": "hard"},
            {"image": f"pics/{SEEDS[2]}.png", "question": "is there a square ?"}]
    lines = [json.dumps(row) for row in rows] + ["{broken", json.dumps({"image": "pics/x.png"}), "[1, 2]"]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = table_source(str(path))
    examples = run(source)
    assert [e.id for e in examples[:3]] == ["a", "row-2", "row-3"]
    assert [e.image for e in examples[:3]] == paths and all(os.path.isfile(e.image) for e in examples[:3])
    assert [e.truth for e in examples[:3]] == ["red", "0", None]  # a number is an answer too, as text
    assert [e.slices for e in examples[:3]] == [{"level": "easy"}, {"level": "hard"}, {}]
    assert examples[1].text == "how many objects are there ?" and examples[0].kind == source.kind == "vqa"
    assert [e.problem is not None for e in examples] == [False] * 3 + [True] * 3
    assert "line 4" in examples[3].problem and "not JSON" in examples[3].problem
    assert "lacks question" in examples[4].problem
    # relative images resolve against ``images`` when given
    moved = run(table_source(str(path), images=str(tmp_path / "elsewhere")))
    assert moved[0].image == os.path.join(tmp_path / "elsewhere", f"pics/{SEEDS[0]}.png") and moved[1].image == paths[1]
    before = source.fingerprint
    path.write_text("\n".join(lines[:2]) + "\n")
    assert table_source(str(path)).fingerprint != before
    with pytest.raises(FileNotFoundError):
        table_source(str(tmp_path / "none.jsonl"))


def test_csv_table(tmp_path):
    paths = scene_files(tmp_path / "pics")
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "question", "answer", "family"])
        writer.writerow([f"pics/{SEEDS[0]}.png", "what shape is the red object ?", "circle", "shape"])
        writer.writerow([paths[1], "is there a blue square ?", "", "exists"])
        writer.writerow([])
        writer.writerow(["", "no image ?", "yes", "exists"])
        writer.writerow([paths[2], "too many fields ?", "yes", "exists", "surplus"])
        writer.writerow([paths[2], "a question\nover two lines ?", "no", "exists"])
        writer.writerow([paths[2], "after the long one ?", "no", "exists"])
    examples = run(table_source(str(path)))
    assert [e.image for e in examples[:2]] == paths[:2] and [e.truth for e in examples[:2]] == ["circle", None]
    assert examples[0].slices == {"family": "shape"} and examples[0].text == "what shape is the red object ?"
    assert examples[2].problem == f"line 5 of {path} lacks image"  # the blank line 4 still counts
    assert "line 6" in examples[3].problem and "more fields" in examples[3].problem
    assert examples[4].problem is None and examples[4].text == "a question\nover two lines ?"
    assert examples[5].id == "row-9" and examples[5].problem is None
    tsv = tmp_path / "data.tsv"
    tsv.write_text(f"image\tquestion\nsub/{SEEDS[0]}.png\twhat ?\n")
    assert run(table_source(str(tsv)))[0].image == os.path.join(tmp_path, "sub", f"{SEEDS[0]}.png")


# -- Hugging Face datasets --------------------------------------------------------------------------------------

def hf_dataset():
    import datasets

    text, number = datasets.Value("string"), datasets.Value("int32")
    features = datasets.Features({"image": datasets.Image(), "question": text, "answer": text, "family": text,
                                  "objects": number, "evidence": datasets.Sequence(number)})
    rows = {key: [] for key in features}
    for seed in SEEDS:
        scene = make_scene(seed)
        example = make_vqa(scene, np.random.default_rng(seed))
        for key, value in zip(features, (scene.image, example.question, example.answer, example.family,
                                         len(scene.objects), list(example.evidence)), strict=True):
            rows[key].append(value)
    rows["question"][2], rows["answer"][1] = "", ""
    return datasets.Dataset.from_dict(rows, features=features)


def check_hf(examples):
    assert len(examples) == 3 and [e.id for e in examples] == ["0", "1", "2"]
    for seed, example in zip(SEEDS, examples, strict=True):
        scene = make_scene(seed)
        np.testing.assert_array_equal(np.asarray(example.image.convert("RGB")), scene.pixels)  # PNG: lossless
        assert example.slices == {"family": make_vqa(scene, np.random.default_rng(seed)).family,
                                  "objects": len(scene.objects)}  # the list column is no slice
    first = make_vqa(make_scene(SEEDS[0]), np.random.default_rng(SEEDS[0]))
    assert (examples[0].text, examples[0].truth, examples[0].problem) == (first.question, first.answer, None)
    assert examples[1].truth is None and examples[2].problem == "row 2 has no question"


def test_hf_dataset_in_memory_with_splits_and_on_disk(tmp_path):
    import datasets

    dataset = hf_dataset()
    source = hf_source(dataset)
    assert (source.kind, source.count) == ("vqa", 3)
    check_hf(run(source))
    splits = datasets.DatasetDict({"validation": dataset, "test": dataset.select([0])})
    with pytest.raises(InputError, match="validation, test"):
        hf_source(splits)
    with pytest.raises(InputError, match="train.*validation, test"):
        hf_source(splits, split="train")
    assert hf_source(splits, split="test").count == 1
    dataset.save_to_disk(str(tmp_path / "saved"))
    check_hf(run(hf_source(str(tmp_path / "saved"))))
    splits.save_to_disk(str(tmp_path / "splits"))
    assert hf_source(tmp_path / "splits", split="test").count == 1
    with pytest.raises(InputError, match="split"):
        hf_source(str(tmp_path / "splits"))
    with pytest.raises(InputError, match="dataset folder"):
        hf_source(str(tmp_path / "nowhere"))


def test_hf_columns(tmp_path):
    import datasets

    dataset = hf_dataset()
    with pytest.raises(InputError, match="no column img, query; its columns: image, question, answer"):
        hf_source(dataset, image_column="img", question_column="query")
    renamed = dataset.rename_columns({"image": "picture", "question": "prompt", "answer": "label"})
    examples = run(hf_source(renamed, "picture", "prompt", "label"))
    assert examples[0].truth == make_vqa(make_scene(SEEDS[0]), np.random.default_rng(SEEDS[0])).answer
    assert [e.truth for e in run(hf_source(dataset, answer_column=None))] == [None] * 3
    assert run(hf_source(dataset, answer_column=None))[0].slices.keys() == {"family", "objects", "answer"}
    paths = scene_files(tmp_path / "pics")
    by_path = datasets.Dataset.from_dict({"id": ["p0", "p1", "p2"], "image": [paths[0], None, paths[2]],
                                          "question": ["q0 ?", "q1 ?", "q2 ?"], "answer": ["0", None, "2"]})
    examples = run(hf_source(by_path))
    assert [e.id for e in examples] == ["p0", "p1", "p2"] and examples[0].image == paths[0]
    assert examples[1].problem == "row 1 has no image" and examples[2].truth == "2"


# -- the shapes world -------------------------------------------------------------------------------------------

def picture(example):
    return example.image() if callable(example.image) else example.image  # shapes scenes are drawn when run


def test_shapes_vqa_source():
    source = shapes_source(HELD_OUT_SEED, 2)
    examples = run(source)
    assert source.kind == "vqa" and source.total() == len(examples) and len({e.id for e in examples}) == len(examples)
    assert {e.slices["family"] for e in examples} <= set(VQA_FAMILIES) and len(examples) >= 2 * 4
    for example in examples:
        seed = int(example.id.split("-")[1])
        assert example.problem is None and example.truth in ANSWERS and example.ref == f"shapes:{seed}"
        np.testing.assert_array_equal(np.asarray(picture(example)), make_scene(seed).pixels)
        assert example.slices["objects"] == len(make_scene(seed).objects)
        assert isinstance(example.slices["relational"], bool)
        if example.evidence is not None:
            assert example.evidence.shape == example.coverage.shape == (8, 8) and example.evidence.dtype == bool
            assert example.evidence.any() and (example.coverage[example.evidence] > 0).all()
            assert example.coverage.min() >= 0 and example.coverage.max() <= 1
    assert any(e.evidence is not None for e in examples) and any(e.slices["relational"] for e in examples)
    coarse = run(shapes_source(HELD_OUT_SEED, 2, patch_size=32))
    assert [e.text for e in coarse] == [e.text for e in examples]  # the same questions, on a coarser grid
    assert all(e.evidence.shape == (4, 4) for e in coarse if e.evidence is not None)
    assert source.fingerprint != shapes_source(HELD_OUT_SEED, 3).fingerprint


@pytest.mark.parametrize("task, label", [("q2a", "answer_label"), ("qa2r", "rationale_label")])
def test_shapes_vcr_source(task, label):
    source = shapes_source(HELD_OUT_SEED + 5, 3, kind="vcr", task=task)
    examples = run(source)
    assert source.kind == "vcr" and source.total() == len(examples) == 3
    for example in examples:
        annotation, metadata = example.annotation, example.metadata
        assert example.truth == annotation[label] and example.truth in range(4)
        assert len(annotation["answer_choices"]) == len(annotation["rationale_choices"]) == 4
        assert picture(example).size == (metadata["width"], metadata["height"])
        assert len(metadata["boxes"]) == len(annotation["objects"]) and example.text == vcr_text(annotation)
        assert example.slices["family"] == annotation["question_family"]


def test_shapes_guards():
    with pytest.raises(InputError, match=f"start at seed {HELD_OUT_SEED}"):
        shapes_source(HELD_OUT_SEED - 1, 2)
    with pytest.raises(InputError, match="kind"):
        shapes_source(HELD_OUT_SEED, 2, kind="captions")
    with pytest.raises(InputError, match="at least 1"):
        shapes_source(HELD_OUT_SEED, 0)
