"""The prompts sent to the LLM: a documented, overridable template over caption, question and VQA candidates.

The default follows the public VQA+LLM demo (hfl/VQA_VLE_LLM, see the spec §6): the caption, the question and the
VQA model's top candidates with their scores, lettered A, B, C, ...; the short prompt asks for one letter, the long
prompt for the answer in a sentence.

Placeholders a template may use:

==================  =========================================================================================
``{caption}``       the captioner's text, without a trailing full stop
``{question}``      the question as asked
``{candidates}``    every candidate written with ``PromptTemplate.candidate``, joined by ``separator``
``{first}``         the letter of the VQA model's top candidate ("A")
``{others}``        the other letters in words ("B, C or D")
``{letters}``       all letters in words ("A, B, C or D")
``{letters_or}``    all letters as the demo wrote them ("A or B or C or D")
``{n}``             the number of candidates
``{short_answer}``  the short answer already chosen (the long prompt only; the default leaves it out, as the
                    demo did, so the long answer is the LLM's own)
==================  =========================================================================================

>>> candidates = [Candidate("A", "circle", 0.61), Candidate("B", "square", 0.3)]
>>> print(DEFAULT_TEMPLATE.render_short("a large blue circle.", "what shape is the blue object ?", candidates))
This is the caption of a picture: a large blue circle. Question: what shape is the blue object ? VQA model \
predicts: A: circle score: 0.61 B: square score: 0.30 Choose A if it is not in conflict with the description of \
the picture and A's score is bigger than 0.8; otherwise choose B based on the description. Answer with A or B.
>>> terse = PromptTemplate(short="{caption}; {question} {candidates}. Reply {letters}.")
>>> terse.render_short("a red square", "is there a red square ?", candidates)
'a red square; is there a red square ? A: circle score: 0.61 B: square score: 0.30. Reply A or B.'
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from ..errors import InputError, check_number

LETTERS = string.ascii_uppercase
PREFIX = "This is the caption of a picture: {caption}. Question: {question} VQA model predicts: {candidates}"
SHORT = (PREFIX + " Choose {first} if it is not in conflict with the description of the picture and {first}'s score "
         "is bigger than 0.8; otherwise choose {others} based on the description. Answer with {letters_or}.")
LONG = PREFIX + " Tell me the right answer with a long sentence."
PLACEHOLDERS = ("caption", "question", "candidates", "first", "others", "letters", "letters_or", "n")


@dataclass(frozen=True)
class Candidate:
    """One VQA candidate as the LLM sees it: its letter, the answer label and the VQA softmax score."""

    letter: str
    answer: str
    score: float


def letter_candidates(answers: list[dict]) -> tuple[Candidate, ...]:
    """VQA pipeline output ``[{"answer", "score"}, ...]`` (best first) → lettered candidates."""
    if isinstance(answers, dict) or not isinstance(answers, (list, tuple)):
        raise InputError(f"the VQA answers must be a list of {{'answer', 'score'}} dicts, best first; got "
                         f"{type(answers).__name__}")
    if not answers:
        raise InputError("the VQA model gave no candidates")
    if len(answers) > len(LETTERS):
        raise InputError(f"at most {len(LETTERS)} candidates can be lettered, got {len(answers)}: lower top_k")
    for index, answer in enumerate(answers):
        if not isinstance(answer, dict) or "answer" not in answer or "score" not in answer:
            raise InputError(f"VQA answer {index} must be a dict with 'answer' and 'score', got {str(answer)[:60]}")
        check_number(answer["score"], f"the score of VQA answer {index}", low=0, high=1)
    return tuple(Candidate(LETTERS[i], str(a["answer"]), float(a["score"])) for i, a in enumerate(answers))


def in_words(letters: list[str], conjunction: str = "or") -> str:
    """['B', 'C', 'D'] → 'B, C or D'."""
    if len(letters) <= 1:
        return "".join(letters)
    return f"{', '.join(letters[:-1])} {conjunction} {letters[-1]}"


@dataclass(frozen=True)
class PromptTemplate:
    """The short-answer and long-answer prompts and how one candidate is written. Override any field, e.g.
    ``PromptTemplate(long="... {short_answer} ...")``; unknown placeholders are an error when the template is made.
    The placeholders are listed in the module docstring."""

    short: str = SHORT
    long: str = LONG
    candidate: str = "{letter}: {answer} score: {score:.2f}"
    separator: str = " "

    def __post_init__(self):
        sample = (Candidate("A", "yes", 0.9), Candidate("B", "no", 0.1))
        for name in ("short", "long", "candidate"):
            try:
                if name == "candidate":
                    self.candidate.format(letter="A", answer="yes", score=0.5)
                else:
                    self._render(getattr(self, name), "a caption", "a question?", sample, short_answer="yes")
            except (KeyError, IndexError, ValueError) as error:
                fields = "letter, answer, score" if name == "candidate" else ", ".join(PLACEHOLDERS + ("short_answer",))
                raise ValueError(f"the {name} template {getattr(self, name)!r} does not format ({error!r}); "
                                 f"placeholders it may use: {fields}") from None

    def render_short(self, caption: str, question: str, candidates) -> str:
        return self._render(self.short, caption, question, candidates)

    def render_long(self, caption: str, question: str, candidates, short_answer: str = "") -> str:
        return self._render(self.long, caption, question, candidates, short_answer=short_answer)

    def _render(self, template: str, caption: str, question: str, candidates, **extra) -> str:
        letters = [c.letter for c in candidates]
        written = self.separator.join(
            self.candidate.format(letter=c.letter, answer=c.answer, score=c.score) for c in candidates)
        return template.format(
            caption=caption.strip().rstrip(".").strip(), question=question.strip(), candidates=written,
            first=letters[0], others=in_words(letters[1:]), letters=in_words(letters),
            letters_or=" or ".join(letters), n=len(candidates), **extra)


DEFAULT_TEMPLATE = PromptTemplate()
