"""Size, FLOPs and memory computed from the config agree with the model PyTorch actually builds and
runs; `londinium model info` prints them for the workspace's real vocabulary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from londinium.cli import main
from londinium.config import PRESETS, ModelConfig, load_config
from londinium.model.gpt import GPT
from londinium.model.info import activation_elements_per_token, memory_estimate, param_counts
from londinium.workspace import Workspace

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(n_layer=2, n_head=4, n_embd=128, context=64, vocab_size=512)
VARIANTS = {
    "gpt2": ModelConfig(**SMALL),
    "gpt2-untied-nobias": ModelConfig(**SMALL, tie_embeddings=False, bias=False),
    "rope-mha": ModelConfig(**SMALL, positions="rope"),
    "learned-gqa": ModelConfig(**SMALL, n_kv_head=2),
    "llama": ModelConfig(**SMALL, positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False, tie_embeddings=False),
    "llama-bias": ModelConfig(**SMALL, positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, mlp_ratio=3.0),
    "dropout": ModelConfig(**SMALL, dropout=0.1),
    "moe": ModelConfig(**SMALL, n_experts=4, top_k=2),
    "moe-swiglu-top1": ModelConfig(**SMALL, n_experts=3, top_k=1, mlp="swiglu"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_param_counts_from_the_config_equal_the_built_model(name: str) -> None:
    cfg = VARIANTS[name]
    model = GPT(cfg)
    counts = param_counts(cfg)
    assert counts.total == model.num_params()
    assert counts.non_embedding == model.num_params(non_embedding=True)


def test_moe_flops_count_only_the_experts_a_token_visits() -> None:
    dense, moe = VARIANTS["gpt2"], VARIANTS["moe"]
    model = GPT(moe)
    expert = sum(p.numel() for p in model.transformer.h[0].mlp.experts[0].parameters())
    router = moe.n_embd * moe.n_experts
    # Each of n_layer layers has 4 experts and a router, but a token only runs 2 experts.
    assert param_counts(moe).matmul == param_counts(dense).matmul + moe.n_layer * (router + (2 - 1) * expert)
    assert param_counts(moe).total == param_counts(dense).total + moe.n_layer * (router + (4 - 1) * expert)


def _saved_bytes_per_token(model: GPT, batch: int, seq: int) -> float:
    """Bytes of the distinct non-parameter tensors autograd keeps for backward, per token."""
    storages: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    idx = torch.randint(0, model.config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(idx, idx)
    return sum(n for ptr, n in storages.items() if ptr not in params) / (batch * seq)


@pytest.mark.parametrize("name", VARIANTS)
def test_activation_estimate_matches_what_autograd_saves(name: str) -> None:
    cfg = VARIANTS[name]
    torch.manual_seed(0)
    measured = _saved_bytes_per_token(GPT(cfg), batch=4, seq=cfg.context)
    estimate = activation_elements_per_token(cfg) * 4
    # MoE routing varies with the data (tokens per expert), so it gets a looser bound.
    assert estimate == pytest.approx(measured, rel=0.05 if cfg.n_experts else 0.02)


def test_memory_estimate_adds_weights_grads_adamw_and_batch_activations() -> None:
    cfg = VARIANTS["llama"]
    mem = memory_estimate(cfg, batch_size=3)
    n = GPT(cfg).num_params()
    assert (mem.weights, mem.grads, mem.optimizer) == (4 * n, 4 * n, 8 * n)
    assert mem.batch_tokens == 3 * cfg.context
    assert mem.training_total == 16 * n + mem.activations_per_token * 3 * cfg.context
    assert memory_estimate(cfg, 3, dtype_bytes=2).activations_per_token == pytest.approx(mem.activations_per_token / 2, abs=1)


def test_kv_cache_estimate_equals_the_bytes_of_a_real_cache() -> None:
    cfg = VARIANTS["llama"]
    cache = GPT(cfg).new_kv_cache(batch_size=1, max_len=10)
    real = sum(t.numel() * t.element_size() for t in [*cache.k, *cache.v])
    assert memory_estimate(cfg, 1).kv_cache_per_token * 10 == real


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_valid_models(preset: str) -> None:
    cfg = load_config(preset=preset)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
    counts = param_counts(model_cfg)  # validates the shape; building `regular` here would cost 1.3 GB
    assert counts.total > counts.non_embedding > 0


def test_slm_preset_has_gpt2_small_shape() -> None:
    model = load_config(preset="slm").model
    assert (model.n_layer, model.n_head, model.n_embd) == (12, 12, 768)
    # GPT-2 small's 85M non-embedding parameters (its 124M total includes 39M of vocabulary).
    assert param_counts(dataclasses.replace(model, vocab_size=50257)).non_embedding == 85_056_000


# ---- the CLI -------------------------------------------------------------------------------------


def _train_tokenizer(path: Path, vocab_size: int) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(["To be, or not to be, that is the question"] * 50 + ["Whether 'tis nobler in the mind to suffer"] * 50, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok.get_vocab_size()


def test_model_info_prints_true_params_for_the_workspace_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ws = Workspace(tmp_path / "ws")
    vocab = _train_tokenizer(ws.tokenizer_file, 300)
    assert main(["model", "info", "--preset", "tiny", "-w", str(ws.root)]) == 0
    out = capsys.readouterr().out
    tiny = load_config(preset="tiny").model
    expected = GPT(dataclasses.replace(tiny, vocab_size=vocab)).num_params()
    assert f"vocabulary {vocab:,}" in out and str(ws.tokenizer_file) in out
    assert f"{expected:,}" in out
    for line in ("non-embedding", "FLOPs/token", "weights", "AdamW state", "per token", "KV cache per token"):
        assert line in out


def test_model_info_without_a_tokenizer_uses_the_configured_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["model", "info", "--preset", "slm", "-w", str(tmp_path), "--set", "tokenizer.vocab_size=1000"]) == 0
    out = capsys.readouterr().out
    assert "vocabulary 1,000" in out and "tokenizer.vocab_size" in out
    expected = param_counts(dataclasses.replace(load_config(preset="slm").model, vocab_size=1000)).total
    assert f"{expected:,}" in out


def test_model_info_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["model", "info", "-w", str(tmp_path), "--set", "model.n_kv_head=4"]) == 2
    assert "model.n_kv_head" in capsys.readouterr().err
