"""The GPT model: one module, read top to bottom; variants are config switches, not classes.

    idx ─► wte (+ wpe) ─► n_layer × Block ─► ln_f ─► lm_head ─► logits
    Block:  x + attn(ln_1(x))  then  x + mlp(ln_2(x))          (pre-norm, as GPT-2 and Llama)

Switches (all in `londinium.config.ModelConfig`): positions learned | rope, norm layernorm | rmsnorm,
mlp gelu | swiglu, n_kv_head < n_head for grouped-query attention, bias, tied embeddings, dropout,
and n_experts > 0 for a mixture-of-experts MLP with a load-balancing loss.

Weight names are GPT-2's (`transformer.wte`, `transformer.h.{i}.attn.c_attn`, ...), so a GPT-2 style
model maps onto `transformers`' GPT2LMHeadModel by name (its Conv1D stores weights transposed), and
a Llama style model maps onto LlamaForCausalLM by the table in `londinium.model.hf_layout`. Both maps
are proved by tests that compare logits with the real `transformers` classes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from londinium.config import ModelConfig, validate
from londinium.errors import ConfigError, LondiniumError
from londinium.model.cache import KVCache, Layout, SlotCache, StepKV

POSITIONS = ("learned", "rope")
Cache = KVCache | StepKV
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError naming the field when the architecture cannot be built: the [model] rules
    of config.py (ranges, switches, head divisibility, top_k <= n_experts), and a vocabulary size,
    which is only known once the tokenizer is trained."""
    validate(cfg)
    if cfg.vocab_size <= 0:
        raise ConfigError(f"model.vocab_size is {cfg.vocab_size}: set it, or train the tokenizer first so it can be read from tokenizer.json")


def kv_heads(cfg: ModelConfig) -> int:
    return cfg.n_kv_head or cfg.n_head


def mlp_hidden(cfg: ModelConfig) -> int:
    """Hidden width of one MLP. SwiGLU has three matrices instead of two, so it takes 2/3 of the
    width to keep the parameter count (Llama's rule), rounded up to a multiple of 64 for the kernels."""
    hidden = int(cfg.mlp_ratio * cfg.n_embd)
    if cfg.mlp == "swiglu":
        hidden = 64 * math.ceil(2 * hidden / 3 / 64)
    return hidden


# ---- generation cache: see londinium.model.cache (KVCache for a prefill or beams, SlotCache for the
# engine's running sequences, read through a StepKV). The cache supplies positions and the attention
# mask; the model only asks it where the new tokens are.


# ---- building blocks -----------------------------------------------------------------------------


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


ROPE_SCALINGS = ("none", "linear", "ntk")


def ntk_base_factor(head_dim: int, factor: float) -> float:
    """How much NTK-aware scaling raises the rotary base for a context `factor` times the trained one."""
    return factor ** (head_dim / (head_dim - 2))


