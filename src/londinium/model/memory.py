"""How much memory generation and serving need, from the config alone (`londinium model memory`).

    weights      embeddings and norms in float32, the linear layers in the weight dtype
                 (model/quantize.py: float16 2 bytes, int8 1 byte + a scale per output row; a tied
                 output head gets its own packed copy once packed)
    KV cache     2 (keys, values) x layers x kv heads x head size x tokens x bytes per value,
                 plus, for an int8 cache (model/kv_int8.py), a float16 scale per key channel and
                 group of 16 positions and per value position, and a float16 ring of 16 keys per sequence
    activations  the largest set of intermediate tensors alive at once in one forward pass: in a
                 block, the residual stream twice and the normed input (3 x n_embd per token) with
                 the MLP's hidden activations (SwiGLU: gate|up, silu and their product, 4 x hidden;
                 GELU: 2 x hidden); at the head, the residual with the normed last positions and
                 their logits. Activations stay float32 whatever the weights.

The engine's own memory follows from these: `max_running` slots of a full context each (allocated
as sequences arrive), the prefix cache's tokens (`Engine(prefix_cache_tokens=...)`, 8 contexts by
default) and one step's activations (`max_step_tokens` tokens). `tests/unit/test_model_memory.py`
holds every figure to the bytes of real tensors for every preset and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from londinium.config import ModelConfig
from londinium.model.gpt import kv_heads, mlp_hidden
from londinium.model.kv_int8 import GROUP, RING

FLOAT = 4  # activations, embeddings, norms and biases are float32
WEIGHT_BYTES = {"float32": 4, "float16": 2, "int8": 1}  # per weight of a linear layer
ROW_SCALE_BYTES = 8  # int8: a float32 scale and fbgemm's int32 column offset per output row
KV_BYTES = {"float32": 4, "int8": 1}
SCALE_BYTES = 2  # the int8 KV cache's scales are float16


def linear_layers(cfg: ModelConfig, head: bool = True) -> list[tuple[int, int, bool]]:
    """(out, in, has bias) of every linear layer of `GPT(cfg)`, the output head last when `head`."""
    C, D, b = cfg.n_embd, cfg.n_embd // cfg.n_head, cfg.bias
    h = mlp_hidden(cfg)
    mlp = [(2 * h if cfg.mlp == "swiglu" else h, C, b), (C, h, b)]
    per_layer = [((cfg.n_head + 2 * kv_heads(cfg)) * D, C, b), (C, C, b)]
    per_layer += [(cfg.n_experts, C, False)] + mlp * cfg.n_experts if cfg.n_experts else mlp
    return per_layer * cfg.n_layer + ([(cfg.vocab_size, C, False)] if head else [])


def weight_bytes(cfg: ModelConfig, weight_dtype: str = "float32") -> dict[str, int]:
    """Bytes of the weights by kind: 'linear' (matrices, their biases and int8 scales), 'embeddings'
    (tokens, positions, RoPE tables) and 'norms'."""
    C = cfg.n_embd
    # A float32 tied head is the token embedding; packed, it is a matrix of its own.
    layers = linear_layers(cfg, head=weight_dtype != "float32" or not cfg.tie_embeddings)
    linear = sum(o * i * WEIGHT_BYTES[weight_dtype] + (o * FLOAT if bias else 0) for o, i, bias in layers)
    if weight_dtype == "int8":
        linear += sum(o * ROW_SCALE_BYTES + i * FLOAT for o, i, _ in layers)  # scales, and the [-1, 1] guard row
    embeddings = cfg.vocab_size * C * FLOAT
    if cfg.positions == "learned":
        embeddings += cfg.context * C * FLOAT
    else:
        embeddings += 2 * cfg.context * (C // cfg.n_head // 2) * FLOAT  # cos and sin tables
    norm = C * (2 if cfg.norm == "layernorm" and cfg.bias else 1) * FLOAT
    return {"linear": linear, "embeddings": embeddings, "norms": (2 * cfg.n_layer + 1) * norm}


def kv_bytes_per_token(cfg: ModelConfig, kv_dtype: str = "float32") -> float:
    """Keys and values of one more token of one sequence, every layer (int8: with its share of the
    key scales, and its value scale; the key ring is per sequence, see `kv_cache_bytes`)."""
    H, D = kv_heads(cfg), cfg.n_embd // cfg.n_head
    if kv_dtype == "int8":
        return cfg.n_layer * (2 * H * D + H * D * SCALE_BYTES / GROUP + H * SCALE_BYTES)
    return 2 * cfg.n_layer * H * D * KV_BYTES[kv_dtype]


def kv_cache_bytes(cfg: ModelConfig, sequences: int, tokens: int, kv_dtype: str = "float32") -> int:
    """A cache of `sequences` rows of `tokens` positions each (a SlotCache or KVCache; int8: an
    Int8SlotCache, whose positions come in whole groups, with a ring of GROUP keys per row)."""
    if kv_dtype != "int8":
        return int(sequences * tokens * kv_bytes_per_token(cfg, kv_dtype))
    H, D = kv_heads(cfg), cfg.n_embd // cfg.n_head
    groups = -(-tokens // GROUP)
    per_row = groups * GROUP * (2 * H * D + H * SCALE_BYTES) + groups * H * D * SCALE_BYTES + H * GROUP * D * RING.itemsize
    return sequences * cfg.n_layer * per_row


def activation_bytes(cfg: ModelConfig, tokens: int, logits: int) -> int:
    """Peak bytes of the intermediate tensors of one forward pass of `tokens` tokens that keeps
    `logits` rows of logits (see the module docstring)."""
    C, h = cfg.n_embd, mlp_hidden(cfg)
    mlp = 4 * h if cfg.mlp == "swiglu" else 2 * h
    if cfg.n_experts:
        mlp = cfg.top_k * (mlp + 2 * C) + cfg.n_experts  # each visited expert's activations, gathered input and output
    block = tokens * (3 * C + mlp)
    norm = 2 * C if cfg.norm == "rmsnorm" else C  # RMSNorm runs as a few ops: one more tensor at a time
    head = tokens * C + logits * (norm + cfg.vocab_size)
    return FLOAT * max(block, head)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes generation needs for `sequences` sequences of `context` tokens (see `memory_plan`)."""

    weights: dict[str, int]
    kv_cache: int
    kv_per_token: int
    activations: int
    prefix_cache: int
    sequences: int
    context: int
    step_tokens: int

    @property
    def total(self) -> int:
        return sum(self.weights.values()) + self.kv_cache + self.activations + self.prefix_cache


