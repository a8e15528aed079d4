"""Small models for the export tests: random weights made distinct, with a workspace tokenizer."""

from __future__ import annotations

import gguf
import torch

from londinium.config import Config, ModelConfig
from londinium.model.gpt import GPT
from londinium.model.load import TrainedModel
from londinium.tokenizer.codec import load_tokenizer

LLAMA_GQA = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=32, positions="rope", norm="rmsnorm",
                 mlp="swiglu", bias=False, tie_embeddings=False, rope_theta=500.0)  # small theta: every frequency matters
GPT2 = dict(n_layer=2, n_head=4, n_embd=64, context=32)

# whitespace runs, accents, long s, emoji with joiners, digits, control-token text
HARD_STRINGS = [
    "Thus saith the Lord.",
    "  leading spaces,\ttabs and\n\nblank lines   ",
    "Ægypt, naïve café, ſhall, Æsop's",
    "emoji 👑🗡️ and joiners 👨‍👩‍👧",
    "a literal <|endoftext|> typed as text, and <|user|> too",
    "1599, 1600 and 123456789",
]


def trained_model(ws, **model: object) -> TrainedModel:
    """A random model with perturbed weights (fresh init's zero biases and unit norms would hide a
    misplaced bias or norm) and the workspace tokenizer, as `load_run` would return it."""
    tok = load_tokenizer(ws)
    cfg = ModelConfig(**{"vocab_size": tok.get_vocab_size(), **model})
    torch.manual_seed(0)
    net = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    config = Config()
    config.model = cfg
    return TrainedModel(net.eval(), tok, config, checkpoint=None, run="test", device=torch.device("cpu"), tokenizer_sha256="")


def round_to_file_dtype(trained: TrainedModel, dtype: str) -> None:
    """Round the weights the file stores in `dtype` (matrices other than the position embedding)
    to what it stores, so that writing them loses nothing."""
    if dtype == "float32":
        return
    qtype = gguf.GGMLQuantizationType.Q8_0
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if p.ndim < 2 or name == "transformer.wpe.weight":
                continue
            if dtype == "float16":
                p.copy_(p.half().float())
            else:
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(p.numpy(), qtype), qtype)))
