"""Small real pieces for evaluation tests: a BPE tokenizer trained on period text and a random GPT.

The tokenizer is the real byte-level BPE of `londinium.tokenizer.train` trained on the fixture
corpus of `tok_fixtures` (KJV, Shakespeare, Folio, Milton lines); the model is the real
`londinium.model.gpt.GPT`, tiny and with random weights, so tests run in a second on a CPU.
"""

from __future__ import annotations

import functools

import pytest
import torch

from londinium.config import ModelConfig
from londinium.model.gpt import GPT
from londinium.tokenizer.codec import encode, encode_batch, eot_id
from londinium.tokenizer.train import train_bpe

from tok_fixtures import corpus_texts


@functools.cache
def tokenizer():
    return train_bpe(corpus_texts(), vocab_size=400, min_frequency=2, show_progress=False)


def tiny_gpt(context: int = 32, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, context=context, vocab_size=tokenizer().get_vocab_size(), **overrides)
    return GPT(cfg).eval()


def enc(text: str) -> list[int]:
    return encode(tokenizer(), text)


def enc_batch(texts: list[str]) -> list[list[int]]:
    return encode_batch(tokenizer(), texts)


def bos() -> int:
    return eot_id(tokenizer())


@pytest.fixture(autouse=True)
def one_thread_no_grad():
    """Tiny models run fastest on one thread, and on a shared, loaded CPU two threads can be 50x
    slower (spin-waiting OpenMP workers). Restored after each test. Active in modules importing it."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(prev)
