"""VCR input building: names, tags and token types, truncation without shared state, boxes → patches."""

import copy

import numpy as np
import pytest
import torch

from vle import VLEConfig, VLEForVCRQ2A
from vle.vcr import PERSON_NAMES, box_to_patches, build_vcr_inputs, object_names, tag_pieces

ANNOTATION = {
    "objects": ["person", "car", "person"],
    "question": ["why", "is", [0, 2], "next", "to", [1], "?"],
    "answer_choices": [[[0], "is", "driving", "."], ["they", "wait", "."], [[2], "left", "."], ["no", "."]],
    "answer_label": 0,
    "rationale_choices": [[[1], "is", "red", "."], ["because", "."], [[0], "is", "tall"], ["yes"]],
    "rationale_label": 1,
}
META = {"boxes": [[0, 0, 16, 16, 1.0], [16, 16, 32, 32, 0.9], [8, 0, 24, 8, 0.8]], "width": 32, "height": 32}


def test_person_names_restart_every_example():
    assert object_names(["person", "car", "person"]) == [PERSON_NAMES[0], "car", PERSON_NAMES[1]]
    assert object_names(["person"]) == [PERSON_NAMES[0]]


def test_tags_mark_object_names(processor):
    ids, tags = tag_pieces(["is", [0, 1], "?"], ["circle", "square"], processor.tokenizer)
    assert len(ids) == len(tags) and set(tags) == {-1, 0, 1}
    assert tags.index(1) > tags.index(0)


def test_inputs_shapes_types_and_labels(processor, image):
    batch = build_vcr_inputs(processor, ANNOTATION, np.zeros((32, 32, 3), np.uint8), META, patch_size=8)
    assert batch["input_ids"].shape == (1, 4, 80)
    image_types, text_types = batch["extend_token_type_ids"][0][0]
    assert image_types == [2, 3, 4]  # objects 0, 1, 2 are all mentioned in question + answer 0
    assert len(batch["patch_ids"][0][0]) == 3 and batch["labels"].tolist() == [0]
    ids = batch["input_ids"][0, 0]
    assert ids[0] == processor.tokenizer.cls_token_id and (ids == processor.tokenizer.sep_token_id).sum() == 2
    assert len(text_types) == int(batch["attention_mask"][0, 0].sum())
    qa2r = build_vcr_inputs(processor, ANNOTATION, np.zeros((32, 32, 3), np.uint8), META, task="qa2r", patch_size=8)
    assert (qa2r["input_ids"][0, 0] == processor.tokenizer.sep_token_id).sum() == 3
    assert qa2r["labels"].tolist() == [1]


def test_truncation_does_not_leak_between_choices(processor):
    long = copy.deepcopy(ANNOTATION)
    long["question"] = ["red"] * 100
    long["answer_choices"] = [["blue"] * 30, ["no"], ["blue"] * 5, ["yes"]]
    batch = build_vcr_inputs(processor, long, np.zeros((32, 32, 3), np.uint8), META, max_length=40, patch_size=8)
    assert int(batch["attention_mask"][0].sum(-1).max()) == 40
    question_lengths = [int((row == row[1]).sum()) for row in batch["input_ids"][0]]
    # each choice truncates its own copy: a short answer leaves the question longer
    assert question_lengths[1] > question_lengths[0]
    assert long["question"] == ["red"] * 100  # the annotation is untouched


def test_batched_annotations_and_model(processor):
    batch = build_vcr_inputs(processor, [ANNOTATION, ANNOTATION], [np.zeros((32, 32, 3), np.uint8)] * 2, [META, META],
                             patch_size=8)
    model = VLEForVCRQ2A(VLEConfig.tiny(num_token_types=8)).eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (2, 4)
    torch.testing.assert_close(out.logits[0], out.logits[1])


def test_box_mapping():
    # square image, 32 px, 4x4 grid: both mappings agree
    assert box_to_patches([0, 0, 16, 16], 32, 32, 32, 8, "crop") == [0, 1, 4, 5]
    assert box_to_patches([0, 0, 15, 15], 32, 32, 32, 8, "squash") == [0, 1, 4, 5]
    # wide image: the centre crop cuts the left quarter, so a box there keeps its nearest patch column
    assert box_to_patches([0, 0, 10, 8], 64, 32, 32, 8, "crop") == [0]
    assert box_to_patches([0, 0, 10, 8], 64, 32, 32, 8, "squash") == [0, 4]
    # boxes partly outside are clipped; wholly outside or empty are errors
    assert box_to_patches([-5, -5, 4, 4], 32, 32, 32, 8) == [0]
    with pytest.raises(ValueError, match="outside"):
        box_to_patches([40, 40, 50, 50], 32, 32, 32, 8)
    with pytest.raises(ValueError, match="empty"):
        box_to_patches([5, 5, 5, 9], 32, 32, 32, 8)


def test_bad_tags_and_tasks(processor):
    bad = copy.deepcopy(ANNOTATION)
    bad["question"] = ["is", [7], "?"]
    with pytest.raises(ValueError, match="object tag 7"):
        build_vcr_inputs(processor, bad, np.zeros((32, 32, 3), np.uint8), META, patch_size=8)
    with pytest.raises(ValueError, match="task"):
        build_vcr_inputs(processor, ANNOTATION, np.zeros((32, 32, 3), np.uint8), META, task="x", patch_size=8)
