"""Counterfactual inputs: edited shapes-world scenes keep every other object's pixels and re-derive their answers,
image and text edits change only what they name, and the object-removal study (and its command) on the shipped
model."""

import json

import numpy as np
import pytest

from vle.edits import background_color, blank_box, blank_patches, drop_word, replace_word
from vle.errors import InputError
from vle.hub import shipped_models
from vle.shapes.counterfactual import move_object, object_at, reanswer, recolor_object, remove_object
from vle.shapes.tasks_vqa import VQA_FAMILIES, vqa_dataset
from vle.shapes.world import COLORS, GAP_PX, SIZE_PX, _apart, make_scene

SHIPPED_VQA = "vle-tiny-shapes-vqa"
NOT_SHIPPED = pytest.mark.skipif(SHIPPED_VQA not in shipped_models(), reason="the shapes VQA model is not shipped")
SEEDS = range(40)
STUDY_KEYS = {"evidence_change_rate", "other_change_rate", "by_family", "methods", "n_questions", "seed", "model",
              "truth_change_rate"}
CHEAP = ("raw_attention", "rollout")


def _others_kept(before, after, kept) -> bool:
    """Pixels under every kept object's mask are identical (``kept``: (index before, index after) pairs)."""
    return all(np.array_equal(before.pixels[before.objects[i].mask], after.pixels[after.objects[j].mask])
               for i, j in kept)


def _free_center(scene, index):
    """A centre where object ``index`` fits away from its old place and every other object, or None."""
    obj, extent = scene.objects[index], SIZE_PX[scene.objects[index].size]
    for y in range(extent, scene.image_size - extent, 3):
        for x in range(extent, scene.image_size - extent, 3):
            clear = all(_apart((x, y), extent, o.center, SIZE_PX[o.size]) for o in scene.objects if o.index != index)
            if clear and _apart((x, y), extent, obj.center, extent):
                return x, y
    return None


# -- scenes --------------------------------------------------------------------------------------------------------

