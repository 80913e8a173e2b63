"""A tiny GPT-2-shaped text-generation model with a word-level tokenizer, built offline: for tests and docstrings.

Its answers mean nothing, unless ``always`` rigs it: then greedy decoding repeats that one word, so a test can
check that a local model's reply travels through the VQA+LLM pipeline.

>>> import tempfile
>>> folder = save_tiny_causal_lm(tempfile.mkdtemp(), always="B")
>>> sorted(p for p in os.listdir(folder) if p.endswith(".json"))[:2]
['config.json', 'generation_config.json']
"""

from __future__ import annotations

import os  # noqa: F401  (used by the docstring example)

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from tokenizers.pre_tokenizers import Whitespace
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from .prompt import DEFAULT_TEMPLATE

SPECIALS = ("<unk>", "<eos>")
EXTRA_WORDS = ("A B C D E yes no 0 1 2 3 4 5 6 red green blue yellow purple orange circle square triangle small "
               "large object objects left right above below of is a an the it there are . , : ; ? ' ( )").split()


def tiny_vocabulary() -> list[str]:
    """Special tokens, the words of the default prompts and the shapes world's answers (order fixed)."""

    words = list(EXTRA_WORDS)
    for text in (DEFAULT_TEMPLATE.short, DEFAULT_TEMPLATE.long):
        words += [piece for piece, _ in Whitespace().pre_tokenize_str(text) if "{" not in piece and "}" not in piece]
    return list(SPECIALS) + sorted(set(words) - set(SPECIALS))


def save_tiny_causal_lm(folder: str, always: str | None = None, seed: int = 0) -> str:
    """Save a random two-layer GPT-2 (16-wide) and its tokenizer into ``folder``; returns the folder.
    ``always``: a vocabulary word the model then predicts after every prompt (greedy)."""

    vocabulary = {word: i for i, word in enumerate(tiny_vocabulary())}
    if always is not None and always not in vocabulary:
        raise ValueError(f"{always!r} is not in the tiny vocabulary")
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>",
                                        pad_token="<eos>", model_max_length=512)
    torch.manual_seed(seed)
    eos = vocabulary["<eos>"]
    config = GPT2Config(vocab_size=len(vocabulary), n_positions=512, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    if always is not None:
        with torch.no_grad():
            # Final hidden state := e_0 whatever the input; only the rigged word has a non-zero first coordinate in
            # the (tied) output embedding, so it wins every greedy step.
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.zero_()
            model.transformer.ln_f.bias[0] = 1.0
            model.transformer.wte.weight[:, 0] = 0.0
            model.transformer.wte.weight[vocabulary[always], 0] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
