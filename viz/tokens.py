"""Words (or tokens) coloured by their score: as a figure, and as HTML spans for reports."""

from __future__ import annotations

import html

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from ._base import (check_array, check_same_length, color_limits, infer_signed, readable_text_color, score_cmap,
                    score_colors)

_PAD_PT = 3.0  # padding around each word inside its coloured box, in points
_GAP_PT = 4.0  # space between boxes


def plot_token_strip(words, scores, *, signed: bool | None = None, cmap=None, fontsize: float = 11,
                     show_scores: bool = False, colorbar: bool = True, title: str | None = None, width: float = 8.0,
                     ax=None):
    """Draw ``words`` (sequence of str) on boxes coloured by ``scores`` (n_words,), wrapping to ``width`` inches
    (or to the width of ``ax``). Text is black or white, whichever reads better on its box. Returns the Figure.

    >>> fig = plot_token_strip(["a", "red", "circle"], [0.1, -0.5, 0.9])
    >>> [text.get_text() for text in fig.axes[0].texts]
    ['a', 'red', 'circle']
    """
    scores = check_array(scores, "word scores", 1, "(n_words,)")
    words = [str(word) for word in words]
    check_same_length(words, scores, "words", "scores")
    signed = infer_signed(scores, signed)
    low, high = color_limits(scores, signed)
    colours = score_colors(scores, signed, cmap, (low, high))
    font = FontProperties(size=fontsize)
    widths = _text_widths_pt(words, font)
    line_pt = fontsize * (2.6 if show_scores else 1.9)

    if ax is None:
        bar_in = 0.9 if colorbar else 0.0
        lines = _wrap(widths, (width - bar_in) * 72)
        height = max(len(lines) * line_pt / 72 + (0.35 if title else 0.1), 0.55)
        figure = Figure(figsize=(width, height))
        ax = figure.add_axes((0.0, 0.0, 1 - bar_in / width, 1.0 - (0.3 / height if title else 0.0)))
        if colorbar:
            bar_ax = figure.add_axes((1 - 0.7 / width, 0.15, 0.12 / width, 0.7))
            bar = figure.colorbar(ScalarMappable(Normalize(low, high), score_cmap(signed, cmap)), cax=bar_ax)
            bar.ax.tick_params(labelsize=7)
            bar.set_ticks([low, 0.0, high] if signed else [low, high])
    else:
        figure = ax.figure
        box = ax.get_position()
        lines = _wrap(widths, box.width * figure.get_figwidth() * 72)
    ax_width_pt = ax.get_position().width * figure.get_figwidth() * 72
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    for line_number, line in enumerate(lines):
        y = 1 - (line_number + 0.5) / len(lines)
        for index, x_pt in line:
            background = colours[index]
            ax.text((x_pt + _PAD_PT) / ax_width_pt, y, words[index], fontproperties=font, va="center", ha="left",
                    color=readable_text_color(background),
                    bbox=dict(boxstyle=f"round,pad={_PAD_PT / fontsize:.2f}", facecolor=background,
                              edgecolor="#999999", linewidth=0.4))
            if show_scores:
                ax.text((x_pt + _PAD_PT + widths[index] / 2) / ax_width_pt, y - 0.42 / len(lines),
                        f"{scores[index]:+.2f}" if signed else f"{scores[index]:.2f}", fontsize=fontsize * 0.6,
                        ha="center", va="center", color="#444444")
    if title:
        figure.suptitle(title, fontsize=fontsize, x=0.01, ha="left")
    return figure


def token_spans_html(words, scores, *, signed: bool | None = None, cmap=None) -> str:
    """The token strip as inline-styled HTML spans (no CSS file, no script), scores in the hover title.

    >>> token_spans_html(["a"], [1.0])[:5]
    '<span'
    """
    scores = check_array(scores, "word scores", 1, "(n_words,)")
    words = [str(word) for word in words]
    check_same_length(words, scores, "words", "scores")
    signed = infer_signed(scores, signed)
    colours = score_colors(scores, signed, cmap)
    spans = []
    for word, score, colour in zip(words, scores, colours):
        spans.append(f'<span title="{score:+.4f}" style="background:{to_hex(colour)};'
                     f'color:{readable_text_color(colour)};padding:2px 5px;margin:2px;border-radius:4px;'
                     f'display:inline-block;font-family:sans-serif">{html.escape(word)}</span>')
    return "".join(spans)


def _text_widths_pt(words, font) -> np.ndarray:
    """Rendered width of each word in points, measured by Agg at 72 dpi (one pixel = one point)."""
    renderer = FigureCanvasAgg(Figure(dpi=72)).get_renderer()
    return np.array([renderer.get_text_width_height_descent(word or " ", font, ismath=False)[0] for word in words])


def _wrap(widths, available_pt: float) -> list[list[tuple[int, float]]]:
    """Greedy line breaking: lines of (word index, left edge in points)."""
    lines, line, x = [], [], _GAP_PT
    for index, width in enumerate(widths):
        step = width + 2 * _PAD_PT + _GAP_PT
        if line and x + step > available_pt:
            lines.append(line)
            line, x = [], _GAP_PT
        line.append((index, x))
        x += step
    lines.append(line)
    return lines
