"""`londinium.model.from_hf`: an export's config and weights come back as exactly the model exported,
for each layout (GPT-2, Llama with grouped-query attention, Mixtral), and foreign configs are refused."""

from __future__ import annotations

import pytest
import torch

from londinium.config import ModelConfig
from londinium.model.from_hf import ExportError, from_hf_state_dict, model_config_from_hf
from londinium.model.gpt import GPT
from londinium.model.hf_layout import hf_layout

LAYOUTS = {
    "gpt2": ModelConfig(n_layer=2, n_head=2, n_embd=32, context=16, vocab_size=50),
    "llama": ModelConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=16, vocab_size=50, positions="rope",
                         norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False, rope_theta=5e4),
    "mixtral": ModelConfig(n_layer=2, n_head=4, n_embd=64, context=16, vocab_size=50, positions="rope", norm="rmsnorm",
                           mlp="swiglu", bias=False, n_experts=4, top_k=2),
}


def exported(cfg: ModelConfig) -> tuple[GPT, dict, dict]:
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    layout = hf_layout(cfg)
    weights = layout.state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    if cfg.tie_embeddings:
        weights.pop("lm_head.weight", None)  # as the exporter writes it
    return model, {"model_type": layout.model_type, **layout.config}, weights


@pytest.mark.parametrize("kind", LAYOUTS)
def test_an_export_loads_back_into_the_same_model(kind) -> None:
    model, config, weights = exported(LAYOUTS[kind])
    cfg = model_config_from_hf(config)
    back = GPT(cfg).eval()
    back.load_state_dict(from_hf_state_dict(cfg, weights))
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    x = torch.randint(0, 50, (2, 16))
    assert torch.equal(back(x)[0], model(x)[0])


def test_a_config_that_is_not_ours_is_refused_with_the_key() -> None:
    _, config, weights = exported(LAYOUTS["gpt2"])
    with pytest.raises(ExportError, match="activation_function"):
        model_config_from_hf({**config, "activation_function": "relu"})
    with pytest.raises(ExportError, match="model_type 'bert'"):
        model_config_from_hf({**config, "model_type": "bert"})
    cfg = model_config_from_hf(config)
    with pytest.raises(ExportError, match="missing"):
        from_hf_state_dict(cfg, {k: v for k, v in weights.items() if "h.1.attn.c_attn" not in k})
    with pytest.raises(ExportError, match="shape"):
        from_hf_state_dict(cfg, {**weights, "transformer.wte.weight": torch.zeros(3, 3)})
