"""A trained model as a Hugging Face `transformers` directory, loadable with no londinium code:

    model.safetensors                 the weights in the architecture's own names (or shards
                                      model-0000i-of-0000N.safetensors + model.safetensors.index.json)
    config.json                       GPT2LMHeadModel / LlamaForCausalLM / MixtralForCausalLM, our token ids
    generation_config.json            the [generate] defaults in transformers' terms
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   the tokenizer, context, chat template

The JSON files are written directly, not through `transformers`' `save_pretrained`, so exporting
needs neither `transformers` nor its slow import (as the tokenizer stage does for its directory);
the tests load every file with the real `transformers` to keep this honest. Which architecture a
model maps onto, and how its weights are renamed, is `londinium.model.hf_layout`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from londinium.errors import ConfigError
from londinium.model.hf_layout import HFLayout, hf_layout

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"export.dtype = {dtype!r} is not a Hugging Face export dtype: use {', '.join(DTYPES)} (--dtype)")
    return DTYPES[dtype]


def hf_weights(trained: Any, dtype: str = "float32") -> tuple[HFLayout, dict[str, torch.Tensor]]:
    """The layout the model maps onto and its state dict in that layout's names, cast to `dtype`.

    A tied output head is left out (transformers ties it to the embedding from `tie_word_embeddings`);
    every tensor is its own copy, since safetensors refuses tensors that share memory."""
    torch_dtype = check_dtype(dtype)
    cfg = trained.config.model
    layout = hf_layout(cfg)
    ours = {k: v.detach().to("cpu") for k, v in trained.model.state_dict().items()}
    theirs = layout.state_dict(ours)
    if cfg.tie_embeddings:
        theirs.pop("lm_head.weight", None)
    return layout, {k: v.to(torch_dtype).clone().contiguous() for k, v in theirs.items()}


def shard(state_dict: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split a state dict, in order, into groups of at most `max_bytes` (a larger tensor goes alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state_dict.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def write_weights(directory: Path, state_dict: dict[str, torch.Tensor], max_shard_mb: float) -> list[Path]:
    """`model.safetensors`, or shards and the index file in transformers' layout past `max_shard_mb`."""
    from safetensors.torch import save_file

    if max_shard_mb <= 0:
        raise ConfigError(f"export.max_shard_mb = {max_shard_mb}: must be positive")
    groups = shard(state_dict, int(max_shard_mb * 1e6))
    meta = {"format": "pt"}  # transformers reads the weights as PyTorch tensors
    if len(groups) == 1:
        save_file(groups[0], str(directory / SINGLE_FILE), metadata=meta)
        return [directory / SINGLE_FILE]
    written, weight_map = [], {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(directory / name), metadata=meta)
        written.append(directory / name)
        weight_map.update({k: name for k in group})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values()),
                     "total_parameters": sum(t.numel() for t in state_dict.values())},
        "weight_map": dict(sorted(weight_map.items())),
    }
    _write_json(directory / INDEX_FILE, index)
    return [*written, directory / INDEX_FILE]


def model_config(layout: HFLayout, trained: Any, dtype: str) -> dict[str, Any]:
    """config.json: the architecture, its hyperparameters, our special token ids and the dtype."""
    from londinium.tokenizer.codec import EOT, PAD

    cfg = trained.config.model
    eot, pad = trained.tokenizer.token_to_id(EOT), trained.tokenizer.token_to_id(PAD)
    out: dict[str, Any] = {"architectures": [layout.architecture], "model_type": layout.model_type, **layout.config,
                           "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": pad,
                           # transformers 5 reads "dtype"; 4.x (and the tools built on it) "torch_dtype"
                           "dtype": dtype, "torch_dtype": dtype, "use_cache": True}
    if layout.model_type == "gpt2":
        out["n_ctx"] = cfg.context  # llama.cpp's converter reads the context from n_ctx
    if "rope_parameters" in out:
        out["rope_theta"] = cfg.rope_theta  # the pre-5.x key, for readers that predate rope_parameters
    return out


def generation_config(gen: Any, trained: Any) -> dict[str, Any]:
    """generation_config.json from the `[generate]` defaults (`SamplingParams.from_config`).

    transformers 5 takes generation settings from this file only. Its own defaults differ from ours
    (top_k 50 when unset), so every control is written out; greedy (temperature 0) is do_sample
    false. Stop strings, frequency and presence penalties have no field here (see docs/export.md)."""
    from londinium.infer.sampling import SamplingParams
    from londinium.tokenizer.codec import EOT, PAD

    p = SamplingParams.from_config(gen)
    eot, pad = trained.tokenizer.token_to_id(EOT), trained.tokenizer.token_to_id(PAD)
    out: dict[str, Any] = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": pad,
                           "max_new_tokens": p.max_tokens, "do_sample": not p.greedy,
                           "repetition_penalty": p.repetition_penalty}
    if not p.greedy:
        out.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
        if p.min_p:
            out["min_p"] = p.min_p
    if p.no_repeat_ngram_size:
        out["no_repeat_ngram_size"] = p.no_repeat_ngram_size
    return out


def write_tokenizer(directory: Path, trained: Any) -> list[Path]:
    """The tokenizer stage's transformers files, plus the model's context and the chat template."""
    from londinium.infer.chat_template import CHAT_TEMPLATE
    from londinium.tokenizer.train import save_transformers

    written = save_transformers(trained.tokenizer, directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    # Without it transformers assumes an unbounded length and never truncates to the context.
    config["model_max_length"] = trained.config.model.context
    config["chat_template"] = CHAT_TEMPLATE
    _write_json(config_file, config)
    return written


def write_hf(directory: Path, trained: Any, dtype: str, gen: Any, max_shard_mb: float) -> dict[str, Any]:
    """Write the model files into the (empty, temporary) `directory`; returns what the card and the
    record need: the layout, the number of parameters written and the files."""
    layout, weights = hf_weights(trained, dtype)
    files = write_weights(directory, weights, max_shard_mb)
    _write_json(directory / "config.json", model_config(layout, trained, dtype))
    _write_json(directory / "generation_config.json", generation_config(gen, trained))
    files += [directory / "config.json", directory / "generation_config.json", *write_tokenizer(directory, trained)]
    return {"layout": layout, "files": files}


def _write_json(path: Path, obj: Any) -> None:
    # The directory is a temporary one renamed into place as a whole, so plain writes suffice here.
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
