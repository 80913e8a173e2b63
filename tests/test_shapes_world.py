"""Tests for the synthetic shapes world (vle.shapes): generator invariants and every task's answers.

Answers are recomputed here from ``scene.objects`` by deliberately simple, independent code (parsing the text),
not by calling the task modules' own helpers.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from vle.shapes import (
    ANSWERS, COLORS, MPC_CLASSES, NONRELATIONAL_FAMILIES, RELATIONAL_FAMILIES, SHAPES, SIZE_PX, SIZES,
    VCR_FAMILIES, VQA_FAMILIES, make_caption, make_mpc, make_negative_caption, make_pbc, make_scene, make_vcr,
    make_vqa, object_patches, patch_coverage, vqa_dataset, world_corpus,
)
from vle.shapes.world import patch_attributes
from vle.shapes.make_pics import write_examples

N_SCENES = 240
COLORS_LIST = list(COLORS)
SEEDS = range(1000, 1000 + N_SCENES)


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed) for seed in SEEDS]


# --- independent scene-graph oracle -------------------------------------------------------------------------------

def refer(scene, words):
    """The single object a phrase like 'the large red object' / 'the circle' names."""
    found = [o for o in scene.objects
             if all(w in ("the", "a", "an", "object") or w in (o.color, o.shape, o.size) for w in words)]
    assert len(found) == 1, (words, scene.to_json())
    return found[0]


def dist(a, b):
    return math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1])


def ranked(scene, ref):
    """(distance, object) of the other objects, nearest first."""
    return sorted(((dist(ref, o), o) for o in scene.objects if o is not ref), key=lambda t: t[0])


def vqa_oracle(scene, question):
    """(answer, evidence) for any VQA question, from the scene graph."""
    objs = scene.objects
    words = question.split()
    assert words[-1] == "?"
    text = " ".join(words[:-1])
    if m := re.fullmatch(r"what (shape|color) is the object (nearest to|farthest from) (.+)", text):
        ref = refer(scene, m[3].split())
        order = ranked(scene, ref)
        if m[2] == "farthest from":
            order = order[::-1]
        if len(order) > 1:
            assert abs(order[0][0] - order[1][0]) >= 4, "near-tie asked"
        target = order[0][1]
        return getattr(target, m[1]), {ref.index, target.index}
    if m := re.fullmatch(r"what (color|shape|size) is (.+)", text):
        obj = refer(scene, m[2].split())
        return getattr(obj, m[1]), {obj.index}
    if m := re.fullmatch(r"is there an? (\w+) (\w+)", text):
        hits = [o for o in objs if o.color == m[1] and o.shape == m[2]]
        if hits:
            return "yes", {o.index for o in hits}
        return "no", {o.index for o in objs if o.color == m[1] or o.shape == m[2]}
    if m := re.fullmatch(r"how many (\w+)s are there", text):
        counted = {o.index for o in objs if o.shape == m[1]}
        return str(len(counted)), counted
    if m := re.fullmatch(r"how many (\w+) objects are there", text):
        counted = {o.index for o in objs if o.size == m[1]}
        return str(len(counted)), counted
    if m := re.fullmatch(r"is (.+) (left of|above) (.+)", text):
        a, b = refer(scene, m[1].split()), refer(scene, m[3].split())
        axis = 0 if m[2] == "left of" else 1
        assert abs(a.center[axis] - b.center[axis]) >= 4, "near-tie asked"
        return ("yes" if a.center[axis] < b.center[axis] else "no"), {a.index, b.index}
    if m := re.fullmatch(r"how many other objects have the same shape as (.+)", text):
        ref = refer(scene, m[1].split())
        same = {o.index for o in objs if o.shape == ref.shape and o is not ref}
        return str(len(same)), same | {ref.index}
    raise AssertionError(f"unknown question form: {question}")


def parse_mention(words):
    assert words[0] == ("an" if words[1][0] in "aeiou" else "a")
    return {"size": words[1] if len(words) == 4 else None, "color": words[-2], "shape": words[-1]}


def parse_caption(text):
    words = text.split()
    for rel in ("left of", "right of", "above", "below"):
        n = len(rel.split())
        for i in range(len(words) - n + 1):
            if words[i:i + n] == rel.split():
                return parse_mention(words[:i]), rel, parse_mention(words[i + n:])
    return parse_mention(words), None, None


def fits(obj, mention):
    return all(v is None or getattr(obj, k) == v for k, v in mention.items())


def holds(a, rel, b):
    return {"left of": a.center[0] < b.center[0], "right of": a.center[0] > b.center[0],
            "above": a.center[1] < b.center[1], "below": a.center[1] > b.center[1]}[rel]


def caption_true(scene, text):
    first, rel, second = parse_caption(text)
    if rel is None:
        return any(fits(o, first) for o in scene.objects)
    return any(fits(a, first) and fits(b, second) and a is not b and holds(a, rel, b)
               for a in scene.objects for b in scene.objects)


# --- world ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_scene_and_pixels():
    a, b = make_scene(7), make_scene(7)
    assert a == b and a.to_json() == b.to_json()
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(np.asarray(a.image), np.asarray(make_scene(7).image))


def test_different_seeds_differ():
    scenes = [make_scene(s) for s in range(8)]
    assert len({s.pixels.tobytes() for s in scenes}) == 8
    assert len({json.dumps(s.to_json()["objects"]) for s in scenes}) == 8


def test_scene_ground_truth_invariants(scenes):
    counts = Counter()
    for scene in scenes:
        objs = scene.objects
        counts[len(objs)] += 1
        assert 2 <= len(objs) <= 6
        assert len({o.color for o in objs}) == len(objs)
        assert scene.image.size == (128, 128) and scene.image.mode == "RGB"
        assert scene.masks.shape == (len(objs), 128, 128) and scene.masks.dtype == bool
        for i, o in enumerate(objs):
            assert o.index == i and o.shape in SHAPES and o.color in COLORS and o.size in SIZES
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            assert o.mask.any() and o.mask.sum() == o.mask[y1:y2, x1:x2].sum()
            # tight: every box edge row/column touches the mask
            inner = o.mask[y1:y2, x1:x2]
            assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
            assert abs((x2 - x1) - SIZE_PX[o.size]) <= 1 and (y2 - y1) <= SIZE_PX[o.size]
        for a in objs:
            for b in objs[a.index + 1:]:
                ax1, ay1, ax2, ay2 = a.box
                bx1, by1, bx2, by2 = b.box
                gap = max(bx1 - ax2, ax1 - bx2, by1 - ay2, ay1 - by2)
                assert gap >= 2, (a, b)
    assert set(counts) == {2, 3, 4, 5, 6}


def test_rendered_colors_match_masks(scenes):
    for scene in scenes[:20]:
        pixels = scene.pixels.astype(float)
        for o in scene.objects:
            # Drop the anti-aliased rim before averaging the object's colour.
            core = o.mask.copy()
            core[1:] &= o.mask[:-1]
            core[:-1] &= o.mask[1:]
            core[:, 1:] &= o.mask[:, :-1]
            core[:, :-1] &= o.mask[:, 1:]
            mean = pixels[core].mean(axis=0)
            assert np.abs(mean - COLORS[o.color]).max() < 12, (o, mean)
        background = pixels[~scene.masks.any(axis=0)]
        # Background and clutter are achromatic: per-pixel channel spread is only noise.
        assert np.abs(background[:, 0] - background[:, 2]).mean() < 10


def test_patches(scenes):
    for scene in scenes[:50]:
        for o in scene.objects:
            coverage = patch_coverage(o.mask, 16)
            assert coverage.shape == (8, 8)
            assert math.isclose(coverage.sum() * 256, o.mask.sum())
            hit = object_patches(scene, o.index)
            assert hit.shape == (8, 8) and hit.dtype == bool and hit.any()
            assert (coverage[hit] > 0).all()


def test_patch_attributes_show_each_object_where_it_lies(scenes):
    for scene in scenes[:50]:
        truth = patch_attributes(scene)
        assert truth["center"].sum() == len(scene.objects)  # one centre patch per object
        union = np.zeros(64, dtype=bool)
        for o in scene.objects:
            covered = object_patches(scene, o.index).reshape(-1)
            union |= covered
            center = (o.center[1] // 16) * 8 + o.center[0] // 16
            assert truth["center"][center] == 1
            assert (COLORS_LIST[truth["color"][center] - 1], SHAPES[truth["shape"][center] - 1],
                    SIZES[truth["size"][center] - 1]) == (o.color, o.shape, o.size)
            assert truth["position"][center] * 128 == pytest.approx(o.center)
            # every patch the object covers shows it or another object that covers it more (or has its centre there)
            shown = truth["color"][covered]
            assert (shown > 0).all()
        assert ((truth["color"] > 0) == (union | (truth["center"] == 1))).all()
        assert (truth["position"][truth["color"] == 0] == 0).all()


# --- VQA ------------------------------------------------------------------------------------------------------------

def test_answers_vocabulary():
    assert list(ANSWERS) == sorted(set(ANSWERS))
    assert set(ANSWERS) == {*COLORS, *SHAPES, *SIZES, "yes", "no", *"0123456"}
    assert set(NONRELATIONAL_FAMILIES) | set(RELATIONAL_FAMILIES) == set(VQA_FAMILIES)
    assert not set(NONRELATIONAL_FAMILIES) & set(RELATIONAL_FAMILIES)


def test_every_vqa_answer_recomputed(scenes):
    rng = np.random.default_rng(0)
    asked = Counter()
    for scene in scenes:
        for family in VQA_FAMILIES:
            example = make_vqa(scene, rng, family)
            if example is None:
                continue
            asked[family] += 1
            assert example.family == family
            assert example.relational == (family in RELATIONAL_FAMILIES)
            assert example.answer in ANSWERS
            assert example.question == example.question.lower() and "  " not in example.question
            answer, evidence = vqa_oracle(scene, example.question)
            assert example.answer == answer, (example, scene.to_json())
            assert set(example.evidence) == evidence, (example, scene.to_json())
            if example.subject is None:  # yes / no and counts have no single object whose attribute they are
                assert example.answer in ("yes", "no", *"0123456"), example
            else:
                subject = scene.objects[example.subject]
                assert example.answer in (subject.color, subject.shape, subject.size) and subject.index in evidence
    assert all(asked[f] >= N_SCENES // 3 for f in VQA_FAMILIES), asked


def test_default_family_draw_is_balanced(scenes):
    rng = np.random.default_rng(1)
    counts = Counter(make_vqa(scene, rng).family for scene in scenes for _ in range(4))
    expected = 4 * N_SCENES / len(VQA_FAMILIES)
    assert set(counts) == set(VQA_FAMILIES)
    assert all(0.6 * expected < c < 1.4 * expected for c in counts.values()), counts


def test_yes_no_balanced(scenes):
    rng = np.random.default_rng(2)
    for family in ("exists", "left_of", "above"):
        answers = [make_vqa(s, rng, family) for s in scenes for _ in range(2)]
        yes = sum(a.answer == "yes" for a in answers if a is not None) / len(answers)
        assert 0.4 < yes < 0.6, (family, yes)


def test_vqa_dataset_deterministic():
    first = list(vqa_dataset(50, 10, questions_per_scene=3))
    assert first == list(vqa_dataset(50, 10, questions_per_scene=3))
    assert {seed for seed, _ in first} == set(range(50, 60)) and len(first) >= 25
    for seed, example in first:
        assert vqa_oracle(make_scene(seed), example.question)[0] == example.answer


# --- captions, PBC, MPC ---------------------------------------------------------------------------------------------

def test_captions_true_and_negatives_false(scenes):
    rng = np.random.default_rng(3)
    kinds = Counter()
    for scene in scenes:
        text, evidence = make_caption(scene, rng)
        assert caption_true(scene, text), (text, scene.to_json())
        first, rel, second = parse_caption(text)
        assert fits(scene.objects[evidence[0]], first)
        assert rel is None or fits(scene.objects[evidence[1]], second)

        neg, evidence, kind = make_negative_caption(scene, rng)
        kinds[kind] += 1
        assert not caption_true(scene, neg), (neg, kind, scene.to_json())
        first, rel, second = parse_caption(neg)
        mentions = [first] if rel is None else [first, second]
        originals = [scene.objects[i] for i in evidence]
        assert len(mentions) == len(originals)
        # exactly one word of the named kind differs from the objects the caption was made from
        changed = [(k, m[k], o) for m, o in zip(mentions, originals) for k, v in m.items()
                   if v is not None and v != getattr(o, k)]
        if kind == "relation":
            assert not changed and rel is not None and not holds(*originals[:1], rel, *originals[1:])
        else:
            assert len(changed) == 1 and changed[0][0] == kind, (neg, changed)
    assert set(kinds) == {"color", "shape", "relation"}


def test_pbc_targets_lie_on_the_object(scenes):
    rng = np.random.default_rng(4)
    for scene in scenes[:100]:
        phrase, index, target = make_pbc(scene, rng)
        assert phrase.startswith("the ") and refer(scene, phrase.split()) is scene.objects[index]
        assert target.shape == (8, 8) and target.any()
        assert (patch_coverage(scene.objects[index].mask, 16)[target] > 0).all()


def test_mpc(scenes):
    rng = np.random.default_rng(5)
    for scene in scenes[:100]:
        index, patch_ids, label = make_mpc(scene, rng)
        assert MPC_CLASSES[label] == scene.objects[index].shape
        assert patch_ids == sorted(patch_ids) and patch_ids and all(0 <= p < 64 for p in patch_ids)
        coverage = patch_coverage(scene.objects[index].mask, 16).ravel()  # row-major, like patch ids
        assert (coverage[patch_ids] > 0).all()


# --- VCR ------------------------------------------------------------------------------------------------------------

def vcr_correct_answer(scene, question):
    """The one correct answer token list, from the scene graph."""
    objs = scene.objects
    if question[:3] == ["what", "color", "is"]:
        o = objs[question[3][0]]
        return [[o.index], "is", o.color, "."]
    if question[:3] == ["what", "shape", "is"]:
        o = objs[question[3][0]]
        return [[o.index], "is", "a", o.size, o.shape, "."]
    if question[:4] == ["which", "object", "is", "the"]:
        key = {"leftmost": lambda o: o.center[0], "rightmost": lambda o: -o.center[0],
               "topmost": lambda o: o.center[1], "bottommost": lambda o: -o.center[1]}[question[4]]
        first, second = sorted(objs, key=key)[:2]
        assert key(second) - key(first) >= 4
        return [[first.index], "is", "the", question[4], "object", "."]
    if question[0] == "is" and question[2] == "nearer":
        a, b, c = (objs[t[0]] for t in (question[1], question[4], question[7]))
        assert abs(dist(a, b) - dist(a, c)) >= 4
        return [[a.index], "is", "nearer", "to", [(b if dist(a, b) < dist(a, c) else c).index], "."]
    raise AssertionError(f"unknown VCR question {question}")


def rationale_true(scene, tokens):
    objs = scene.objects
    assert tokens[0] == "because" and tokens[-1] == "." and tokens[2] == "is"
    a, rest = objs[tokens[1][0]], tokens[3:-1]
    if rest[0] in ("a", "an"):
        return rest[1:] == [a.size, a.color, a.shape]
    if rest[0] == "nearer":
        return dist(a, objs[rest[2][0]]) < dist(a, objs[rest[5][0]])
    rel = " ".join(rest[:-1])
    return holds(a, rel, objs[rest[-1][0]])


def test_vcr_examples(scenes):
    rng = np.random.default_rng(6)
    families = Counter()
    for scene in scenes:
        annotation, metadata = make_vcr(scene, rng, img_fn=f"shapes_{scene.seed}.png")
        json.dumps([annotation, metadata])
        families[annotation["question_family"]] += 1
        n = len(scene.objects)
        assert annotation["objects"] == metadata["names"] == ["object"] * n  # one class: tags, not words, point
        assert metadata["boxes"] == [[*o.box, 1.0] for o in scene.objects]
        assert (metadata["width"], metadata["height"]) == (128, 128)
        assert annotation["metadata_fn"] == f"shapes_{scene.seed}.json"
        answers, rationales = annotation["answer_choices"], annotation["rationale_choices"]
        assert len(answers) == len(rationales) == 4
        assert 0 <= annotation["answer_label"] < 4 and 0 <= annotation["rationale_label"] < 4
        for tokens in [annotation["question"], *answers, *rationales]:
            for t in tokens:
                assert isinstance(t, str) and t == t.lower() or all(0 <= i < n for i in t)
        assert all(0 <= i < n for i in annotation["evidence"])
        correct = vcr_correct_answer(scene, annotation["question"])
        assert [i for i, a in enumerate(answers) if a == correct] == [annotation["answer_label"]]
        truths = [rationale_true(scene, r) for r in rationales]
        assert [i for i, t in enumerate(truths) if t] == [annotation["rationale_label"]], rationales
    assert set(families) == set(VCR_FAMILIES), families


# --- corpus and example pictures -------------------------------------------------------------------------------------

def test_world_corpus_deterministic_and_clean():
    lines = list(world_corpus(5, seed=1))
    assert lines == list(world_corpus(5, seed=1)) and lines != list(world_corpus(5, seed=2))
    assert len(lines) > 5 * 15
    assert all(line and line == line.lower() and line == " ".join(line.split()) for line in lines)
    text = " ".join(lines)
    assert "?" in text and " of " in text and "because" in text


def test_make_pics(tmp_path):
    paths = write_examples(tmp_path, seeds=[3])
    assert sorted(p.name for p in paths) == ["shapes_3.json", "shapes_3.png"]
    record = json.loads((tmp_path / "shapes_3.json").read_text())
    scene = make_scene(3)
    assert record["objects"] == scene.to_json()["objects"]
    for q in record["questions"]:
        assert vqa_oracle(scene, q["question"])[0] == q["answer"]
    assert record["vcr"]["img_fn"] == "shapes_3.png"
