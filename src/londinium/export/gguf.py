"""A trained model as one GGUF file, the format llama.cpp (and Ollama, LM Studio) load.

    write_gguf(Path("model.gguf"), trained, dtype="q8_0")

The file holds the weights under llama.cpp's tensor names, the hyperparameters under its metadata
keys, and the tokenizer (vocabulary, merges, special ids, chat template), so llama.cpp needs nothing
else. Two of llama.cpp's architectures match ours exactly:

    ours (model.*)                                 GGUF architecture
    rope + rmsnorm + swiglu (any n_kv_head, bias)  llama
    learned + layernorm + gelu + bias (no GQA)     gpt2

Tensors, Llama style (names through `hf_layout`'s map onto LlamaForCausalLM, then gguf-py's map):

    transformer.wte.weight           token_embd.weight
    transformer.h.{i}.ln_1.weight    blk.{i}.attn_norm.weight
    transformer.h.{i}.attn.c_attn.*  blk.{i}.attn_q.*, attn_k.*, attn_v.*   (q and k rows permuted)
    transformer.h.{i}.attn.c_proj.*  blk.{i}.attn_output.*
    transformer.h.{i}.ln_2.weight    blk.{i}.ffn_norm.weight
    transformer.h.{i}.mlp.c_fc.*     blk.{i}.ffn_gate.*, ffn_up.*
    transformer.h.{i}.mlp.c_proj.*   blk.{i}.ffn_down.*
    transformer.ln_f.weight          output_norm.weight
    lm_head.weight                   output.weight         (left out when tied: llama.cpp reuses token_embd)

llama.cpp's `llama` rotates adjacent pairs (GPT-J's interleaved RoPE) while we rotate halves (the
layout `transformers` uses), so the rows of each q and k head are reordered from [real half |
imaginary half] to [re0, im0, re1, im1, ...]: the permutation llama.cpp's own converter applies to
Hugging Face Llama weights, and that transformers' GGUF loader undoes.

Tensors, GPT-2 style: the same names as GPT-2's (token_embd, position_embd, blk.{i}.attn_norm,
attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down, output_norm, output), weights and biases. GGUF
stores a matrix as [out, in] like torch.nn.Linear, so ours go in as they are; only Hugging Face
GPT-2's Conv1D weights ([in, out]) need the transpose that llama.cpp's converter does.

dtypes: "float32"; "float16" and "q8_0" (8-bit blocks of 32 with one f16 scale, ~1.06 bytes per
weight) for the matrices, while norms, biases and position embeddings stay f32 as llama.cpp's
converter leaves them; a matrix whose rows are not a multiple of 32 falls back to f16 in q8_0.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from londinium.config import ModelConfig
from londinium.errors import LondiniumError
from londinium.files import create_temporary_file, fsync_dir, require_replaceable
from londinium.model.gpt import kv_heads, mlp_hidden

DTYPES = ("float32", "float16", "q8_0")


class GGUFExportError(LondiniumError):
    """The model or the request cannot be written as GGUF: unknown dtype, an architecture llama.cpp lacks."""


def gguf_architecture(cfg: ModelConfig) -> str:
    """The llama.cpp architecture ("llama" or "gpt2") that represents this model exactly, or a
    GGUFExportError naming the switches that prevent it and what to set."""
    if cfg.n_experts:
        raise GGUFExportError(
            f"model.n_experts = {cfg.n_experts}: the GGUF export writes dense models only "
            "(export a mixture-of-experts model with --format hf, or train with model.n_experts = 0)")
    llama = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
    gpt2 = {"positions": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True}
    wanted = llama if cfg.positions == "rope" else gpt2
    wrong = [f"model.{k} = {getattr(cfg, k)!r} (needs {v!r})" for k, v in wanted.items() if getattr(cfg, k) != v]
    if wanted is gpt2 and kv_heads(cfg) != cfg.n_head:
        wrong.append(f"model.n_kv_head = {cfg.n_kv_head} (GPT-2 has no grouped-query attention; needs 0)")
    if wrong:
        name = "llama (RoPE, RMSNorm, SwiGLU)" if wanted is llama else "gpt2 (learned positions, LayerNorm, GELU, bias)"
        raise GGUFExportError(f"this model maps onto no llama.cpp architecture; for {name}: " + "; ".join(wrong))
    return "llama" if wanted is llama else "gpt2"


def _interleave_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head from rotate_half order [x0..x(d/2-1) | y0..] to pairs [x0, y0, x1, y1, ...]."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tensors(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under llama.cpp's tensor names, in fp32, in the order they are written."""
    import gguf

    from londinium.model.hf_layout import to_llama_state_dict

    arch = gguf_architecture(cfg)
    if arch == "llama":
        named = to_llama_state_dict(state_dict, cfg)
        for key in list(named):
            if ".self_attn.q_proj." in key:
                named[key] = _interleave_rope_rows(named[key], cfg.n_head)
            elif ".self_attn.k_proj." in key:
                named[key] = _interleave_rope_rows(named[key], kv_heads(cfg))
    else:
        named = dict(state_dict)  # our names are GPT-2's, which gguf-py's map knows
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.GPT2, cfg.n_layer)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in named.items():
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue  # llama.cpp uses token_embd as the output head when `output` is absent
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:  # a weight the map does not cover would silently be lost: a bug, not bad input
            raise RuntimeError(f"no GGUF tensor name for {key}")
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return out


