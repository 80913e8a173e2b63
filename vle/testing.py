"""Tiny, deterministic stand-ins for tests, docstrings and benchmarks: a SentencePiece tokenizer trained on a small
corpus and a processor at 32 pixels. Nothing here touches the network."""

from __future__ import annotations

import functools
import os
import random
import tempfile

import torch
from transformers import DebertaV2Tokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .configuration_vle import VLEConfig
from .modeling_vle import VLEForVQA
from .pipelines import VLEForVQAPipeline
from .processing_vle import VLEProcessor
from .tokenization import train_sentencepiece

TINY_WORDS = ("a an the red green blue yellow purple orange circle square triangle object is are left right of above "
              "below what color shape size how many there yes no small large and nearest to farthest from because "
              "person car dog cat on in with who why where").split()


def tiny_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


@functools.lru_cache(maxsize=None)
def tiny_tokenizer_dir() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"vle-tiny-spm-{os.getpid()}")
    train_sentencepiece(tiny_corpus(), folder, vocab_size=100)
    return folder


def tiny_processor(image_size: int = 32):
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    return VLEProcessor(image_processor=image_processor, tokenizer=DebertaV2Tokenizer.from_pretrained(tiny_tokenizer_dir()))


def tiny_vqa_pipeline(answers=("red", "blue", "circle")):
    """A VQA pipeline on a tiny random model (answers mean nothing): for docstrings and tests."""

    torch.manual_seed(0)
    config = VLEConfig.tiny(id2label=dict(enumerate(answers)))
    return VLEForVQAPipeline(model=VLEForVQA(config).eval(), processor=tiny_processor())


def save_tiny_model(model_class, folder: str, seed: int = 0, **config_overrides):
    """Save a tiny random model of ``model_class`` with its processor into ``folder`` (a loadable checkpoint)."""

    torch.manual_seed(seed)
    model = model_class(VLEConfig.tiny(**config_overrides)).eval()
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return model
