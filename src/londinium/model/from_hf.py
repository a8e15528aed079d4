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

An export directory is untrusted input: `load_export` builds nothing before `hf_check.check_export`
has matched the config against the weights' headers, confined the files to the directory, checked
the hashes `londinium.json` recorded and found every weight finite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from londinium.config import ModelConfig, check_field, validate
from londinium.errors import ConfigError, LondiniumError
from londinium.model.hf_layout import hf_layout

if TYPE_CHECKING:
    from londinium.model.hf_check import CheckedExport

# Keys the forward map writes that say nothing about the weights (training-only settings).
_IGNORED = {"resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "router_aux_loss_coef", "router_jitter_noise"}


class ExportError(LondiniumError):
    """An export directory that cannot be loaded: a file missing, or not a londinium model's layout."""


_REQUIRED = object()
_MAX_WIDTH = 64 * 65536  # model.mlp_ratio <= 64 times model.n_embd <= 65536


def model_config_from_hf(c: Any, where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a transformers config.json written by `londinium export`. Each value is
    held to the rule of the field it becomes (type and range, named by the file's own key), so a
    hostile or broken file is one ExportError, never a model built from it."""
    if not isinstance(c, dict):
        raise ExportError(f"{where}: expected a JSON object of model settings, got {type(c).__name__}")

    def get(key: str, field: str, default: Any = _REQUIRED) -> Any:
        if key not in c or (c[key] is None and default is not _REQUIRED):
            if default is _REQUIRED:
                raise ExportError(f"{where}: no {key!r}; it was not written by `londinium export`")
            return default
        try:
            check_field(ModelConfig, field, c[key], f"{where}: {key}")
        except ConfigError as e:
            raise ExportError(str(e)) from None
        return c[key]

    def width(key: str, default: Any = _REQUIRED) -> int:
        """An MLP's hidden width (no field of ours: the config keeps it as mlp_ratio)."""
        value = c.get(key)
        if value is None and default is not _REQUIRED:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_WIDTH:
            raise ExportError(f"{where}: {key} = {value!r}: must be an integer in [1, {_MAX_WIDTH}]")
        return value

    kind = c.get("model_type")
    if kind == "gpt2":
        n_embd = get("n_embd", "n_embd")
        cfg = ModelConfig(n_layer=get("n_layer", "n_layer"), n_head=get("n_head", "n_head"), n_embd=n_embd,
                          context=get("n_positions", "context"), vocab_size=get("vocab_size", "vocab_size"),
                          positions="learned", norm="layernorm", mlp="gelu", bias=True,
                          mlp_ratio=width("n_inner", 4 * n_embd) / n_embd,
                          tie_embeddings=get("tie_word_embeddings", "tie_embeddings", True),
                          norm_eps=get("layer_norm_epsilon", "norm_eps", 1e-5))
    elif kind in ("llama", "mixtral"):
        heads, n_embd = get("num_attention_heads", "n_head"), get("hidden_size", "n_embd")
        kv = get("num_key_value_heads", "n_kv_head", heads)
        rope = c.get("rope_parameters")
        if rope is not None and not isinstance(rope, dict):
            raise ExportError(f"{where}: rope_parameters should be an object, got {type(rope).__name__}")
        theta = (rope or {}).get("rope_theta", c.get("rope_theta", 10000.0))
        try:
            check_field(ModelConfig, "rope_theta", theta, f"{where}: rope_theta")
        except ConfigError as e:
            raise ExportError(str(e)) from None
        # SwiGLU's width is 2/3 of mlp_ratio * n_embd rounded up to 64: 1.5 x the width gives it back.
        cfg = ModelConfig(n_layer=get("num_hidden_layers", "n_layer"), n_head=heads, n_kv_head=0 if kv == heads else kv,
                          n_embd=n_embd, context=get("max_position_embeddings", "context"),
                          vocab_size=get("vocab_size", "vocab_size"), positions="rope", norm="rmsnorm", mlp="swiglu",
                          mlp_ratio=1.5 * width("intermediate_size") / n_embd,
                          bias=get("attention_bias", "bias", False), tie_embeddings=get("tie_word_embeddings", "tie_embeddings", False),
                          rope_theta=float(theta), norm_eps=get("rms_norm_eps", "norm_eps", 1e-5),
                          n_experts=get("num_local_experts", "n_experts", 0) if kind == "mixtral" else 0,
                          top_k=get("num_experts_per_tok", "top_k", 2))
    else:
        raise ExportError(f"{where}: model_type {kind!r} is not a layout londinium exports (gpt2, llama, mixtral)")
    try:
        validate(cfg, where)  # the rules between fields (heads divide the width, top_k <= experts, ...)
        if cfg.vocab_size < 1:
            raise ConfigError(f"{where}: vocab_size = {cfg.vocab_size}: must be >= 1")
        layout = hf_layout(cfg)
    except ConfigError as e:
        raise ExportError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
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


def load_export(source: str | Path | CheckedExport, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(GPT in eval mode on `device`, tokenizer) from a `londinium export` directory, checked first
    (`hf_check.check_export`: nothing is built from a directory whose files do not agree), or from
    the result of that check made earlier (the server checks before it listens, then loads)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from londinium.model.gpt import GPT
    from londinium.model.hf_check import CheckedExport, check_export

    checked = source if isinstance(source, CheckedExport) else check_export(source)
    weights: dict[str, torch.Tensor] = {}
    for path in checked.weight_files:
        try:
            weights.update(load_file(str(path)))
        except (SafetensorError, OSError) as e:  # changed since it was checked
            raise ExportError(f"{path}: cannot be read ({e}); export again") from None
    model = GPT(checked.config)
    model.load_state_dict(from_hf_state_dict(checked.config, weights, str(checked.directory)))
    return model.to(device).eval(), checked.tokenizer
