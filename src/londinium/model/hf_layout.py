"""How our weights map onto `transformers`' GPT2LMHeadModel, LlamaForCausalLM and MixtralForCausalLM.

Pure functions from our config and state dict to the `transformers` config keywords and state
dict; the exporter writes what they return, and `tests/unit/test_model_hf_layout.py` proves each map
by loading it into the real `transformers` class and comparing logits.

GPT-2 style (learned positions, LayerNorm, GELU, multi-head, bias): same names as GPT-2; GPT-2's
Conv1D stores weights as [in, out], so the four projection matrices are transposed.

Llama style (RoPE, RMSNorm, SwiGLU, any n_kv_head, no bias):

    transformer.wte.weight              model.embed_tokens.weight
    transformer.h.{i}.ln_1.weight       model.layers.{i}.input_layernorm.weight
    transformer.h.{i}.attn.c_attn.*     model.layers.{i}.self_attn.{q,k,v}_proj.*   rows [q | k | v]
    transformer.h.{i}.attn.c_proj.*     model.layers.{i}.self_attn.o_proj.*
    transformer.h.{i}.ln_2.weight       model.layers.{i}.post_attention_layernorm.weight
    transformer.h.{i}.mlp.c_fc.*        model.layers.{i}.mlp.{gate,up}_proj.*       rows [gate | up]
    transformer.h.{i}.mlp.c_proj.*      model.layers.{i}.mlp.down_proj.*
    transformer.ln_f.weight             model.norm.weight
    lm_head.weight                      lm_head.weight

RoPE uses the rotate_half layout that `transformers` uses, so q/k rows need no permutation.

Mixture of experts (Llama style with n_experts > 0, no bias) as Mixtral, which routes exactly as we
do (softmax over the router's logits, top-k, renormalise the k weights). The weights are written in
Mixtral's published layout, the one vLLM and llama.cpp's converter read (transformers 5 fuses the
experts into `gate_up_proj` / `down_proj` itself when it loads them):

    transformer.h.{i}.mlp.router.weight             model.layers.{i}.block_sparse_moe.gate.weight
    transformer.h.{i}.mlp.experts.{e}.c_fc.weight   ...block_sparse_moe.experts.{e}.{w1 | w3}.weight  rows [gate | up]
    transformer.h.{i}.mlp.experts.{e}.c_proj.weight ...block_sparse_moe.experts.{e}.w2.weight

`hf_layout(cfg)` picks the architecture a config maps onto, or says which switches block each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from londinium.config import ModelConfig
from londinium.errors import ConfigError
from londinium.model.gpt import kv_heads, mlp_hidden

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _require(cfg: ModelConfig, arch: str, **wanted: object) -> None:
    wrong = [f"model.{k} = {getattr(cfg, k)!r} (needs {v!r})" for k, v in wanted.items() if getattr(cfg, k) != v]
    if wrong:
        raise ConfigError(f"this model does not have the {arch} layout: " + "; ".join(wrong))


def gpt2_config(cfg: ModelConfig) -> dict:
    """Keyword arguments for `transformers.GPT2Config` describing a GPT-2 style model."""
    _require(cfg, "GPT-2", positions="learned", norm="layernorm", mlp="gelu", bias=True, n_experts=0)
    if kv_heads(cfg) != cfg.n_head:
        raise ConfigError("this model does not have the GPT-2 layout: GPT-2 has no grouped-query attention (set model.n_kv_head = 0)")
    return dict(vocab_size=cfg.vocab_size, n_positions=cfg.context, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                n_head=cfg.n_head, n_inner=mlp_hidden(cfg), activation_function="gelu_new",
                layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout)


def to_gpt2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our GPT-2 style state dict in GPT2LMHeadModel's layout (names equal, Conv1D weights transposed)."""
    return {k: (v.t().contiguous() if k.endswith(_CONV1D) else v) for k, v in state_dict.items()}


def llama_config(cfg: ModelConfig) -> dict:
    """Keyword arguments for `transformers.LlamaConfig` describing a Llama style model."""
    _require(cfg, "Llama", positions="rope", norm="rmsnorm", mlp="swiglu", n_experts=0)
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=mlp_hidden(cfg),
                num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=kv_heads(cfg),
                head_dim=cfg.n_embd // cfg.n_head, max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps,
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                attention_bias=cfg.bias, mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings,
                attention_dropout=cfg.dropout, hidden_act="silu")


