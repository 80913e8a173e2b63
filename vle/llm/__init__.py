"""VQA + LLM: the VQA model's candidates, a caption and the question go to an LLM, which picks a candidate and
answers in a sentence; every step is kept for inspection. See ``pipeline`` for the flow, ``prompt`` for the
template, ``backends`` / ``local`` for LLMs and ``captioners`` for captions.

    from vle.llm import vqa_with_llm
    pipe = vqa_with_llm(llm="http://127.0.0.1:8080/v1")   # or VLE_LLM_BASE_URL in the environment
    result = pipe(image="pics/shapes_0.png", question="what shape is the blue object ?")
    print(result.format())
"""

from .answer import VQALLMResult, answer_with_llm
from .backends import ChatCompletionsBackend, FunctionBackend, LLMError, LLMNotConfiguredError
from .captioners import ShapesCaptioner, TransformersCaptioner, resolve_captioner
from .local import TransformersBackend
from .parsing import Choice, read_choice
from .pipeline import VQAWithLLM, vqa_with_llm
from .prompt import DEFAULT_TEMPLATE, Candidate, PromptTemplate
from .resolve import resolve_llm

__all__ = [
    "DEFAULT_TEMPLATE", "Candidate", "ChatCompletionsBackend", "Choice", "FunctionBackend", "LLMError",
    "LLMNotConfiguredError", "PromptTemplate", "ShapesCaptioner", "TransformersBackend", "TransformersCaptioner",
    "VQALLMResult", "VQAWithLLM", "answer_with_llm", "read_choice", "resolve_captioner", "resolve_llm", "vqa_with_llm",
]
