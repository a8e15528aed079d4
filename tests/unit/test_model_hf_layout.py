"""Our weights load into the real `transformers` classes and give the same logits.

These protect the export: if a weight name, a fused-matrix row order, the RoPE layout or a norm
epsilon drifts from what GPT2LMHeadModel / LlamaForCausalLM expect, the logits differ here.
"""

from __future__ import annotations

import pytest
import torch
import transformers  # a dev dependency: these tests are the export contract, never skipped

from londinium.config import ModelConfig
from londinium.errors import ConfigError
from londinium.model.gpt import GPT
from londinium.model.hf_layout import gpt2_config, hf_layout, llama_config, to_gpt2_state_dict, to_llama_state_dict

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(model: GPT) -> GPT:
    # Fresh init has zero biases and unit norms, which would hide a bias or norm weight mapped to
    # the wrong place; give every parameter distinct values.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _load(hf_model: torch.nn.Module, state_dict: dict) -> None:
    missing, unexpected = hf_model.load_state_dict(state_dict, strict=False)
    # Only non-persistent buffers may be missing; every weight must be there and used.
    assert not unexpected, unexpected
    assert all("rotary" in k or k.endswith(".attn.bias") or k.endswith("masked_bias") for k in missing), missing


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_style_weights_give_gpt2lmheadmodel_the_same_logits(tied: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64, context=32, vocab_size=97, tie_embeddings=tied)
    ours = _perturbed(GPT(cfg))
    hf_cfg = transformers.GPT2Config(**gpt2_config(cfg), bos_token_id=0, eos_token_id=0)
    theirs = transformers.GPT2LMHeadModel(hf_cfg).eval()
    _load(theirs, to_gpt2_state_dict(ours.state_dict()))
    if tied:
        assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, cfg.vocab_size, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=idx).logits, ours(idx)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_head,tied,bias", [(2, False, False), (1, True, False), (4, False, True)])
def test_llama_style_weights_give_llamaforcausallm_the_same_logits(n_kv_head: int, tied: bool, bias: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64, context=32, vocab_size=97,
                      positions="rope", norm="rmsnorm", mlp="swiglu", bias=bias, tie_embeddings=tied,
                      rope_theta=500.0)  # a small theta makes every RoPE frequency matter over 20 positions
    ours = _perturbed(GPT(cfg))
    hf_cfg = transformers.LlamaConfig(**llama_config(cfg), bos_token_id=0, eos_token_id=0)
    theirs = transformers.LlamaForCausalLM(hf_cfg).eval()
    _load(theirs, to_llama_state_dict(ours.state_dict(), cfg))
    idx = torch.randint(0, cfg.vocab_size, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=idx).logits, ours(idx)[0], atol=1e-5, rtol=0)


def test_layout_maps_refuse_models_of_the_other_architecture() -> None:
    llama_like = ModelConfig(vocab_size=97, positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    with pytest.raises(ConfigError, match=r"model\.positions = 'rope'"):
        gpt2_config(llama_like)
    with pytest.raises(ConfigError, match="n_kv_head"):
        gpt2_config(ModelConfig(vocab_size=97, n_kv_head=2))
    with pytest.raises(ConfigError, match=r"model\.norm = 'layernorm'"):
        llama_config(ModelConfig(vocab_size=97, positions="rope", mlp="swiglu"))


def test_mixture_of_experts_loads_as_mixtral_from_its_published_layout(tmp_path) -> None:
    # Mixtral's published names (experts one by one) go through transformers' own load-time fusion,
    # so this proves both our routing and the layout vLLM and llama.cpp read.
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, context=32, vocab_size=97, positions="rope",
                      norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False, rope_theta=500.0,
                      n_experts=4, top_k=2)
    ours = _perturbed(GPT(cfg))
    layout = hf_layout(cfg)
    assert layout.architecture == "MixtralForCausalLM"
    transformers.MixtralConfig(**layout.config, bos_token_id=0, eos_token_id=0).save_pretrained(tmp_path)
    save_file(layout.state_dict(ours.state_dict()), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "MixtralForCausalLM"
    idx = torch.randint(0, cfg.vocab_size, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=idx).logits, ours(idx)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("switches,blocked", [
    (dict(positions="learned", norm="rmsnorm"), "model.norm = 'rmsnorm'"),
    (dict(positions="rope", norm="rmsnorm", mlp="gelu"), "model.mlp = 'gelu'"),
    (dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=True, n_experts=4), "model.bias = True"),
])
def test_a_config_that_maps_onto_nothing_names_its_blocking_switches(switches: dict, blocked: str) -> None:
    with pytest.raises(ConfigError) as e:
        hf_layout(ModelConfig(vocab_size=97, **switches))
    msg = str(e.value)
    assert blocked in msg and "GPT2LMHeadModel" in msg and "LlamaForCausalLM" in msg and "MixtralForCausalLM" in msg
    assert "\n" not in msg


def test_each_layout_is_chosen_for_its_switches() -> None:
    assert hf_layout(ModelConfig(vocab_size=97)).architecture == "GPT2LMHeadModel"
    llama = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
    assert hf_layout(ModelConfig(vocab_size=97, n_kv_head=2, **llama)).architecture == "LlamaForCausalLM"
    assert hf_layout(ModelConfig(vocab_size=97, bias=False, n_experts=4, **llama)).architecture == "MixtralForCausalLM"