def to_llama_state_dict(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our Llama style state dict in LlamaForCausalLM's names (fused c_attn and c_fc split by rows)."""
    out = _llama_attention_and_norms(state_dict, cfg)
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            gate, up = state_dict[ours + f"mlp.c_fc.{kind}"].chunk(2, dim=0)
            out.update({theirs + f"mlp.gate_proj.{kind}": gate, theirs + f"mlp.up_proj.{kind}": up,
                        theirs + f"mlp.down_proj.{kind}": state_dict[ours + f"mlp.c_proj.{kind}"]})
    return {k: v.contiguous() for k, v in out.items()}


def _llama_attention_and_norms(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Embeddings, norms and attention in Llama's names (shared by Llama and Mixtral)."""
    head_dim = cfg.n_embd // cfg.n_head
    qkv_rows = [cfg.n_head * head_dim, kv_heads(cfg) * head_dim, kv_heads(cfg) * head_dim]
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": state_dict["transformer.wte.weight"],
        "model.norm.weight": state_dict["transformer.ln_f.weight"],
        "lm_head.weight": state_dict["lm_head.weight"],
    }
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = state_dict[ours + "ln_1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = state_dict[ours + "ln_2.weight"]
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = state_dict[ours + f"attn.c_attn.{kind}"].split(qkv_rows, dim=0)
            out.update({theirs + f"self_attn.q_proj.{kind}": q, theirs + f"self_attn.k_proj.{kind}": k,
                        theirs + f"self_attn.v_proj.{kind}": v,
                        theirs + f"self_attn.o_proj.{kind}": state_dict[ours + f"attn.c_proj.{kind}"]})
    return out


def mixtral_config(cfg: ModelConfig) -> dict:
    """Keyword arguments for `transformers.MixtralConfig` describing a mixture-of-experts model."""
    _require(cfg, "Mixtral", positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    if cfg.n_experts < 1:
        raise ConfigError("this model does not have the Mixtral layout: it has a dense MLP (model.n_experts = 0)")
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=mlp_hidden(cfg),
                num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=kv_heads(cfg),
                head_dim=cfg.n_embd // cfg.n_head, max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps,
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.top_k, router_jitter_noise=0.0,
                router_aux_loss_coef=cfg.aux_loss_weight, sliding_window=None,
                tie_word_embeddings=cfg.tie_embeddings, attention_dropout=cfg.dropout, hidden_act="silu")


def to_mixtral_state_dict(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our mixture-of-experts state dict in Mixtral's published names (experts one by one)."""
    out = _llama_attention_and_norms(state_dict, cfg)
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.mlp.", f"model.layers.{i}.block_sparse_moe."
        out[theirs + "gate.weight"] = state_dict[ours + "router.weight"]
        for e in range(cfg.n_experts):
            gate, up = state_dict[ours + f"experts.{e}.c_fc.weight"].chunk(2, dim=0)
            out[theirs + f"experts.{e}.w1.weight"] = gate
            out[theirs + f"experts.{e}.w3.weight"] = up
            out[theirs + f"experts.{e}.w2.weight"] = state_dict[ours + f"experts.{e}.c_proj.weight"]
    return {k: v.contiguous() for k, v in out.items()}


# ---- choosing the architecture -------------------------------------------------------------------


@dataclass(frozen=True)
class HFLayout:
    """The `transformers` architecture a config maps onto: class, model_type, config keywords and
    the function that renames our state dict into its names."""

    architecture: str
    model_type: str
    config: dict
    state_dict: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


# What each architecture needs, as (field, the value it needs as shown in messages, test).
_NEEDS: dict[str, list[tuple[str, str, Callable[[ModelConfig], bool]]]] = {
    "GPT2LMHeadModel": [
        ("positions", "'learned'", lambda c: c.positions == "learned"),
        ("norm", "'layernorm'", lambda c: c.norm == "layernorm"),
        ("mlp", "'gelu'", lambda c: c.mlp == "gelu"),
        ("bias", "true", lambda c: c.bias),
        ("n_kv_head", "0 (or n_head)", lambda c: kv_heads(c) == c.n_head),
        ("n_experts", "0", lambda c: c.n_experts == 0),
    ],
    "LlamaForCausalLM": [
        ("positions", "'rope'", lambda c: c.positions == "rope"),
        ("norm", "'rmsnorm'", lambda c: c.norm == "rmsnorm"),
        ("mlp", "'swiglu'", lambda c: c.mlp == "swiglu"),
        ("n_experts", "0", lambda c: c.n_experts == 0),
    ],
    "MixtralForCausalLM": [
        ("positions", "'rope'", lambda c: c.positions == "rope"),
        ("norm", "'rmsnorm'", lambda c: c.norm == "rmsnorm"),
        ("mlp", "'swiglu'", lambda c: c.mlp == "swiglu"),
        ("bias", "false", lambda c: not c.bias),
        ("n_experts", "> 0", lambda c: c.n_experts > 0),
    ],
}


def blockers(cfg: ModelConfig, architecture: str) -> list[str]:
    """The switches of `cfg` that keep it from mapping onto `architecture`, as 'model.x = ... (needs ...)'."""
    return [f"model.{name} = {getattr(cfg, name)!r} (needs {want})" for name, want, ok in _NEEDS[architecture] if not ok(cfg)]


def hf_layout(cfg: ModelConfig) -> HFLayout:
    """The `transformers` architecture `cfg` maps onto exactly; ConfigError naming, for each
    architecture, the switches that block it when none fits."""
    found = {arch: blockers(cfg, arch) for arch in _NEEDS}
    if not found["GPT2LMHeadModel"]:
        return HFLayout("GPT2LMHeadModel", "gpt2", gpt2_config(cfg), to_gpt2_state_dict)
    if not found["LlamaForCausalLM"]:
        return HFLayout("LlamaForCausalLM", "llama", llama_config(cfg), lambda sd: to_llama_state_dict(sd, cfg))
    if not found["MixtralForCausalLM"]:
        return HFLayout("MixtralForCausalLM", "mixtral", mixtral_config(cfg), lambda sd: to_mixtral_state_dict(sd, cfg))
    closest = min(found, key=lambda a: len(found[a]))
    raise ConfigError(
        "this model maps onto no transformers architecture, so it cannot be exported: "
        + "; ".join(f"{arch} is blocked by {', '.join(b)}" for arch, b in found.items())
        + f". Closest: {closest} ({len(found[closest])} switch{'es' if len(found[closest]) > 1 else ''} to change, then train again)")
