"""Task views: VCR multiple choice with the referenced boxes, and the PBC patch-probability overlay."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._base import as_rgb_array, check_array, check_same_length
from .geometry import patch_region
from .heatmap import plot_boxes, plot_patch_relevance

_OUTLINE = [patheffects.withStroke(linewidth=1.5, foreground="black")]


def choice_text(choice, object_names=None) -> str:
    """A VCR choice (a string, or words mixed with lists of object indices) as readable text.

    >>> choice_text([[4], "is", "a", "circle", "."], ["obj"] * 5)
    'obj4 is a circle .'
    """
    if isinstance(choice, str):
        return choice
    words = []
    for item in choice:
        if isinstance(item, (list, tuple)):
            names = [f"{object_names[i]}{i}" if object_names is not None else f"[{i}]" for i in item]
            words.append(" and ".join(names))
        else:
            words.append(str(item))
    return " ".join(words)


def referenced_objects(*texts) -> list[int]:
    """Object indices referenced in VCR-style token lists, in order of first mention.

    >>> referenced_objects(["what", "is", [4], "?"], [[2, 4], "is"])
    [4, 2]
    """
    seen = []
    for text in texts:
        for item in [] if isinstance(text, str) else text:
            for index in item if isinstance(item, (list, tuple)) else []:
                if int(index) not in seen:
                    seen.append(int(index))
    return seen


def plot_vcr_choices(image, choices, scores, boxes, *, question=None, answer_label: int | None = None,
                     object_names=None, referenced=None, title: str | None = None, figsize=(10, 4)):
    """VCR: the image with the referenced ``boxes`` (x0, y0, x1, y1[, …], original pixels) and a bar per choice
    with its score. ``choices``: strings or VCR token lists; ``scores`` (n_choices,). The top-scoring choice is
    bold; ``answer_label``'s bar is green (others grey), so a wrong pick is visible at a glance. Returns the Figure."""
    scores = check_array(scores, "choice scores", 1, "(n_choices,)")
    check_same_length(choices, scores, "choices", "scores")
    if answer_label is not None and not 0 <= answer_label < len(choices):
        raise IndexError(f"answer_label {answer_label} is not one of the {len(choices)} choices")
    referenced = referenced_objects(question or [], *choices) if referenced is None else list(referenced)
    missing = [index for index in referenced if not 0 <= index < len(boxes)]
    if missing:
        raise IndexError(f"object(s) {missing} referenced but only {len(boxes)} boxes were given")
    pixels = as_rgb_array(image)
    height, width = pixels.shape[:2]

    figure = Figure(figsize=figsize, layout="constrained")
    image_ax, bar_ax = figure.subplots(1, 2, width_ratios=(1, 1.6))
    image_ax.imshow(pixels, extent=(0, width, height, 0))
    labelled = [tuple(box[:4]) + (f"{object_names[i]}{i}" if object_names is not None else f"[{i}]",)
                for i, box in enumerate(boxes)]
    plot_boxes(labelled, image_ax, highlight=set(referenced))
    image_ax.set_xlim(0, width)
    image_ax.set_ylim(height, 0)
    image_ax.set_axis_off()
    if question is not None:
        image_ax.set_title(textwrap.fill(choice_text(question, object_names), 45), fontsize=9)

    positions = np.arange(len(choices))[::-1]  # first choice on top
    best = int(np.argmax(scores))
    colours = ["#59a14f" if index == answer_label else "#9c9c9c" for index in range(len(choices))]
    bar_ax.barh(positions, scores, color=colours, height=0.6)
    labels = [textwrap.fill(f"{chr(65 + i)}. {choice_text(c, object_names)}", 38) for i, c in enumerate(choices)]
    bar_ax.set_yticks(positions, labels, fontsize=8)
    for index, tick in enumerate(bar_ax.get_yticklabels()):
        tick.set_fontweight("bold" if index == best else "normal")
    for position, score in zip(positions, scores):
        bar_ax.text(score, position, f" {score:.2f}", va="center", ha="left" if score >= 0 else "right", fontsize=8)
    is_probability = np.all((scores >= 0) & (scores <= 1)) and abs(scores.sum() - 1) < 1e-3
    bar_ax.set_xlabel("probability" if is_probability else "score", fontsize=9)
    if is_probability:
        bar_ax.set_xlim(0, 1.12)
    bar_ax.axvline(0, color="black", linewidth=0.6)
    bar_ax.spines[["top", "right"]].set_visible(False)
    bar_ax.tick_params(axis="x", labelsize=8)
    note = "bold: model's pick" + ("; green: correct" if answer_label is not None else "")
    bar_ax.set_title(note, fontsize=8, color="#555555")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_pbc_overlay(probabilities, image, *, text: str | None = None, opacity: float = 0.6,
                     show_values: bool | None = None, value_floor: float = 0.1, threshold: float | None = None,
                     boxes=None, ax=None, **kwargs):
    """PBC: the (rows, cols) probability that each patch belongs to the phrase ``text``, on the original ``image``
    (fixed 0–1 scale, so two phrases compare). ``show_values`` prints the probability of each patch at or above
    ``value_floor`` (default: on for grids up to 12×12); patches at or above ``threshold`` are outlined. Returns the
    Figure."""
    probabilities = check_array(probabilities, "PBC probabilities", 2, "(rows, cols)")
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError(f"PBC probabilities must lie in [0, 1], got [{probabilities.min():.3g}, "
                         f"{probabilities.max():.3g}]: pass probabilities, not logits")
    rows, cols = probabilities.shape
    title = f"{text!r}: max p = {probabilities.max():.2f}" if text else None
    figure = plot_patch_relevance(probabilities, image, signed=False, limits=(0.0, 1.0), opacity=opacity,
                                  boxes=boxes, title=kwargs.pop("title", title), ax=ax,
                                  label=kwargs.pop("label", "P(patch belongs to the text)"), **kwargs)
    ax = ax or figure.axes[0]
    height, width = as_rgb_array(image).shape[:2]
    if show_values is None:
        show_values = rows <= 12 and cols <= 12
    for (row, col), value in np.ndenumerate(probabilities):
        x0, y0, x1, y1 = patch_region(row, col, (rows, cols), width, height)
        if show_values and value >= value_floor:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{value:.2f}", ha="center", va="center", color="white",
                    fontsize=max(5, min(9, 70 / cols)), path_effects=_OUTLINE)
        if threshold is not None and value >= threshold:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#00e5ff", linewidth=1.5))
    return figure
