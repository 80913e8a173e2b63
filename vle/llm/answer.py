"""The LLM half of VQA+LLM: candidates + caption + question → prompts → LLM → short and long answer.

``answer_with_llm`` needs no image and no VQA model, so a caller can change the caption, the candidates or the
template and ask again. Every step is kept in the frozen ``VQALLMResult``.

>>> vqa = [{"answer": "square", "score": 0.55}, {"answer": "circle", "score": 0.30}]
>>> result = answer_with_llm(lambda prompt, **settings: "B" if "Answer with" in prompt else "It is a circle.",
...                          "what shape is the blue object ?", "a large blue circle", vqa)
>>> result.short_answer, result.changed, result.long_answer
('circle', True, 'It is a circle.')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError, check_int, check_number, check_text
from .backends import LLMError
from .parsing import Choice, clean_reply, read_choice
from .prompt import DEFAULT_TEMPLATE, Candidate, PromptTemplate, letter_candidates
from .resolve import resolve_llm

SOURCES = ("letter", "answer text", "unparseable", "llm error")


@dataclass(frozen=True)
class VQALLMResult:
    """One VQA+LLM answer with every step that led to it.

    ``candidates`` are the VQA model's top answers, best first, lettered as the LLM saw them. ``prompt`` and
    ``reply`` are the exact short-answer prompt and the LLM's raw reply (None when the LLM could not be asked);
    ``long_prompt`` / ``long_reply`` likewise for the sentence (None when not asked). ``chosen`` indexes
    ``candidates``; ``source`` says how the short answer was read: "letter" or "answer text" from the reply, or a
    fallback to the VQA top answer: "unparseable" reply or "llm error" (then ``error`` says what went wrong).
    ``long_answer`` is the reply without reasoning blocks; it is free text, not limited to the candidates.
    """

    question: str
    caption: str
    candidates: tuple[Candidate, ...]
    prompt: str
    reply: str | None
    chosen: int
    source: str
    short_answer: str
    long_prompt: str | None = None
    long_reply: str | None = None
    long_answer: str | None = None
    error: str | None = None
    backend: str = ""

    def __post_init__(self):
        if not self.candidates:
            raise ValueError("a VQA+LLM result needs at least one VQA candidate")
        if not 0 <= self.chosen < len(self.candidates):
            raise ValueError(f"chosen={self.chosen} is not a candidate index (0..{len(self.candidates) - 1})")
        if self.short_answer != self.candidates[self.chosen].answer:
            raise ValueError(f"short_answer {self.short_answer!r} is not candidate {self.chosen} "
                             f"({self.candidates[self.chosen].answer!r})")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")
        if (self.reply is None) != (self.source == "llm error"):
            raise ValueError("reply is None exactly when the LLM could not be asked (source 'llm error')")
        if self.fell_back and self.chosen != 0:
            raise ValueError("a fallback keeps the VQA top answer (chosen=0)")

    @property
    def vqa_answer(self) -> str:
        """The VQA model's own top answer."""
        return self.candidates[0].answer

    @property
    def changed(self) -> bool:
        """Whether the LLM picked another candidate than the VQA model's top one."""
        return self.chosen != 0

    @property
    def fell_back(self) -> bool:
        return self.source in ("unparseable", "llm error")

    def to_dict(self) -> dict:
        """Plain JSON-ready values, with ``vqa_answer``, ``changed`` and ``fell_back`` added."""
        return {**asdict(self), "vqa_answer": self.vqa_answer, "changed": self.changed, "fell_back": self.fell_back}

    def format(self) -> str:
        """A readable report of every step (what the command line prints)."""
        ranked = "  ".join(f"{c.letter}) {c.answer} {c.score:.3f}" for c in self.candidates)
        chosen = self.candidates[self.chosen]
        if self.fell_back:
            how = f"VQA top answer kept: {self.source}"
        else:
            how = f"{chosen.letter}, " + (f"changed from the VQA top answer {self.vqa_answer!r}" if self.changed
                                         else "the VQA top answer")
        lines = [f"question:     {self.question}", f"caption:      {self.caption}", f"VQA top-k:    {ranked}",
                 f"backend:      {self.backend}", f"prompt:       {self.prompt}", f"reply:        {self.reply!r}",
                 f"short answer: {self.short_answer} ({how})"]
        if self.long_prompt is not None:
            lines += [f"long prompt:  {self.long_prompt}", f"long reply:   {self.long_reply!r}"]
        lines.append(f"long answer:  {self.long_answer}")
        if self.error:
            lines.append(f"error:        {self.error}")
        return "\n".join(lines)


def answer_with_llm(llm, question: str, caption: str, answers: list[dict],
                    template: PromptTemplate = DEFAULT_TEMPLATE, long_answer: bool = True,
                    short_max_tokens: int = 32, long_max_tokens: int = 96,
                    temperature: float = 0.0) -> VQALLMResult:
    """Ask ``llm`` (anything ``resolve_llm`` takes) to choose among ``answers`` (VQA output, best first) and to
    answer in a sentence. LLM failures (``LLMError``: timeouts, server errors after the retries, unreadable
    answers) do not raise: the VQA top answer is kept and the error recorded; the long answer is then not asked."""
    llm = resolve_llm(llm)
    check_text(question, "question")
    if not isinstance(caption, str):
        raise InputError(f"the caption must be a string, got {type(caption).__name__}")
    if not isinstance(template, PromptTemplate):
        raise InputError(f"template must be a PromptTemplate, got {type(template).__name__}")
    short_max_tokens = check_int(short_max_tokens, "short_max_tokens", low=1)
    long_max_tokens = check_int(long_max_tokens, "long_max_tokens", low=1)
    temperature = check_number(temperature, "temperature", low=0)
    candidates = letter_candidates(answers)
    prompt = template.render_short(caption, question, candidates)
    try:
        reply = llm.generate(prompt, max_tokens=short_max_tokens, temperature=temperature)
        choice = read_choice(reply, [c.answer for c in candidates])
        error = None
    except LLMError as failure:
        reply, choice, error = None, Choice(None, "llm error"), f"short answer: {failure}"
    chosen = 0 if choice.index is None else choice.index
    short = candidates[chosen].answer
    long_prompt = long_reply = long_text = None
    if long_answer and reply is not None:
        long_prompt = template.render_long(caption, question, candidates, short_answer=short)
        try:
            long_reply = llm.generate(long_prompt, max_tokens=long_max_tokens, temperature=temperature)
            long_text = clean_reply(long_reply) or None
        except LLMError as failure:
            error = f"long answer: {failure}"
    return VQALLMResult(question=question, caption=caption, candidates=candidates, prompt=prompt, reply=reply,
                        chosen=chosen, source=choice.how, short_answer=short, long_prompt=long_prompt,
                        long_reply=long_reply, long_answer=long_text, error=error,
                        backend=getattr(llm, "name", type(llm).__name__))
