"""Export: any figure to PNG, and an explanation to one self-contained HTML file (images embedded as base64, inline
styles, no scripts, no links to anything outside the file)."""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

from .heatmap import plot_patch_relevance
from .tokens import token_spans_html

_EXPLANATION_FIELDS = ("patch_scores", "box_scores", "tokens", "token_scores", "words", "word_scores", "target",
                       "method", "signed", "metadata", "modality_share")

_STYLE = """body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}.share{display:flex;height:22px;border-radius:4px;overflow:hidden;max-width:500px;font-size:.8em}
.share div{color:white;padding:2px 6px;white-space:nowrap}.note{color:#666;font-size:.85em}img{max-width:100%}"""


def save_png(figure, path, *, dpi: int = 120) -> str:
    """Write ``figure`` to ``path`` as PNG (through the Figure itself, no pyplot) and return the path."""
    path = os.fspath(path)
    figure.savefig(path, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def figure_to_png(figure, *, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (for HTML embedding or widgets.Image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _img_tag(figure, alt: str, dpi: int) -> str:
    encoded = base64.b64encode(figure_to_png(figure, dpi=dpi)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _check_explanation(explanation) -> None:
    missing = [name for name in _EXPLANATION_FIELDS if not hasattr(explanation, name)]
    if missing:
        raise TypeError(f"{type(explanation).__name__} is not an explanation result: missing {', '.join(missing)}")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.shape} {value.dtype}" if value.size > 8 else np.array2string(value, precision=4)
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:297] + "…"


def html_table(rows, header=None, *, escape: bool = True, cell_style: str = "", css_class: str = "") -> str:
    """An HTML table of ``rows`` (sequences of cells) under an optional ``header``. Cells are escaped unless
    ``escape=False`` (for cells that are HTML already, such as bars); the header always is. ``cell_style`` is inline
    CSS for every cell (for pages without a style sheet, such as the explorers).

    >>> html_table([("a", "<b>")], ("key", "value"))
    '<table><tr><th>key</th><th>value</th></tr><tr><td>a</td><td>&lt;b&gt;</td></tr></table>'
    """
    style = f" style='{cell_style}'" if cell_style else ""
    head = "".join(f"<th{style}>{html.escape(str(h))}</th>" for h in header or ())
    head = f"<tr>{head}</tr>" if header is not None else ""
    body = "".join("<tr>" + "".join(f"<td{style}>{html.escape(str(cell)) if escape else cell}</td>" for cell in row)
                   + "</tr>" for row in rows)
    classes = f" class='{css_class}'" if css_class else ""
    return f"<table{classes}>{head}{body}</table>"


def _share_bar(share) -> str:
    image, text = float(share.get("image", 0.0)), float(share.get("text", 0.0))
    total = image + text or 1.0
    parts = [("image", image / total, "#4e79a7"), ("text", text / total, "#f28e2b")]
    cells = "".join(f'<div style="width:{100 * part:.1f}%;background:{colour}">{name} {100 * part:.0f}%</div>'
                    for name, part, colour in parts if part > 0)
    return f'<div class="share">{cells}</div>'


def explanation_report_html(explanation, image, path=None, *, title: str | None = None, opacity: float = 0.6,
                            boxes=None, box_labels=None, figures=None, dpi: int = 110) -> str:
    """One self-contained HTML page for an explanation: the patch map over the original ``image``, the words
    coloured by score, the image/text share, box scores and the metadata. ``figures`` {caption: Figure} are
    embedded too. Written to ``path`` when given; the HTML is returned either way.

    ``explanation`` is anything with the fields of ``vle.explain.Explanation`` (patch_scores, box_scores, tokens,
    token_scores, words, word_scores, target.label, method, signed, metadata, modality_share)."""
    _check_explanation(explanation)
    label = str(getattr(explanation.target, "label", explanation.target))
    title = title or f"{explanation.method} explanation for “{label}”"
    signed = bool(explanation.signed)

    heat = plot_patch_relevance(explanation.patch_scores, image, signed=signed, opacity=opacity, boxes=boxes,
                                title=None)
    sections = [f"<h1>{html.escape(title)}</h1>",
                html_table([("target", label), ("method", explanation.method),
                        ("scores", "signed (red for, blue against)" if signed else "unsigned (brighter = more)")]),
                "<h2>Image</h2>", _img_tag(heat, f"patch relevance for {label}", dpi),
                '<p class="note">The model sees the centred square crop; dimmed areas were cut away.</p>']

    words, scores = explanation.words, explanation.word_scores
    if not len(words):  # no word grouping: fall back to the raw tokens
        words, scores = explanation.tokens, explanation.token_scores
    if len(words):
        sections += ["<h2>Text</h2>", f"<p>{token_spans_html(words, scores, signed=signed)}</p>"]

    sections += ["<h2>Share of relevance</h2>", _share_bar(explanation.modality_share)]

    box_scores = np.asarray(explanation.box_scores, dtype=np.float64).ravel()
    if box_scores.size:
        names = box_labels or [f"box {index}" for index in range(box_scores.size)]
        if len(names) != box_scores.size:
            raise ValueError(f"{len(names)} box labels but {box_scores.size} box scores")
        rows = [(n, f"{s:+.4f}") for n, s in zip(names, box_scores)]
        sections += ["<h2>Boxes</h2>", html_table(rows, ("box", "score"))]

    for caption, figure in (figures or {}).items():
        sections += [f"<h2>{html.escape(str(caption))}</h2>", _img_tag(figure, str(caption), dpi)]

    metadata = dict(explanation.metadata or {})
    if metadata:
        sections += ["<h2>Metadata</h2>", html_table([(key, _describe(value)) for key, value in metadata.items()])]

    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
    return page
