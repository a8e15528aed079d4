"""How big a model is, how much it computes, and how much memory it needs, from its config alone.

Everything here is arithmetic on `ModelConfig`, so `londinium model info --preset regular` answers
instantly without building a 350M-parameter model. Tests check the arithmetic against the real
thing: the parameter count against `GPT.num_params()`, the activation estimate against the tensors
autograd actually saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from londinium.config import Config, ModelConfig
from londinium.model.gpt import check_model_config, kv_heads, mlp_hidden


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every parameter, a tied matrix once
    non_embedding: int  # without token/position embeddings and an untied output head (Kaplan's N)
    matmul: int  # parameters a token multiplies through (MoE: only the top_k experts it visits)


def _norm_params(cfg: ModelConfig) -> int:
    return cfg.n_embd * (2 if cfg.norm == "layernorm" and cfg.bias else 1)


def _mlp_params(cfg: ModelConfig) -> int:
    d, h = cfg.n_embd, mlp_hidden(cfg)
    up = 2 * h if cfg.mlp == "swiglu" else h
    return d * up + h * d + ((up + d) if cfg.bias else 0)


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Parameter counts of `GPT(cfg)`, computed without building it."""
    check_model_config(cfg)
    d, V = cfg.n_embd, cfg.vocab_size
    qkv = (cfg.n_head + 2 * kv_heads(cfg)) * (d // cfg.n_head)
    attn = d * qkv + d * d + ((qkv + d) if cfg.bias else 0)
    mlp = _mlp_params(cfg)
    if cfg.n_experts:
        router = d * cfg.n_experts
        layer_mlp, active_mlp = router + cfg.n_experts * mlp, router + cfg.top_k * mlp
    else:
        layer_mlp = active_mlp = mlp
    norms = 2 * _norm_params(cfg)
    blocks = cfg.n_layer * (attn + layer_mlp + norms) + _norm_params(cfg)
    active_blocks = cfg.n_layer * (attn + active_mlp + norms) + _norm_params(cfg)
    wte = V * d
    wpe = cfg.context * d if cfg.positions == "learned" else 0
    head = 0 if cfg.tie_embeddings else V * d
    # The output head is a matmul over every token; embedding lookups (wte as input, wpe) are not.
    return ParamCounts(total=blocks + wte + wpe + head, non_embedding=blocks, matmul=active_blocks + V * d)


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token, forward + backward, in the nanoGPT / PaLM (appendix B) convention:

        6 N  +  12 n_layer n_embd T

    6 N: each parameter a token multiplies through costs 2 FLOPs forward and 4 backward (N = the
    `matmul` count: norms, biases and the output head included, embedding lookups not, and for MoE
    only the top_k experts a token visits). 12 n_layer n_embd T: the attention scores and the
    weighted sum over T positions (2 matmuls x 2 FLOPs x 3 for forward + backward), counted over the
    full T as the convention does, although causal masking skips about half. T defaults to the context.
    """
    T = seq_len or cfg.context
    return 6.0 * param_counts(cfg).matmul + 12.0 * cfg.n_layer * cfg.n_embd * T


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes. Training needs weights + grads + optimizer + activations_per_token x batch x T."""

    weights: int
    grads: int
    optimizer: int  # AdamW's two moments
    activations_per_token: int  # what autograd keeps for the backward pass, per token in the batch
    batch_tokens: int
    kv_cache_per_token: int  # generation: keys and values of every layer, per token per sequence

    @property
    def activations(self) -> int:
        return self.activations_per_token * self.batch_tokens

    @property
    def training_total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations


def activation_elements_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Elements autograd saves for the backward pass per token, from what PyTorch's kernels keep
    (measured with saved-tensor hooks on PyTorch 2.13; `test_model_info` checks it still holds)."""
    T = seq_len or cfg.context
    d, nh = cfg.n_embd, cfg.n_head
    kv = kv_heads(cfg) * (d // nh)
    gqa, rope, dropout = kv_heads(cfg) != nh, cfg.positions == "rope", cfg.dropout > 0
    # A norm keeps its input and statistics (RMSNorm also its normalised input, being composite);
    # the linear layer after it keeps the norm's output.
    norm = (2 * d + 1 if cfg.norm == "rmsnorm" else d + 2) + d
    if dropout:
        # SDPA's fused CPU kernel has no dropout, so the math path runs: it keeps copies of q, k, v,
        # the attention probabilities, the dropout mask and the dropped probabilities (3 x H x T),
        # and its output needs a copy before c_proj.
        attn = 3 * d + 3 * nh * T + d
    else:
        # The fused kernel keeps q, k, v (views of c_attn's output unless RoPE or GQA made new
        # tensors), its output and one log-sum-exp per head.
        # GQA's repeated k and v are new tensors of width d each; RoPE's rotated q and k too.
        qkv = d + 2 * kv
        if gqa:
            attn = (d if rope else qkv) + 2 * d
        else:
            attn = d + kv + qkv if rope else qkv
        attn += d + nh
    h = mlp_hidden(cfg)
    mlp = 4 * h if cfg.mlp == "swiglu" else 2 * h  # pre- and post-activation (SwiGLU: gate|up, silu, product)
    if cfg.n_experts:
        # Each of a token's top_k slots keeps its gathered input, its expert's activations, the
        # expert's output (for the mixing weight's gradient) and the weighted output; the router
        # keeps its scores for every expert.
        mlp = cfg.top_k * (3 * d + mlp) + 2 * cfg.n_experts
    drop = 2 * d if dropout else 0  # the residual dropouts keep their masks
    per_layer = 2 * norm + attn + mlp + drop
    # Final norm, the log-softmax over the vocabulary (the largest single term for small models),
    # the int64 targets and token ids (2 elements each in fp32 terms), and the embedding dropout.
    head = norm + cfg.vocab_size + 4 + (d if dropout else 0)
    return cfg.n_layer * per_layer + head


def memory_estimate(cfg: ModelConfig, batch_size: int, seq_len: int | None = None,
                    dtype_bytes: int = 4, param_bytes: int = 4) -> MemoryEstimate:
    """Memory to train `cfg` at `batch_size` sequences of `seq_len` (default: the context) tokens with
    AdamW, and the KV cache per generated token. `dtype_bytes` is the activation/cache dtype (2 under
    bf16 autocast), `param_bytes` the dtype of weights, grads and optimizer state (fp32 by default)."""
    T = seq_len or cfg.context
    n = param_counts(cfg).total
    return MemoryEstimate(
        weights=n * param_bytes,
        grads=n * param_bytes,
        optimizer=2 * n * param_bytes,
        activations_per_token=int(activation_elements_per_token(cfg, T) * dtype_bytes),
        batch_tokens=batch_size * T,
        kv_cache_per_token=2 * cfg.n_layer * kv_heads(cfg) * (cfg.n_embd // cfg.n_head) * dtype_bytes,
    )


# ---- the `londinium model info` report -----------------------------------------------------------


def resolve_vocab_size(cfg: Config, tokenizer_file: "str | None" = None) -> tuple[int, str]:
    """The vocabulary the model will have, and where it came from: `model.vocab_size` when set,
    else the trained tokenizer's size (when `tokenizer_file` exists), else `tokenizer.vocab_size`."""
    from pathlib import Path

    if cfg.model.vocab_size > 0:
        return cfg.model.vocab_size, "model.vocab_size"
    if tokenizer_file and Path(tokenizer_file).is_file():
        from tokenizers import Tokenizer

        from londinium.errors import LondiniumError

        try:
            size = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
        except Exception as e:  # the tokenizers library raises plain Exceptions on bad JSON
            raise LondiniumError(f"cannot read tokenizer {tokenizer_file}: {e}; re-run `londinium tokenizer train --force`") from None
        return size, str(tokenizer_file)
    return cfg.tokenizer.vocab_size, "tokenizer.vocab_size (no trained tokenizer yet)"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _count(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def render_info(cfg: ModelConfig, batch_size: int, vocab_from: str = "", preset: str = "") -> str:
    """The text `londinium model info` prints."""
    counts = param_counts(cfg)
    mem = memory_estimate(cfg, batch_size)
    shape = (f"{cfg.n_layer} layers, {cfg.n_head} heads"
             + (f" ({kv_heads(cfg)} kv)" if kv_heads(cfg) != cfg.n_head else "")
             + f", {cfg.n_embd} wide, context {cfg.context}, vocabulary {cfg.vocab_size:,}")
    variant = f"{cfg.positions} positions, {cfg.norm}, {cfg.mlp}" + ("" if cfg.bias else ", no bias") \
        + (", tied embeddings" if cfg.tie_embeddings else ", untied embeddings") \
        + (f", {cfg.n_experts} experts (top {cfg.top_k})" if cfg.n_experts else "")
    lines = [
        f"model{f' (preset {preset})' if preset else ''}: {shape}",
        f"  {variant}",
        *([f"  vocabulary from {vocab_from}"] if vocab_from else []),
        f"parameters:           {counts.total:>14,}  ({_count(counts.total)})",
        f"  non-embedding:      {counts.non_embedding:>14,}  ({_count(counts.non_embedding)})",
        *([f"  active per token:   {counts.matmul:>14,}  (matmul parameters, top {cfg.top_k} of {cfg.n_experts} experts)"] if cfg.n_experts else []),
        f"training FLOPs/token: {flops_per_token(cfg):>14,.0f}  (6N + 12 L d T at T = {cfg.context})",
        f"memory (fp32, AdamW), batch {batch_size} x {cfg.context} = {mem.batch_tokens:,} tokens:",
        f"  weights             {_size(mem.weights):>12}",
        f"  gradients           {_size(mem.grads):>12}",
        f"  AdamW state         {_size(mem.optimizer):>12}",
        f"  activations         {_size(mem.activations):>12}  ({_size(mem.activations_per_token)} per token)",
        f"  training total      {_size(mem.training_total):>12}",
        f"  KV cache per token  {_size(mem.kv_cache_per_token):>12}  (full context: {_size(mem.kv_cache_per_token * cfg.context)} per sequence)",
    ]
    return "\n".join(lines) + "\n"