def test_removing_an_object_keeps_every_other_objects_pixels_and_reveals_what_was_under_it():
    for seed in SEEDS:
        scene = make_scene(seed)
        for index, obj in enumerate(scene.objects):
            edited = remove_object(scene, index)
            assert [o.index for o in edited.objects] == list(range(len(scene.objects) - 1))
            assert edited.seed == scene.seed and len(edited.objects) == len(scene.objects) - 1
            kept = [(i, i - (i > index)) for i in range(len(scene.objects)) if i != index]
            assert _others_kept(scene, edited, kept)
            assert not np.array_equal(scene.pixels[obj.mask], edited.pixels[obj.mask])
            outside = ~scene.masks.any(0)
            grown = np.zeros_like(outside)
            x1, y1, x2, y2 = obj.box
            grown[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = True
            # away from the removed object nothing changes: the same clutter and noise from the same seed
            assert np.array_equal(scene.pixels[outside & ~grown], edited.pixels[outside & ~grown])
            # where it was, the background shows: grey, with no colour left
            spread = edited.pixels[obj.mask].astype(int)
            assert np.abs(spread - spread.mean(-1, keepdims=True)).max() < 25


def test_a_moved_object_appears_at_its_new_place_and_the_rest_stay():
    moved = 0
    for seed in SEEDS:
        scene = make_scene(seed)
        for index, obj in enumerate(scene.objects):
            center = _free_center(scene, index)
            if center is None:
                continue
            edited = move_object(scene, index, center)
            new = edited.objects[index]
            assert new.center == center and new.mask.sum() == obj.mask.sum()
            assert _others_kept(scene, edited, [(i, i) for i in range(len(scene.objects)) if i != index])
            colour = edited.pixels[new.mask].astype(float).mean(0)
            assert np.abs(colour - COLORS[obj.color]).max() < 12
            assert not np.array_equal(scene.pixels[obj.mask], edited.pixels[obj.mask])
            moved += 1
    assert moved > 50


def test_a_recoloured_object_changes_colour_alone():
    for seed in SEEDS:
        scene = make_scene(seed)
        free = [c for c in COLORS if c not in {o.color for o in scene.objects}]
        if not free:
            continue
        for index, obj in enumerate(scene.objects):
            edited = recolor_object(scene, index, free[0])
            assert edited.objects[index].color == free[0]
            assert _others_kept(scene, edited, [(i, i) for i in range(len(scene.objects)) if i != index])
            colour = edited.pixels[obj.mask].astype(float).mean(0)
            assert np.abs(colour - COLORS[free[0]]).max() < 12


def test_edits_are_refused_with_a_reason():
    scene = make_scene(3)
    count = len(scene.objects)
    with pytest.raises(InputError, match=f"0..{count - 1}"):
        remove_object(scene, count)
    with pytest.raises(InputError, match="at least 0"):
        move_object(scene, -1, (60, 60))
    with pytest.raises(InputError, match="would leave the image"):
        move_object(scene, 0, (1, 60))
    other = scene.objects[1]
    with pytest.raises(InputError, match=f"{GAP_PX} px apart"):
        move_object(scene, 0, other.center)
    with pytest.raises(InputError, match="center must be"):
        move_object(scene, 0, 60)
    with pytest.raises(InputError, match="unknown colour 'pink'"):
        recolor_object(scene, 0, "pink")
    with pytest.raises(InputError, match=f"already {other.color}"):
        recolor_object(scene, 0, other.color)
    assert recolor_object(scene, 0, scene.objects[0].color) == scene  # its own colour: nothing changes


def test_object_at_finds_the_object_under_a_pixel():
    for seed in SEEDS:
        scene = make_scene(seed)
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            assert object_at(scene, xs[0] + 0.5, ys[0] + 0.5) == obj.index
            assert object_at(scene, obj.box[2] + 1, obj.box[3] + 1) == obj.index  # a near miss still picks it
        taken = np.zeros((scene.image_size,) * 2, bool)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            taken[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = True
        y, x = np.argwhere(~taken)[0]
        assert object_at(scene, x, y) is None
        assert object_at(scene, -5, 400) is None


# -- questions -----------------------------------------------------------------------------------------------------

def test_reanswer_on_the_original_scene_gives_back_every_generated_question():
    families = set()
    for seed, example in vqa_dataset(5_000, 150, questions_per_scene=2):
        assert reanswer(make_scene(seed), example) == example
        families.add(example.family)
    assert families == set(VQA_FAMILIES)


def test_reanswer_after_removing_the_subject_is_none():
    checked = 0
    for seed, example in vqa_dataset(6_000, 80, questions_per_scene=2, families=("color", "shape", "size")):
        assert reanswer(remove_object(make_scene(seed), example.subject), example) is None
        checked += 1
    assert checked > 100


def test_removing_a_counted_object_decrements_the_count_and_an_uncounted_one_keeps_it():
    checked = 0
    for seed, example in vqa_dataset(7_000, 60, questions_per_scene=1, families=("count",)):
        scene = make_scene(seed)
        for index in range(len(scene.objects)):
            after = reanswer(remove_object(scene, index), example)
            expected = int(example.answer) - (index in example.evidence)
            assert after.answer == str(expected) and len(after.evidence) == expected
            checked += 1
    assert checked > 100


def test_removing_a_non_evidence_object_never_changes_the_truth():
    for seed, example in vqa_dataset(8_000, 60, questions_per_scene=2):
        scene = make_scene(seed)
        for index in set(range(len(scene.objects))) - set(example.evidence):
            after = reanswer(remove_object(scene, index), example)
            assert after is not None and after.answer == example.answer


def test_reanswer_refuses_a_question_not_of_its_family():
    seed, example = next(iter(vqa_dataset(0, 1, questions_per_scene=1, families=("shape",))))
    from dataclasses import replace
    with pytest.raises(InputError, match="not a size question"):
        reanswer(make_scene(seed), replace(example, family="size", question="what colour ?"))


# -- image and text edits ------------------------------------------------------------------------------------------

@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    pixels = np.full((40, 56, 3), 200, np.uint8)
    pixels[1:-1, 1:-1] = rng.integers(0, 255, (38, 54, 3))
    return pixels


def test_background_is_the_median_border_colour(picture, tmp_path):
    assert background_color(picture) == (200, 200, 200)
    from PIL import Image
    Image.fromarray(picture).save(tmp_path / "p.png")
    assert background_color(str(tmp_path / "p.png")) == background_color(Image.fromarray(picture)) == (200,) * 3


def test_blank_box_fills_the_box_alone(picture):
    edited = np.asarray(blank_box(picture, (5, 10, 20, 30)))
    inside = np.zeros(picture.shape[:2], bool)
    inside[10:30, 5:20] = True
    assert (edited[inside] == 200).all() and np.array_equal(edited[~inside], picture[~inside])
    assert (np.asarray(blank_box(picture, (0, 0, 56, 40), color=(1, 2, 3))) == (1, 2, 3)).all()
    assert np.asarray(blank_box(picture, (0, 0, 1, 1), color="white"))[0, 0].tolist() == [255, 255, 255]
    assert picture[15, 10].tolist() != [200, 200, 200]  # the input is left as it was


def test_blank_patches_fills_the_named_patches_alone(picture):
    edited = np.asarray(blank_patches(picture, [0, 5], grid=4))  # 40 x 56: rows of 10 px, columns of 14 px
    inside = np.zeros(picture.shape[:2], bool)
    inside[0:10, 0:14] = inside[10:20, 14:28] = True
    assert (edited[inside] == 200).all() and np.array_equal(edited[~inside], picture[~inside])
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = True
    assert np.array_equal(np.asarray(blank_patches(picture, mask, grid=4)), edited)
    assert np.array_equal(np.asarray(blank_patches(picture, [], grid=4)), picture)


def test_word_edits():
    assert replace_word("what  color is the circle ?", 1, "shape") == "what shape is the circle ?"
    assert drop_word("what color is the circle ?", 3) == "what color is circle ?"


@pytest.mark.parametrize("edit, fragment", [
    (lambda p: blank_box(p, (0, 0, 57, 10)), "reaches outside the 56x40 image"),
    (lambda p: blank_box(p, (-1, 0, 5, 10)), "reaches outside"),
    (lambda p: blank_box(p, (5, 5, 5, 10)), "is empty"),
    (lambda p: blank_box(p, (5, 5, 10)), "box must be (x1, y1, x2, y2)"),
    (lambda p: blank_box(p, (0, 0, 5, 5), color=(0, 0, 300)), "at most 255"),
    (lambda p: blank_box(p, (0, 0, 5, 5), color="mauvish"), "unknown colour 'mauvish'"),
    (lambda p: blank_patches(p, [16], grid=4), "ids 0..15"),
    (lambda p: blank_patches(p, [-1], grid=4), "ids 0..15"),
    (lambda p: blank_patches(p, np.zeros((3, 3), bool), grid=4), "must be (4, 4) or (16,)"),
    (lambda p: blank_patches(p, [0], grid=0), "grid must be at least 1"),
    (lambda p: replace_word("what color ?", 3, "shape"), "3 words, 0..2"),
    (lambda p: replace_word("what color ?", 1, "  "), "replacement word is empty"),
    (lambda p: replace_word("what color ?", 1, "two words"), "several words"),
    (lambda p: drop_word("what", 0), "the only word"),
    (lambda p: drop_word("", 0), "text is empty"),
    (lambda p: drop_word("what color ?", 1.5), "whole number"),
])
def test_bad_edits_are_refused_by_name(picture, edit, fragment):
    with pytest.raises(InputError) as caught:
        edit(picture)
    assert fragment in str(caught.value), str(caught.value)


# -- the removal study ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    from vle import VLEForVQA
    from vle.processing_vle import VLEProcessor
    from vle.hub import resolve_model_path

    path = resolve_model_path(SHIPPED_VQA)
    return VLEForVQA.from_pretrained(path).eval(), VLEProcessor.from_pretrained(path)


@NOT_SHIPPED
def test_the_removal_study_runs_is_deterministic_and_has_its_keys(shipped):
    from vle.shapes.removal import format_table, removal_rows, summarise

    model, processor = shipped
    rows = removal_rows(n=4, methods=CHEAP, model=model, processor=processor, progress=False)
    again = removal_rows(n=4, methods=CHEAP, model=model, processor=processor, progress=False)
    assert json.dumps(rows) == json.dumps(again)
    result = summarise(rows, 1_000_003, SHIPPED_VQA)
    assert STUDY_KEYS <= set(result) and result["n_questions"] == 4
    assert set(result["methods"]) == set(CHEAP)
    for row in result["methods"].values():
        assert {"removal_correlation", "pooled_correlation", "n_questions"} <= set(row)
    for row in result["by_family"].values():
        assert {"evidence_change_rate", "other_change_rate", "n_questions", "n_evidence_removals",
                "n_other_removals"} <= set(row)
    assert sum(r["n_questions"] for r in result["by_family"].values()) == 4
    assert set(result["truth_change_rate"]) == {"evidence", "other"}
    assert sum(len(r["removals"]) for r in rows) == result["n_evidence_removals"] + result["n_other_removals"]
    table = format_table(result)
    assert "\nall " in table and "rollout" in table


@NOT_SHIPPED
def test_the_counterfactual_command_prints_the_study_as_json(capsys):
    from vle.cli import main

    assert main(["counterfactual", "--n", "2", "--methods", "rollout", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert STUDY_KEYS <= set(printed["result"]) and printed["model"] == SHIPPED_VQA
    assert printed["result"]["seed"] == 1_000_003 and list(printed["result"]["methods"]) == ["rollout"]


def test_the_study_refuses_bad_arguments_before_loading_a_model():
    from vle.shapes.removal import check_study

    with pytest.raises(InputError, match="held out"):
        check_study(5, 1, None)
    with pytest.raises(InputError, match="at least 1"):
        check_study(None, 0, None)
    with pytest.raises(InputError, match="unknown explanation method 'lime'"):
        check_study(None, 1, ["lime"])
    with pytest.raises(InputError, match="methods is empty"):
        check_study(None, 1, [])
