"""How our weights map onto `transformers`' GPT2LMHeadModel and LlamaForCausalLM.

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
"""

from __future__ import annotations

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
            gate, up = state_dict[ours + f"mlp.c_fc.{kind}"].chunk(2, dim=0)
            out.update({theirs + f"mlp.gate_proj.{kind}": gate, theirs + f"mlp.up_proj.{kind}": up,
                        theirs + f"mlp.down_proj.{kind}": state_dict[ours + f"mlp.c_proj.{kind}"]})
    return {k: v.contiguous() for k, v in out.items()}
