"""Serving a rotary model past its trained context (`GPT.extend_context`, `model.load.serve_context`):
the trained positions are untouched, each scaling is the one `transformers` computes (so an export run
there with the same settings gives the same logits), and learned positions refuse."""

from __future__ import annotations

import pytest
import torch
import transformers

from londinium.config import ModelConfig
from londinium.errors import ConfigError
from londinium.model.gpt import GPT
from londinium.model.hf_layout import llama_config, to_llama_state_dict
from londinium.model.load import serve_context

LLAMA = dict(n_layer=2, n_head=4, n_embd=64, context=16, vocab_size=97, positions="rope", norm="rmsnorm",
             mlp="swiglu", bias=False, rope_theta=500.0)


def _model() -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**LLAMA)).eval()
    with torch.no_grad():  # norms away from 1 so every weight matters
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_extended_model_keeps_the_trained_positions_and_runs_past_them() -> None:
    model = _model()
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        before = model(idx)[0]
        serve_context(model, 64, "none")
        torch.testing.assert_close(model(idx)[0], before, atol=0, rtol=0)  # plain extrapolation: same table below 16
        assert model.config.context == 64 and model.trained_context == 16
        assert model(torch.randint(0, 97, (1, 64)))[0].shape == (1, 64, 97)
        with pytest.raises(Exception, match="longer than the model's context"):
            model(torch.randint(0, 97, (1, 65)))


@pytest.mark.parametrize("scaling,rope_parameters", [
    ("none", {"rope_type": "default", "rope_theta": 500.0}),
    ("linear", {"rope_type": "linear", "rope_theta": 500.0, "factor": 4.0}),
    # NTK-aware at a fixed context is a larger base: theta * factor^(d / (d - 2)), head_dim d = 16
    ("ntk", {"rope_type": "default", "rope_theta": 500.0 * 4.0 ** (16 / 14)}),
])
def test_each_scaling_gives_the_logits_transformers_gives_with_its_rope_parameters(scaling: str, rope_parameters: dict) -> None:
    model = _model()
    cfg = model.config
    hf = llama_config(cfg) | {"max_position_embeddings": 64, "rope_parameters": rope_parameters}
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf, bos_token_id=0, eos_token_id=0)).eval()
    missing, unexpected = theirs.load_state_dict(to_llama_state_dict(model.state_dict(), cfg), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    warning = serve_context(model, 64, scaling)
    assert warning and "16-63 were never trained" in warning and scaling in warning
    idx = torch.randint(0, 97, (2, 60))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=idx).logits, model(idx)[0], atol=1e-5, rtol=0)


def test_scalings_differ_past_the_trained_context() -> None:
    """The three tables are not one table under three names."""
    idx = torch.randint(0, 97, (1, 64))
    out = {}
    for scaling in ("none", "linear", "ntk"):
        model = _model()
        serve_context(model, 64, scaling)
        with torch.no_grad():
            out[scaling] = model(idx)[0][0, -1]
    assert not torch.allclose(out["none"], out["linear"]) and not torch.allclose(out["none"], out["ntk"])


def test_learned_positions_refuse_to_go_past_their_table_in_one_line() -> None:
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, context=16, vocab_size=97))  # GPT-2: learned positions
    with pytest.raises(ConfigError, match=r"serve\.context = 64: this model has learned positions") as e:
        serve_context(model, 64)
    assert "\n" not in str(e.value)
    assert serve_context(model, 8) is None and model.config.context == 8  # a shorter context is a smaller cache


def test_serving_at_the_trained_context_changes_nothing() -> None:
    model = _model()
    assert serve_context(model, 0) is None and serve_context(model, 16) is None
    assert model.config.context == 16 and model.rope_scaling == "none"
    with pytest.raises(ConfigError, match="rope scaling 'yarn'"):
        serve_context(model, 32, "yarn")
