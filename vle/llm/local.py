"""A local LLM: any transformers causal language model, by hub id or folder, run in this process.

The prompt goes through the tokenizer's chat template when it has one (instruction-tuned models expect it) and is
used as plain text otherwise. ``temperature=0`` decodes greedily, so answers repeat. Only the new tokens come back.

>>> import tempfile
>>> from vle.llm.tiny import save_tiny_causal_lm
>>> backend = TransformersBackend(save_tiny_causal_lm(tempfile.mkdtemp(), always="B"))  # or a hub id / folder
>>> backend.generate("Answer with A or B.", max_tokens=2)
'B B'
"""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..loading import readable_loading_errors
from .backends import LLMError


class TransformersBackend:
    """``model`` is a hub id, a folder, or a loaded causal LM (then pass ``tokenizer`` too). ``chat_template``
    forces the template on or off; by default it is used when the tokenizer defines one."""

    def __init__(self, model, tokenizer=None, device=None, chat_template: bool | None = None, dtype=None):
        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            self.name = f"transformers model {source}"

            with readable_loading_errors(source, "language model"):
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
                model = AutoModelForCausalLM.from_pretrained(source, **({"dtype": dtype} if dtype else {}))
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a loaded model")
            self.name = f"transformers model {type(model).__name__}"
        self.model = model.to(device or "cpu").eval()
        self.tokenizer = tokenizer
        has_template = getattr(tokenizer, "chat_template", None) is not None
        self.chat_template = has_template if chat_template is None else bool(chat_template)
        self._torch = torch

    def encode(self, prompt: str) -> dict:
        """The model inputs for ``prompt``: input_ids and attention_mask (1, prompt_len)."""
        if self.chat_template:
            encoded = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                         add_generation_prompt=True, return_dict=True,
                                                         return_tensors="pt")
        else:
            encoded = self.tokenizer(prompt, return_tensors="pt")
        return {key: encoded[key].to(self.model.device) for key in ("input_ids", "attention_mask") if key in encoded}

    def generate(self, prompt: str, max_tokens: int = 64, temperature: float = 0.0) -> str:
        inputs = self.encode(prompt)
        prompt_len = inputs["input_ids"].shape[1]
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config,
                                                                                       "n_positions", None)
        if limit and prompt_len + max_tokens > limit:
            raise LLMError(f"the prompt has {prompt_len} tokens and {max_tokens} more were asked for, but "
                           f"{self.name} reads at most {limit}: shorten the prompt template or lower max_tokens")
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        sampling = {"do_sample": True, "temperature": float(temperature)} if temperature > 0 else {"do_sample": False}
        try:
            with self._torch.no_grad():
                output = self.model.generate(**inputs, max_new_tokens=int(max_tokens), pad_token_id=pad, **sampling)
        except (RuntimeError, ValueError, IndexError) as error:
            raise LLMError(f"{self.name} failed to generate: {error}") from error
        return self.tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