def memory_plan(cfg: ModelConfig, sequences: int = 1, context: int | None = None, weight_dtype: str = "float32",
                kv_dtype: str = "float32", step_tokens: int = 512, prefix_contexts: int = 8) -> MemoryPlan:
    """What the engine holds for `sequences` running sequences of up to `context` tokens: the
    weights, their slots of the KV cache, the prefix cache's `prefix_contexts` contexts of keys and
    values, and one step's activations (a prefill chunk of `step_tokens` tokens, or a decode step of
    every sequence with their logits, whichever is larger)."""
    context = context or cfg.context
    acts = max(activation_bytes(cfg, step_tokens, 1), activation_bytes(cfg, sequences, sequences))
    return MemoryPlan(weights=weight_bytes(cfg, weight_dtype), kv_cache=kv_cache_bytes(cfg, sequences, context, kv_dtype),
                      kv_per_token=kv_bytes_per_token(cfg, kv_dtype), activations=acts,
                      prefix_cache=kv_cache_bytes(cfg, 1, prefix_contexts * cfg.context, kv_dtype),
                      sequences=sequences, context=context, step_tokens=step_tokens)


def max_sequences(cfg: ModelConfig, budget_bytes: int, context: int | None = None, extra_bytes: int = 0,
                  **kwargs: object) -> int:
    """The most sequences whose plan (`memory_plan(cfg, n, context, **kwargs)`), with `extra_bytes`
    beside it (a draft model, say), fits `budget_bytes`; 0: not even one."""

    def fits(n: int) -> bool:
        return memory_plan(cfg, n, context, **kwargs).total + extra_bytes <= budget_bytes  # type: ignore[arg-type]

    if not fits(1):
        return 0
    fit, over = 1, 2  # the plan grows with n (slots, and a decode step's activations): double, then bisect
    while fits(over):
        fit, over = over, 2 * over
    while over - fit > 1:
        mid = (fit + over) // 2
        fit, over = (mid, over) if fits(mid) else (fit, mid)
    return fit


def draft_bytes(cfg: ModelConfig) -> int:
    """What a draft model adds (speculative decoding, `infer/speculative.py`): its float32 weights and
    the cache of the one sequence it follows, at its full context."""
    return sum(weight_bytes(cfg).values()) + kv_cache_bytes(cfg, 1, cfg.context)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def render_memory(cfg: ModelConfig, plan: MemoryPlan, weight_dtype: str, kv_dtype: str, preset: str = "") -> str:
    """The text `londinium model memory` prints."""
    w = plan.weights
    lines = [
        f"model{f' (preset {preset})' if preset else ''}: {cfg.n_layer} layers x {cfg.n_embd}, {kv_heads(cfg)} kv heads, "
        f"context {cfg.context}, vocabulary {cfg.vocab_size:,}",
        f"generation: {plan.sequences} sequence(s) x {plan.context} tokens, weights {weight_dtype}, KV cache {kv_dtype}",
        f"  weights            {_size(sum(w.values())):>12}  (linear layers {_size(w['linear'])}, embeddings {_size(w['embeddings'])}, "
        f"norms {_size(w['norms'])})",
        f"  KV cache           {_size(plan.kv_cache):>12}  ({_size(plan.kv_per_token)} per token)",
        f"  activations        {_size(plan.activations):>12}  (one step: {plan.step_tokens} prefill tokens or {plan.sequences} decoded)",
        f"  prefix cache       {_size(plan.prefix_cache):>12}  (recent prompts' keys and values, 8 contexts at most)",
        f"  total              {_size(plan.total):>12}",
    ]
    return "\n".join(lines) + "\n"

