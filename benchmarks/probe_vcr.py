"""Diagnostics of a shapes-world VCR Q->A model: which questions it answers, and where a tag loses its object.

A VCR text names an object by a tag: the word is the class name ('object'), and the only link to the object is the
token type that the tag shares with the object's box token (the mean of the box's patch states, appended to the image
stream). Prints:

- **accuracy by family** on training and held-out scenes (equal numbers: the model underfits; a gap: it memorises),
  and for the spatial families by the item's margin in pixels: how much farther the wrong objects are ("nearer":
  |d(a, b) - d(a, c)|; "extreme": the winner's lead over the closest rival). Errors only at small margins mean the
  model's positions are too coarse; errors at every margin mean it never learned the comparison;
- **tag binding**, at each fusion layer: the share of its text→image attention a tag word puts on its own box token
  (best head; one over the image tokens is the floor), and R² of linear probes reading the tagged object's centre
  (x, y) from the box token's state and from the tag word's state. Questions about one object's colour or shape can
  be answered in the image stream (the box token reads the answer's words); comparing the positions of several
  tagged objects needs them where the roles are, in the text stream;
- **nearer, link by link**: accuracy of linear probes reading "is [a] nearer to [x] than to the other one ?" from the
  answer's tag word states ([a], [x]) and from the pooled pair the Q->A head reads.

Usage: python benchmarks/probe_vcr.py [--model vle-tiny-shapes-vcr-q2a] [--n 400] [--threads T]
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from probe_shapes import probe_accuracy, probe_arguments, probe_r2
from vle import VLEForVCRQ2A
from vle.explain.recorder import Recorder
from vle.processing_vle import VLEProcessor
from vle.shapes.auxiliary import tag_boxes
from vle.shapes.data import VCR_MAX_LENGTH, ScenePool, nearer_offsets, normalize
from vle.shapes.evaluate import DEFAULT_SEED
from vle.shapes.tasks_common import distance, relation_margin
from vle.shapes.tasks_vcr import EXTREMES, draw_vcr, tagged_objects
from vle.vcr import build_vcr_inputs

MARGIN_BINS = (4, 8, 12, 16, 24, 32, 48, 1000)  # pixels


def item_margin(scene, annotation: dict) -> float | None:
    """Pixels by which the right answer of a spatial item beats the wrong ones (None for colour and shape)."""
    objects, question = scene.objects, annotation["question"]
    right = annotation["answer_choices"][annotation["answer_label"]]
    if annotation["question_family"] == "nearer":
        a, b, c = (objects[i] for i in tagged_objects(question))
        return abs(distance(a, b) - distance(a, c))
    if annotation["question_family"] == "extreme":
        relation, winner = EXTREMES[question[4]], objects[tagged_objects(right)[0]]
        rivals = {tagged_objects(choice)[0] for choice in annotation["answer_choices"]} - {winner.index}
        return min(relation_margin(winner, relation, objects[i]) for i in rivals)
    return None


def run_items(model, processor, pool: ScenePool, seed: int, family: str | None = None, batch_size: int = 16):
    """Q->A over every scene of ``pool`` (a ``family`` where it applies, else any): the annotations, whether each was
    answered right, and the recorded fusion states and inputs of every batch."""
    records, hits, batches = [], [], []
    for start in range(0, len(pool), batch_size):
        index = range(start, min(start + batch_size, len(pool)))
        chunk = [draw_vcr(pool.scenes[i], np.random.default_rng([seed, i, 4]), "scene.png",
                          None if family is None else (family,)) for i in index]
        inputs = build_vcr_inputs(processor, [a for a, _ in chunk], [pool.scenes[i].pixels for i in index],
                                  [m for _, m in chunk], max_length=VCR_MAX_LENGTH,
                                  patch_size=model.config.vision_config.patch_size,
                                  pixel_values=normalize(pool.pixels[list(index)]))
        labels = inputs.pop("labels")
        with Recorder(model, attentions=("fusion",), hidden=True,
                      only=["fusion.*.hidden", "fusion.text.*.cross_attention"]) as recorder, torch.no_grad():
            out = model(**inputs)
        hits += (out.logits.argmax(-1) == labels).tolist()
        records += [(pool.scenes[i], a) for i, (a, _) in zip(index, chunk)]
        batches.append((inputs, dict(recorder.tensors.items()), out.vle_output.pooler_output))
    return records, hits, batches


def accuracy_table(model, processor, n: int) -> None:
    print(f"accuracy by family ({n} scenes each):")
    print(f"  {'family':8s} {'train':>6s} {'held-out':>8s}")
    results = {}
    for name, seed in (("train", 0), ("held-out", DEFAULT_SEED)):
        records, hits, _ = run_items(model, processor, ScenePool(seed, n), seed)
        results[name] = (records, hits)
    by_family = {name: defaultdict(list) for name in results}
    for name, (records, hits) in results.items():
        for (_, annotation), hit in zip(records, hits):
            by_family[name][annotation["question_family"]].append(hit)
    for family in sorted(by_family["held-out"]):
        train, held = by_family["train"][family], by_family["held-out"][family]
        print(f"  {family:8s} {np.mean(train):6.3f} {np.mean(held):8.3f}   (n = {len(train)}, {len(held)})")
    print("held-out accuracy by margin (pixels):")
    records, hits = results["held-out"]
    for family in ("extreme", "nearer"):
        margins = [(item_margin(scene, a), hit) for (scene, a), hit in zip(records, hits)
                   if a["question_family"] == family]
        cells = []
        for low, high in zip(MARGIN_BINS, MARGIN_BINS[1:]):
            inside = [hit for margin, hit in margins if low <= margin < high]
            if inside:
                cells.append(f"{low}-{high if high < 1000 else ''}: {np.mean(inside):.2f} ({len(inside)})")
        print(f"  {family:8s} " + ", ".join(cells))


def binding_chain(model, processor, n: int) -> None:
    """Tag binding at every fusion layer, and the nearer links, on held-out items of the 'nearer' family."""
    pool = ScenePool(DEFAULT_SEED + 1, n)
    records, hits, batches = run_items(model, processor, pool, DEFAULT_SEED + 1, family="nearer")
    layers = len(model.base_vle.cross_modal_text_layers)
    words, boxes, centers, shares, floors = defaultdict(list), defaultdict(list), [], defaultdict(list), []
    pairs, pooled_rows, nearer = [], [], []
    item = 0
    for inputs, recorded, pooled in batches:
        types = inputs["extend_token_type_ids"]
        choices = len(types[0])
        image_len = recorded["fusion.image.0.hidden"].shape[1]
        tags = tag_boxes(types, image_len)
        grid_tokens = image_len - max(len(box_types) for per_item in types for box_types, _ in per_item)
        for row, column, box in zip(*(tags[k].tolist() for k in ("rows", "columns", "boxes"))):
            scene, annotation = records[item + row // choices]
            box_types, text_types = types[row // choices][row % choices]
            related = sorted(set(tagged_objects(annotation["question"]) + tagged_objects(annotation["answer_choices"][row % choices])))
            centers.append(scene.objects[related[text_types[column] - 2]].center)
            floors.append(1 / (grid_tokens + len(box_types)))  # uniform over the row's unmasked image tokens
            for layer in range(layers):
                words[layer].append(recorded[f"fusion.text.{layer}.hidden"][row, column])
                boxes[layer].append(recorded[f"fusion.image.{layer}.hidden"][row, box])
                shares[layer].append(recorded[f"fusion.text.{layer}.cross_attention"][row, :, column, box])
        for b in range(len(types)):
            scene, annotation = records[item]
            item += 1
            for c, choice in enumerate(annotation["answer_choices"]):
                offsets = nearer_offsets(scene, annotation, choice)  # ([x] - [a], [y] - [a]) or None
                if offsets is None:
                    continue
                columns = [k for k, t in enumerate(types[b][c][1]) if t >= 2]
                last = recorded[f"fusion.text.{layers - 1}.hidden"][b * choices + c]
                pairs.append(torch.cat([last[columns[-2]], last[columns[-1]]]))  # "[a] is nearer to [x] ."
                pooled_rows.append(pooled[b * choices + c])
                nearer.append(np.hypot(*offsets[:2]) < np.hypot(*offsets[2:]))
    centers = torch.tensor(centers, dtype=torch.float64)
    print(f"tag binding ({len(centers)} tag words in {item} 'nearer' items; held-out Q->A accuracy "
          f"{np.mean(hits):.3f}):")
    print(f"  {'layer':>5s} {'attention tag→own box':>21s} {'(floor)':>7s} {'R² centre from box':>19s} "
          f"{'R² centre from tag word':>23s}")
    for layer in range(layers):
        share = torch.stack(shares[layer]).mean(0).max()
        box_states, word_states = torch.stack(boxes[layer]), torch.stack(words[layer])
        box_r2 = [probe_r2(box_states, centers[:, k]) for k in (0, 1)]
        word_r2 = [probe_r2(word_states, centers[:, k]) for k in (0, 1)]
        print(f"  {layer:5d} {float(share):21.3f} {np.mean(floors):7.3f} {box_r2[0]:9.3f} {box_r2[1]:9.3f} "
              f"{word_r2[0]:11.3f} {word_r2[1]:11.3f}")
    labels = torch.tensor(nearer)
    print(f"nearer, link by link ({len(labels)} choices '[a] is nearer to [x]' with x asked about):")
    print(f"  answer from the tag words [a], [x] (last fusion layer) {probe_accuracy(torch.stack(pairs), labels):.3f}")
    print(f"  answer from the pooled pair the head reads             "
          f"{probe_accuracy(torch.stack(pooled_rows), labels):.3f}")
    print(f"  (chance {max(labels.double().mean(), 1 - labels.double().mean()):.3f})")


def main() -> None:
    args = probe_arguments(__doc__, "vle-tiny-shapes-vcr-q2a", 400)
    model = VLEForVCRQ2A.from_pretrained(args.model).eval()
    processor = VLEProcessor.from_pretrained(args.model)
    accuracy_table(model, processor, args.n)
    binding_chain(model, processor, args.n)


if __name__ == "__main__":
    main()