def rope_tables(cfg: ModelConfig, context: int = 0, scaling: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position and frequency, `[context, 1, head_dim/2]` (the 1 broadcasts over
    heads), computed in fp32 exactly as `transformers` computes Llama's, so exports give the same logits.

    `context` above `cfg.context` serves positions the model never trained on (`GPT.extend_context`);
    `scaling` maps them into the trained range as `transformers`' `rope_scaling` does for a factor
    of context / cfg.context: "linear" divides every position by it (position interpolation),
    "ntk" raises the base by factor^(d/(d-2)) (NTK-aware; `dynamic` at the full context), "none"
    extrapolates. docs/LOG.md, "Serving past the trained context", measured which loses least."""
    if scaling not in ROPE_SCALINGS:
        raise ConfigError(f"rope scaling {scaling!r}: choose one of {', '.join(ROPE_SCALINGS)}")
    head_dim = cfg.n_embd // cfg.n_head
    context = context or cfg.context
    factor = max(1.0, context / cfg.context)
    theta = cfg.rope_theta * ntk_base_factor(head_dim, factor) if scaling == "ntk" else cfg.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling == "linear":
        inv_freq = inv_freq / factor
    freqs = torch.outer(torch.arange(context, dtype=torch.int64).float(), inv_freq)
    return freqs.cos()[:, None, :], freqs.sin()[:, None, :]


def check_context(cfg: ModelConfig, context: int, setting: str = "serve.context") -> None:
    """Raise ConfigError when a model of `cfg` cannot run at `context` positions: learned positions
    end at their table, so only rotary ones go past the trained context."""
    if context < 1:
        raise ConfigError(f"{setting} = {context}: give a number of tokens (at least 1), or 0 for the trained context")
    if context > cfg.context and cfg.positions != "rope":
        raise ConfigError(
            f"{setting} = {context}: this model has learned positions, whose table ends at its trained context of "
            f"{cfg.context}; serve it at {cfg.context} or less (only rotary positions go further)")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` `[B, T, H, head_dim]` in the "rotate_half" layout (Llama in `transformers`): the
    first half of each head holds the real parts, the second half the imaginary parts. Using this
    layout (not interleaved pairs) means the exported q/k weights need no permutation."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast q/k are bf16 while the tables stay fp32
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head = cfg.n_head, kv_heads(cfg)
        self.head_dim = cfg.n_embd // cfg.n_head
        # One fused projection for q, k and v (one matmul instead of three); its rows are
        # [q: n_head heads | k: n_kv_head heads | v: n_kv_head heads], GPT-2's c_attn order.
        self.c_attn = nn.Linear(cfg.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache: Cache | None,
                mask: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
        B, T, C = x.shape
        kv_width = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_width, kv_width], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim)
        if rope is not None:
            # Rotate before the transpose so q stays in [B, T, H, D] memory order: SDPA then writes
            # its output in that order too and the reshape for c_proj below needs no copy.
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # [B, T, H, D] -> [B, H, T, D] as strided views: SDPA reads them without a copy.
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if self.n_kv_head != self.n_head:
            # Each group of n_head/n_kv_head query heads shares one K/V head (Llama's repeat_kv order).
            groups = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GPT-2's GELU MLP, or Llama's SwiGLU with gate and up fused into c_fc (rows [gate | up])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        hidden = mlp_hidden(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden if self.swiglu else hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")  # GPT-2's "gelu_new", one fused kernel
        return self.dropout(self.c_proj(h))


class MoE(nn.Module):
    """Mixture of experts (Mixtral's routing): softmax over the router's scores, each token goes to
    its top_k experts, whose outputs are mixed by the renormalised top_k probabilities.

    Load-balancing loss (Switch Transformer): n_experts * sum_e f_e * P_e, with f_e the share of
    routed token slots that went to expert e and P_e its mean router probability; it is 1 when the
    load is uniform and grows as the router collapses onto few experts.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.n_experts, cfg.top_k
        self.router = nn.Linear(cfg.n_embd, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg) for _ in range(cfg.n_experts))
        self.aux_loss: torch.Tensor | None = None
        self.utilization: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(flat), dim=-1, dtype=torch.float32)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        share = torch.bincount(chosen.flatten(), minlength=self.n_experts).float() / chosen.numel()
        self.aux_loss = self.n_experts * (share * probs.mean(dim=0)).sum()
        self.utilization = share.detach()
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = make_norm(cfg)
        self.mlp = MoE(cfg) if cfg.n_experts else MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache: Cache | None,
                mask: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, mask, causal)
        return x + self.mlp(self.ln_2(x))


