"""Small GPTs with random weights and a real byte-level BPE, shared by the engine and scheduler tests."""

from __future__ import annotations

import torch
from tok_fixtures import corpus_texts

from londinium.config import ModelConfig
from londinium.model.gpt import GPT
from londinium.tokenizer.train import train_bpe


def make_tokenizer():
    return train_bpe(corpus_texts() * 3, 400, show_progress=False)


def make_model(tok, positions: str = "learned", n_kv_head: int = 0, seed: int = 0, context: int = 64) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32, context=context, vocab_size=tok.get_vocab_size(),
                      positions=positions, norm="rmsnorm" if positions == "rope" else "layernorm",
                      mlp="swiglu" if positions == "rope" else "gelu")
    return GPT(cfg).eval()
