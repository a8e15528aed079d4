"""The `transformers` peer of one of our models: the class the export maps it to, holding our weights.

Shared by the benchmarks that time a model against `transformers` (generate_speed.py,
eval_perplexity.py, train_throughput.py); run them from the repository root.
"""

from __future__ import annotations

import dataclasses

import torch

from londinium.config import ModelConfig, load_config
from londinium.model.hf_layout import hf_layout


def preset_model_config(preset: str, **changes: object) -> ModelConfig:
    """A preset's `[model]` with the vocabulary of the preset's tokenizer (what quickstart would train)."""
    cfg = load_config(preset=preset)
    return dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size, dropout=0.0, **changes)


def transformers_class(cfg: ModelConfig) -> torch.nn.Module:
    """A fresh instance of the `transformers` class `cfg` exports to (GPT2LMHeadModel, LlamaForCausalLM,
    MixtralForCausalLM), built from the config keywords the export writes."""
    import transformers

    layout = hf_layout(cfg)
    config_class = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig,
                    "mixtral": transformers.MixtralConfig}[layout.model_type]
    return getattr(transformers, layout.architecture)(config_class(**layout.config, bos_token_id=0, eos_token_id=0))


def transformers_peer(ours: torch.nn.Module, check: bool = True) -> torch.nn.Module:
    """The `transformers` model holding `ours`' weights (mapped by `model/hf_layout.py`), in eval mode;
    with `check`, its logits are compared with ours first (a benchmark of different models is no benchmark)."""
    layout = hf_layout(ours.config)
    peer = transformers_class(ours.config).eval()
    missing, unexpected = peer.load_state_dict(layout.state_dict(ours.state_dict()), strict=False)
    # GPT-2's causal-mask buffers are not weights; a tied head is one tensor under two names.
    assert not unexpected and all(k.endswith(("attn.bias", "masked_bias", "lm_head.weight")) for k in missing), (missing, unexpected)
    if check:
        diff = max_logit_difference(ours, peer)
        assert diff < 1e-3, f"transformers' {layout.architecture} disagrees with our model by {diff:.2e} in the logits"
    return peer


def max_logit_difference(ours: torch.nn.Module, peer: torch.nn.Module) -> float:
    idx = torch.randint(0, ours.config.vocab_size, (2, min(32, ours.config.context)), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return float((ours(idx)[0] - peer(idx).logits).abs().max())
