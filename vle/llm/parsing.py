"""Reading the LLM's short reply back as one of the VQA candidates.

LLMs rarely answer with a bare letter. The rules below are tried in order; the first that names exactly one
candidate wins, and a reply no rule can read is ``unparseable`` (the pipeline then keeps the VQA top answer).

1. The reply is a letter or starts with one set off by punctuation: ``B``, ``b)``, ``(C) red``, ``**D**: blue``.
2. A keyword introduces a letter: ``The answer is C``, ``I choose option B``, ``Answer: (d)``.
3. The reply names one candidate's answer and no other: ``blue``, ``There are 2 triangles.``
4. Exactly one candidate letter stands alone somewhere, not counting "A" used as an article ("A red square ...").

Reasoning blocks (``<think>...</think>``) are dropped first, also an unclosed one (a reply cut off mid-thought).

>>> answers = ["circle", "square", "triangle", "red"]
>>> read_choice("The answer is **C**.", answers)
Choice(index=2, how='letter')
>>> read_choice("square", answers)
Choice(index=1, how='answer text')
>>> read_choice("A red square is shown.", answers)
Choice(index=None, how='unparseable')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .prompt import LETTERS

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_MARKUP = re.compile(r"[*_`#]")
_LEADING_LETTER = re.compile(r"^\W*([A-Za-z])\s*(?:[).:\]\-,]|$)")
_KEYWORD_LETTER = re.compile(
    r"\b(?:answer|option|choice|choose|chose|pick|select|letter)\b(?:\s+(?:is|would be|will be|should be))?"
    r"\s*[:\-]?\s*\(?\s*(?:(?-i:([A-Z]))\b|([a-z])(?=[).:,]|\s*$))", re.I)
_LONE_LETTER = re.compile(r"(?<![\w'])([A-Z])(?![\w])")


@dataclass(frozen=True)
class Choice:
    """``index`` into the candidates (None when unreadable) and which rule read it: letter, answer text,
    unparseable."""

    index: int | None
    how: str


def clean_reply(reply: str | None) -> str:
    """The reply without reasoning blocks and surrounding white space ('' for None)."""
    return _THINK.sub(" ", reply or "").strip()


def read_choice(reply: str | None, answers: Sequence[str]) -> Choice:
    """Which of ``answers`` (best VQA candidate first, lettered A, B, ...) the reply chooses."""
    text = _MARKUP.sub("", clean_reply(reply)).strip()
    letters = LETTERS[:len(answers)]

    def by_letter(letter: str) -> Choice | None:
        letter = letter.upper()
        return Choice(letters.index(letter), "letter") if letter in letters else None

    leading = _LEADING_LETTER.match(text)
    if leading and (found := by_letter(leading.group(1))):
        return found
    keyword = _KEYWORD_LETTER.search(text)
    if keyword and (found := by_letter(keyword.group(1) or keyword.group(2))):
        return found
    mentioned = _mentioned_answers(text, answers)
    if len(mentioned) == 1:
        return Choice(mentioned[0], "answer text")
    lone = {m.group(1) for m in _LONE_LETTER.finditer(text)
            if m.group(1) in letters and not _is_article(text, m)}
    if len(lone) == 1:
        return by_letter(lone.pop())
    return Choice(None, "unparseable")


def _mentioned_answers(text: str, answers: Sequence[str]) -> list[int]:
    """Indices of the distinct answers the text names as whole words (an exact reply counts even if others match)."""
    lowered = text.lower().strip(" .!\"'")
    exact = [i for i, answer in enumerate(answers) if lowered == answer.lower()]
    if exact:
        return exact[:1]
    found, seen = [], set()
    for i, answer in enumerate(answers):
        key = answer.lower()
        if key not in seen and re.search(rf"(?<!\w){re.escape(key)}(?!\w)", lowered):
            found.append(i)
            seen.add(key)
    return found


_NOT_AFTER_ARTICLE = frozenset("or and is was seems looks fits matches because since but then".split())


def _is_article(text: str, match: re.Match) -> bool:
    # "A red square" and "I think" use the letter as a word; "A or B" and "A is right" do not.
    following = re.match(r"\s+([a-z]+)", text[match.end():])
    return match.group(1) in "AI" and following is not None and following.group(1) not in _NOT_AFTER_ARTICLE
