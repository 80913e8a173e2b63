"""SentencePiece tokenizers in the DeBERTa-v3 layout ([PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3, [MASK] added last), so a
tokenizer trained here loads through the same DebertaV2Tokenizer class as the real checkpoints' ``spm.model``.

Example:
    >>> import tempfile
    >>> from vle.tokenization import train_sentencepiece
    >>> tok = train_sentencepiece(["a red circle", "a blue square"] * 50, tempfile.mkdtemp(), vocab_size=40)
    >>> tok.decode(tok("a red circle")["input_ids"], skip_special_tokens=True)
    'a red circle'
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterable

import sentencepiece as spm
from transformers import DebertaV2Tokenizer

SPECIAL_TOKENS = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]",
                  "bos_token": "[CLS]", "eos_token": "[SEP]", "mask_token": "[MASK]"}


def train_sentencepiece(sentences: Iterable[str], out_dir: str, vocab_size: int = 256, seed: int = 0,
                        model_type: str = "unigram"):
    """Train a SentencePiece model (``model_type``: unigram, bpe, word or char) on ``sentences`` and write
    ``spm.model`` plus the tokenizer files of the hfl checkpoints into ``out_dir``; returns the loaded
    DebertaV2Tokenizer. Deterministic for the same input."""

    os.makedirs(out_dir, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]", unk_id=3,
        unk_piece="[UNK]", character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        minloglevel=2,
    )
    with open(os.path.join(out_dir, "spm.model"), "wb") as handle:
        handle.write(model.getvalue())
    tokenizer_config = {"do_lower_case": False, "split_by_punct": False, "sp_model_kwargs": {}, "vocab_type": "spm",
                        "tokenizer_class": "DebertaV2Tokenizer", "model_max_length": 512, **SPECIAL_TOKENS}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as handle:
        json.dump(tokenizer_config, handle, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as handle:
        json.dump(SPECIAL_TOKENS, handle, indent=2)
    return DebertaV2Tokenizer.from_pretrained(out_dir)
