"""Load a londinium export (a `transformers` directory) back into our GPT: the inverse of `hf_layout`.

    model, tokenizer = load_export("exports/main-step-1100", device="cpu")

The config is read back from `config.json` (GPT-2, Llama or Mixtral layout), then checked by mapping
it forward again with `hf_layout`: every key that map writes must come out as the file says, so a
directory londinium did not write (or a hand-edited one) is refused with the key that differs.

The weights are renamed by running the forward map itself on tensors that hold each of our
parameters' element numbers (exact in float64): where an element number lands in the exported
tensors says where that exported value comes from. So there is no second, hand-written map that
could drift from the one the exporter uses; a tied output head, left out of the export, is the
embedding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from londinium.config import ModelConfig
from londinium.errors import LondiniumError
from londinium.model.hf_layout import hf_layout

# Keys the forward map writes that say nothing about the weights (training-only settings).
_IGNORED = {"resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "router_aux_loss_coef", "router_jitter_noise"}


class ExportError(LondiniumError):
    """An export directory that cannot be loaded: a file missing, or not a londinium model's layout."""


def model_config_from_hf(c: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a transformers config.json written by `londinium export`."""
    kind = c.get("model_type")
    try:
        if kind == "gpt2":
            cfg = ModelConfig(n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"], context=c["n_positions"],
                              vocab_size=c["vocab_size"], positions="learned", norm="layernorm", mlp="gelu", bias=True,
                              mlp_ratio=(c.get("n_inner") or 4 * c["n_embd"]) / c["n_embd"],
                              tie_embeddings=c.get("tie_word_embeddings", True), norm_eps=c.get("layer_norm_epsilon", 1e-5))
        elif kind in ("llama", "mixtral"):
            heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
            rope = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
            # SwiGLU's width is 2/3 of mlp_ratio * n_embd rounded up to 64: 1.5 x the width gives it back.
            cfg = ModelConfig(n_layer=c["num_hidden_layers"], n_head=heads, n_kv_head=0 if kv == heads else kv,
                              n_embd=c["hidden_size"], context=c["max_position_embeddings"], vocab_size=c["vocab_size"],
                              positions="rope", norm="rmsnorm", mlp="swiglu",
                              mlp_ratio=1.5 * c["intermediate_size"] / c["hidden_size"],
                              bias=bool(c.get("attention_bias", False)), tie_embeddings=c.get("tie_word_embeddings", False),
                              rope_theta=float(rope), norm_eps=c.get("rms_norm_eps", 1e-5),
                              n_experts=c.get("num_local_experts", 0) if kind == "mixtral" else 0,
                              top_k=c.get("num_experts_per_tok", 2))
        else:
            raise ExportError(f"{where}: model_type {kind!r} is not a layout londinium exports (gpt2, llama, mixtral)")
    except KeyError as e:
        raise ExportError(f"{where}: no {e.args[0]!r}; it was not written by `londinium export`") from None
    layout = hf_layout(cfg)
    for key, value in layout.config.items():
        if key in _IGNORED or key not in c:
            continue
        if not _same(c[key], value):
            raise ExportError(f"{where}: {key} = {c[key]!r} is not what a londinium model with this shape has ({value!r}); "
                              "serve exports written by `londinium export`")
    return cfg


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and _same(a[k], v) for k, v in b.items())
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def from_hf_state_dict(cfg: ModelConfig, theirs: dict[str, torch.Tensor], where: str = "the export") -> dict[str, torch.Tensor]:
    """Our state dict (float32) from the exported tensors, by running the forward map on element numbers."""
    from londinium.model.gpt import GPT

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in GPT(cfg).state_dict().items()}
    numbers, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        numbers[name] = torch.arange(offset, offset + n, dtype=torch.float64).reshape(shape)
        offset += n
    flat = torch.zeros(offset, dtype=torch.float32)
    filled = torch.zeros(offset, dtype=torch.bool)
    mapped = hf_layout(cfg).state_dict(numbers)
    unexpected = sorted(set(theirs) - set(mapped))
    if unexpected:
        raise ExportError(f"{where}: unexpected tensors {unexpected[:3]} for this layout; it was not written by `londinium export`")
    for name, where_from in mapped.items():
        if name not in theirs:
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue  # tied: the embedding fills it below
            raise ExportError(f"{where}: tensor {name} is missing")
        t = theirs[name]
        if tuple(t.shape) != tuple(where_from.shape):
            raise ExportError(f"{where}: tensor {name} has shape {tuple(t.shape)}, expected {tuple(where_from.shape)}")
        index = where_from.reshape(-1).long()
        flat[index] = t.reshape(-1).to(torch.float32)
        filled[index] = True
    out = {name: flat[numbers[name].reshape(-1).long()].reshape(shapes[name]) for name in shapes}
    if cfg.tie_embeddings and "lm_head.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
        filled[numbers["lm_head.weight"].reshape(-1).long()] = True
    if not bool(filled.all()):
        raise ExportError(f"{where}: some of the model's weights are in no exported tensor")
    return out


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(str(directory / f)))
        return out
    raise ExportError(f"{directory}: no model.safetensors (or its index): not a transformers export")


def load_export(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(GPT in eval mode on `device`, tokenizer) from a `londinium export` directory."""
    from londinium.model.gpt import GPT
    from londinium.tokenizer.codec import load_tokenizer

    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{directory}: no config.json: not a transformers export directory (see `londinium export`)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{config_file}: not valid JSON ({e})") from None
    cfg = model_config_from_hf(config, str(config_file))
    model = GPT(cfg)
    model.load_state_dict(from_hf_state_dict(cfg, _read_weights(directory), str(directory)))
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    return model.to(device).eval(), tokenizer