# ---- the model -----------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_model_config(cfg)
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            ln_f=make_norm(cfg),
        ))
        if cfg.positions == "learned":
            self.transformer["wpe"] = nn.Embedding(cfg.context, cfg.n_embd)
        else:
            cos, sin = rope_tables(cfg)
            # Not persistent: derived from the config, so checkpoints and exports do not carry them.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.trained_context, self.rope_scaling = cfg.context, "none"  # until extend_context
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            # Weight tying (Press & Wolf 2017): one matrix reads and writes tokens; saves V x C params.
            self.lm_head.weight = self.transformer.wte.weight
        self.last_aux_loss: torch.Tensor | None = None
        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds two projections onto the residual stream, so their
        # weights get std 0.02 / sqrt(2 * n_layer) to keep the stream's variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def extend_context(self, context: int, scaling: str = "none") -> None:
        """Run at `context` positions instead of the trained context (llama.cpp's `--ctx-size`, vLLM's
        `max_model_len`): rotary tables rebuilt for them, and `config.context`, which sizes the
        engine's KV cache and prompt limit, set to it. Past the trained context the positions were
        never trained (`rope_tables` on `scaling`). Call it before an engine is built on the model:
        engines copy the tables."""
        trained = replace(self.config, context=self.trained_context)
        check_context(trained, context)
        if trained.positions == "rope":
            cos, sin = rope_tables(trained, context, scaling)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)
        self.rope_scaling = scaling if context > trained.context else "none"
        self.config = replace(self.config, context=context)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, logits_to_keep: int = 0,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits `[B, T, V]` for every position of `idx` `[B, T]`, and the loss when `targets` is
        given: mean cross-entropy over targets != -1, plus aux_loss_weight x the router loss (MoE).

        With `kv_cache` (a `KVCache`) the tokens continue the cached ones, after its shared length,
        and their keys/values are stored in it. (One token per running sequence, each after its own
        length, is `decode`.)
        `logits_to_keep` > 0 (without targets) computes the logits of the last that many positions
        only, `[B, logits_to_keep, V]`: what generation needs, without the output head's cost over the
        whole prompt (transformers' name).
        `keep`, a boolean `[B, T]` mask (without targets), computes the logits of the positions it
        marks only, `[N, V]` in row order: a fine-tuning loss needs the answers' positions, and the
        output head and its softmax over the vocabulary are most of a small model's work.
        """
        B, T = idx.shape
        if kv_cache is None:
            layout = Layout(torch.arange(T, device=idx.device), None, True, T, 0)
        else:
            layout = kv_cache.layout(T, idx.device)
        if layout.end > self.config.context:
            raise LondiniumError(
                f"sequence of {layout.end} tokens is longer than the model's context (model.context = "
                f"{self.config.context}); shorten the prompt or generate fewer tokens")
        if kv_cache is not None and layout.end > kv_cache.max_len:
            raise LondiniumError(f"KV cache holds {kv_cache.max_len} tokens, {layout.end} needed; make a larger cache")
        x = self.transformer.wte(idx)
        rope = None
        if self.config.positions == "learned":
            x = x + self.transformer.wpe(layout.positions)
        elif layout.start is not None:
            rope = (self.rope_cos[layout.start:layout.end], self.rope_sin[layout.start:layout.end])  # [T, 1, head_dim/2]
        else:
            rope = (self.rope_cos[layout.positions], self.rope_sin[layout.positions])  # per row: [B, T, 1, head_dim/2]
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, kv_cache, layout.mask, layout.causal)
        if kv_cache is not None:
            kv_cache.advance(T)
        if logits_to_keep and targets is None:
            x = x[:, -logits_to_keep:]
        if keep is not None and targets is None:
            x = x[keep]
        logits = self.lm_head(self.transformer.ln_f(x))

        self.last_aux_loss = None
        if self.config.n_experts:
            self.last_aux_loss = torch.stack([b.mlp.aux_loss for b in self.transformer.h]).mean()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1)
            if self.last_aux_loss is not None:
                loss = loss + self.config.aux_loss_weight * self.last_aux_loss
        return logits, loss

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: StepKV) -> torch.Tensor:
        """Logits `[B, V]` of one decode step: row b's token `tokens[b]` at position `positions[b]`,
        over its own keys in row b of a SlotCache, read and written through `cache` (its
        `view_type`: tensors only, so the step can be compiled once per shape, see
        `londinium.infer.decode`). The engine checks the context."""
        x = self.transformer.wte(tokens)[:, None]
        rope = None
        if self.config.positions == "learned":
            x = x + self.transformer.wpe(positions)[:, None]
        else:
            rope = (self.rope_cos[positions][:, None], self.rope_sin[positions][:, None])  # [B, 1, 1, head_dim/2]
        for block in self.transformer.h:
            x = block(x, rope, cache, cache.mask, False)
        return self.lm_head(self.transformer.ln_f(x))[:, 0]

    # ---- what the trainer and the engine need ---------------------------------------------------

    def new_kv_cache(self, batch_size: int, max_len: int | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for `batch_size` sequences of up to `max_len` tokens (default: the context),
        on the model's device and dtype unless given."""
        p = self.transformer.wte.weight  # float32 whatever the linear layers hold (model/quantize.py)
        cfg = self.config
        return KVCache(cfg.n_layer, batch_size, kv_heads(cfg), max_len or cfg.context, cfg.n_embd // cfg.n_head,
                       device=device or p.device, dtype=dtype or p.dtype)

    def new_slot_cache(self, slots: int, max_len: int | None = None, kv_dtype: str = "float32") -> SlotCache:
        """An empty cache of `slots` sequences of up to `max_len` tokens each (default: the context),
        holding keys and values in `kv_dtype` ('int8': `londinium.model.kv_int8`)."""
        p = self.transformer.wte.weight  # float32 whatever the linear layers hold (model/quantize.py)
        cfg = self.config
        kind = SlotCache
        if kv_dtype == "int8":
            from londinium.model.kv_int8 import Int8SlotCache as kind
        elif kv_dtype != "float32":
            raise ConfigError(f"KV cache dtype {kv_dtype!r}: choose float32 or int8")
        return kind(cfg.n_layer, slots, kv_heads(cfg), max_len or cfg.context, cfg.n_embd // cfg.n_head,
                    device=p.device, dtype=p.dtype)

    def moe_utilization(self) -> list[list[float]] | None:
        """Per layer, the share of routed token slots each expert took in the last forward; None if dense."""
        if not self.config.n_experts:
            return None
        return [b.mlp.utilization.tolist() if b.mlp.utilization is not None else [] for b in self.transformer.h]

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters (a tied matrix counted once). non_embedding=True leaves out the token and
        position embeddings and an untied output head (Kaplan et al.'s N)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 N + 12 n_layer n_embd T, where N is the
        parameters that take part in matmuls (see `londinium.model.info.flops_per_token`)."""
        from londinium.model.info import flops_per_token

        return flops_per_token(self.config, seq_len)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on matrices and embeddings (dim >= 2), none on norms and biases."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