def _tensor_type(name: str, array: np.ndarray, dtype: str) -> Any:
    """The GGML type of one tensor, by llama.cpp's converter's rules: vectors, norms and position
    embeddings stay f32 (the kernels that read them take f32), matrices take the file's dtype."""
    import gguf

    T = gguf.GGMLQuantizationType
    if dtype == "float32" or array.ndim <= 1 or name.endswith("_norm.weight") or name.startswith("position_embd"):
        return T.F32
    if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return T.Q8_0
    return T.F16  # float16, or q8_0 on rows not a multiple of its block of 32


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """The tokenizer as GGUF's GPT-2 style BPE metadata: byte-level tokens, merges, special ids."""
    import gguf

    from londinium.infer.chat_template import INFERENCE_TEMPLATE
    from londinium.tokenizer.codec import EOT, PAD, SPECIAL_TOKENS

    n = tokenizer.get_vocab_size()
    if n > vocab_size:
        raise GGUFExportError(f"the tokenizer has {n} tokens but model.vocab_size is {vocab_size}: the model cannot emit them all")
    special = {tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    tokens, types = [], []
    for i in range(vocab_size):
        token = tokenizer.id_to_token(i)
        if token is None:  # rows the model has beyond the vocabulary: llama.cpp needs a name for each
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    # llama.cpp picks its pre-tokenizer regex by this name; "gpt-2" is GPT-2's regex, the one our
    # ByteLevel(use_regex=True) pre-tokenizer applies (an unknown name is refused at load).
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    eot, pad = tokenizer.token_to_id(EOT), tokenizer.token_to_id(PAD)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_pad_token_id(pad)
    writer.add_add_bos_token(False)  # our engine starts from the prompt as typed, without BOS
    writer.add_add_eos_token(False)
    writer.add_chat_template(INFERENCE_TEMPLATE)  # llama.cpp has no {% generation %} tag


def _add_hyperparameters(writer: Any, cfg: ModelConfig, arch: str) -> None:
    writer.add_context_length(cfg.context)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(mlp_hidden(cfg))
    writer.add_head_count(cfg.n_head)
    writer.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        writer.add_head_count_kv(kv_heads(cfg))
        writer.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_layer_norm_rms_eps(cfg.norm_eps)
    else:
        writer.add_layer_norm_eps(cfg.norm_eps)


def write_gguf(path: Path, trained: Any, dtype: str = "float32", progress: bool = True) -> None:
    """Write `trained` (a `londinium.model.load.TrainedModel`) to `path` as one GGUF file with the
    tokenizer embedded. `dtype` is "float32", "float16" or "q8_0". Atomic: the file appears
    complete or not at all."""
    import gguf

    if dtype not in DTYPES:
        raise GGUFExportError(f"GGUF dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    cfg: ModelConfig = trained.config.model
    arch = gguf_architecture(cfg)
    tensors = gguf_tensors(trained.model.state_dict(), cfg)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    require_replaceable(path)  # never a device, FIFO or socket: the rename would replace it
    fd, tmp = create_temporary_file(path)  # the umask's mode, as for a plain open(): a GGUF is for sharing
    os.close(fd)
    writer = None
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(f"londinium {trained.run}")
        file_type = {"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hyperparameters(writer, cfg, arch)
        _add_tokenizer(writer, trained.tokenizer, cfg.vocab_size)
        for name, tensor in tensors.items():
            array = tensor.numpy()
            qtype = _tensor_type(name, array, dtype)
            if qtype == gguf.GGMLQuantizationType.Q8_0:
                writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(name, array.astype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=progress)
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        require_replaceable(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if writer is not None:  # its open file would keep the space of a failed (disk full) write
            with contextlib.suppress(Exception):
                writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
