"""``VQAWithLLM``: the VQA pipeline's top-k candidates, a caption and the question go to an LLM, which picks the most
reasonable candidate (short answer) and phrases a sentence (long answer), as in VLE's VQA+LLM demo.

    image ──► VLEForVQA top-k ─┐
    image ──► captioner ───────┼─► PromptTemplate ──► LLM ──► read_choice ──► VQALLMResult
    question ──────────────────┘

Build one with ``vqa_with_llm`` (names and URLs) or the class (loaded parts). Call it like the VQA pipeline; the
answer is a ``VQALLMResult``. Pass ``caption=`` to skip the captioner.

>>> from vle.testing import tiny_vqa_pipeline
>>> vqa = tiny_vqa_pipeline()
>>> pipe = VQAWithLLM(vqa.model, vqa.processor, captioner=lambda image: "a red circle",
...                   llm=lambda prompt, **settings: "Answer: B")
>>> result = pipe(image=np.zeros((32, 32, 3), np.uint8), question="what color is the circle?", top_k=3)
>>> result.short_answer == result.candidates[1].answer, result.source
(True, 'letter')
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (used by the docstring example)

from ..errors import InputError, check_int, check_no_extra, check_number
from ..hub import resolve_model_path
from ..image_utils import load_image
from ..modeling_vle import VLEForVQA
from ..pipelines import VLEForVQAPipeline, device_of
from ..processing_vle import VLEProcessor
from .answer import VQALLMResult, answer_with_llm
from .captioners import resolve_captioner
from .prompt import DEFAULT_TEMPLATE, PromptTemplate
from .resolve import resolve_llm

DEFAULT_TOP_K = 4  # the demo's


class VQAWithLLM(VLEForVQAPipeline):
    """VQA + captioner + LLM. ``captioner``: ``image -> str``; ``llm``: anything ``resolve_llm`` takes;
    ``template``: the prompts (see ``vle.llm.prompt``). ``long_answer=False`` asks the LLM once instead of twice."""

    input_keys = ("image", "question")
    text_key = None  # each example asks the LLM on its own: a list runs one example at a time

    def __init__(self, model, processor, captioner, llm, template: PromptTemplate = DEFAULT_TEMPLATE,
                 long_answer: bool = True, short_max_tokens: int = 32, long_max_tokens: int = 96,
                 temperature: float = 0.0, **kwargs):
        if not callable(captioner):
            raise TypeError(f"the captioner must be callable as captioner(image) -> str, "
                            f"got {type(captioner).__name__}")
        if not isinstance(template, PromptTemplate):
            raise InputError(f"template must be a PromptTemplate, got {type(template).__name__}")
        self.captioner, self.llm, self.template = captioner, resolve_llm(llm), template
        self.llm_settings = {"long_answer": bool(long_answer),
                             "short_max_tokens": check_int(short_max_tokens, "short_max_tokens", low=1),
                             "long_max_tokens": check_int(long_max_tokens, "long_max_tokens", low=1),
                             "temperature": check_number(temperature, "temperature", low=0)}
        super().__init__(model, processor, **kwargs)

    def _sanitize_parameters(self, top_k=None, caption=None, template=None, **kwargs):
        check_no_extra(kwargs, type(self).__name__, ("top_k", "caption", "template"))
        if caption is not None and not isinstance(caption, str):
            raise InputError(f"caption must be a string, got {type(caption).__name__}")
        if template is not None and not isinstance(template, PromptTemplate):
            raise InputError(f"template must be a PromptTemplate, got {type(template).__name__}")
        top_k = DEFAULT_TOP_K if top_k is None else check_int(top_k, "top_k", low=1)
        return {}, {}, {"top_k": top_k, "caption": caption, "template": template}

    def preprocess(self, inputs):
        image = load_image(inputs["image"])
        return {**self.processor(text=inputs["question"], images=image), "_image": image,
                "_question": inputs["question"]}

    def postprocess(self, outputs, top_k: int = DEFAULT_TOP_K, caption: str | None = None,
                    template: PromptTemplate | None = None) -> VQALLMResult:
        answers = super().postprocess(outputs, top_k=top_k)
        if caption is None:
            caption = str(self.captioner(outputs["_image"]))
        return answer_with_llm(self.llm, outputs["_question"], caption, answers, template=template or self.template,
                               **self.llm_settings)


def vqa_with_llm(vqa: str = "vle-tiny-shapes-vqa", captioner=None, llm=None, device=None, template=DEFAULT_TEMPLATE,
                 llm_settings: dict | None = None, dtype="auto", **kwargs) -> VQAWithLLM:
    """Build the pipeline from names. ``vqa``: a shipped name, folder or hub id of a VQA model. ``captioner``:
    "shapes" (ITM over the shapes grammar), a captioning model id, or a callable; by default shapes for the shipped
    shapes models, else the demo's BLIP. ``llm``: a URL, a transformers model id/folder, a backend or a function;
    None reads VLE_LLM_BASE_URL etc. ``llm_settings`` go to the backend (``model``, ``api_key``, ``timeout``,
    ``retries`` ...). Raises ``LLMNotConfiguredError`` before loading anything when no LLM is configured."""

    backend = resolve_llm(llm, **(llm_settings or {}))
    path = resolve_model_path(vqa)
    model = VLEForVQA.from_pretrained(path, dtype=dtype, dtype_device=device_of(device))
    processor = VLEProcessor.from_pretrained(path)
    return VQAWithLLM(model.eval(), processor, captioner=resolve_captioner(captioner, vqa), llm=backend,
                      template=template, device=device, **kwargs)
