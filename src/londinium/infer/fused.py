"""The decode step of a Llama-style model written out op by op, for the engine's eager path.

At batch 1 a small model's decode step is dispatch, not arithmetic: the tiny preset's 2 x 128 step
is ~120 ATen calls through nn.Module's `__call__`, dropout layers that do nothing in eval mode,
views, transposes and the slot cache's indexed writes, and ~1.4 MFLOP of work. `FusedStep` runs the
same arithmetic on the same weights with the bookkeeping left out: functions instead of modules, one
rotary rotation for q and k together, the new key and value copied into a narrowed view of row 0 of
the slot cache, attention over the row's keys so far. The logits are those of `GPT.decode`, bit for
bit (the same kernels on the same values in the same order; `tests/unit/test_fused_step.py`), so a
sequence decodes the same alone, with others, or where this step does not apply (`GPT.decode`).

At batch > 1 (the server under concurrency) the same holds row by row: each row's key and value
are written at its own position (one indexed write per layer, as `StepKV` does) and its query sees
its own keys through the boolean mask `GPT.decode` builds, in one SDPA call for all rows; what is
left out is the modules' and `StepKV`'s Python, which at the tiny preset's 16 rows was ~20% of a
step (docs/LOG.md). The logits equal `GPT.decode`'s bit for bit here too.

Speculative decoding (`infer/speculative.py`) uses the same ops for a draft's one-token steps over
its own KVCache (`draft_step`) and for the target's check of the k + 1 tokens of a round (`check`,
causal among them): those agree with GPT.forward to rounding, not bit for bit, as the module
path's check already did with the batch-1 step (a draft's law is whatever it computes; the check's
argmax is the target's to rounding).

Compiled (`generate.compile`, `infer/decode.py`), batch 1 runs `static`: the same ops with the
position a tensor and the keys read up to a fixed `span`, so one graph serves every position of a
span. Its cache writes are indexed writes into the buffers themselves (`index_put_`), which Inductor
does in place; `index_copy_` into a view of a buffer made it copy the whole layer's keys and values
each step (docs/LOG.md). The keys past the position are
masked, so its logits agree with the eager step's to rounding, not bit for bit.

It covers the Llama-style layout of the tiny preset: rotary positions, RMSNorm, SwiGLU (with or
without biases), as many key/value heads as query heads, dense MLPs, float32 `nn.Linear` weights and the float32 slot cache. For
anything else (`fused_step` returns None) the engine calls `GPT.decode`.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from londinium.model.cache import KVCache, SlotCache


def fused_step(model: Any) -> FusedStep | None:
    """A FusedStep for `model` if its layout is the one written out here; None otherwise."""
    cfg = model.config
    plain = (cfg.positions == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and not cfg.n_experts
             and cfg.n_kv_head in (0, cfg.n_head))
    if not plain:
        return None  # another layout (a mixture of experts has no b.mlp.c_fc to look at)
    linears = [m for b in model.transformer.h for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
    if not all(type(m) is nn.Linear for m in [*linears, model.lm_head]):
        return None  # weights packed by model/quantize.py
    return FusedStep(model)


class FusedStep:
    """`GPT.decode` over the rows of a float32 SlotCache (see the module docstring). It holds
    the model's modules as they are when it is made: weights changed in place are seen, modules
    replaced afterwards (`quantize_weights` on a model an engine already runs) are not."""

    def __init__(self, model: Any):
        cfg = model.config
        self.model = model
        self.width, self.heads, self.eps = cfg.n_embd, cfg.n_head, cfg.norm_eps
        self.head_dim = cfg.n_embd // cfg.n_head
        # The parameters and modules themselves (not copies): weights changed in place (training, RL) are seen.
        self.blocks = [(b.ln_1.weight, b.attn.c_attn, b.attn.c_proj, b.ln_2.weight, b.mlp.c_fc, b.mlp.c_proj)
                       for b in model.transformer.h]
        self.wte, self.ln_f, self.head = model.transformer.wte.weight, model.transformer.ln_f.weight, model.lm_head.weight
        self.cos, self.sin = model.rope_cos[:, 0], model.rope_sin[:, 0]  # [context, head_dim/2]
        self.row0 = torch.zeros(1, dtype=torch.long, device=self.wte.device)  # `static` writes row 0 through an index

    def weights(self) -> list[torch.Tensor]:
        """Every tensor of the model this step reads (what a compiled copy of it must follow)."""
        return [*(t for block in self.blocks for t in (block[0], *block[1].parameters(), *block[2].parameters(), block[3],
                                                        *block[4].parameters(), *block[5].parameters())),
                self.wte, self.ln_f, self.head]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor `static` reads: the weights, the rotary tables and the row index, in the
        order `bound` takes them (an ahead-of-time library takes them as inputs, `infer/aot.py`)."""
        return [*self.weights(), self.cos, self.sin, self.row0]

    def bound(self, tensors: list[torch.Tensor]) -> FusedStep:
        """This step reading `tensors` (in the order of `tensors()`) instead of the model's own."""
        given = iter(tensors)

        def linear(m: nn.Linear) -> _Linear:
            return _Linear(next(given), next(given) if m.bias is not None else None)

        new = copy.copy(self)
        # A tuple's items are evaluated left to right: the order of `weights()`.
        new.blocks = [(next(given), linear(a), linear(p), next(given), linear(f), linear(d)) for _, a, p, _, f, d in self.blocks]
        new.wte, new.ln_f, new.head, new.cos, new.sin, new.row0 = (next(given) for _ in range(6))
        return new

    def applies(self, slots: Any) -> bool:
        """Whether this step can run the decode step of `slots` now: a row or more, the float32 cache,
        eval mode (in training mode GPT.decode would apply dropout)."""
        return slots.rows >= 1 and type(slots) is SlotCache and not self.model.training

    def __call__(self, tokens: torch.Tensor, slots: SlotCache) -> torch.Tensor:
        """Logits `[B, V]` of each row's next token `tokens` `[B]` at its position; their keys and values
        are written (the caller advances the cache, as after GPT.decode)."""
        if slots.rows > 1:
            return self._rows(tokens, slots)
        return self._one(tokens, *slots.buffers(), slots.lengths[0])

    def draft_step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits `[1, V]` of one token `tokens` `[1]` after the `cache.length` tokens of a float32
        one-sequence KVCache (a draft model's, `infer/speculative.py`); its key and value are written
        and the cache advanced. The same ops as at batch 1 above; a draft's proposals need no more
        than its own law, so this path is not held to GPT.forward's bits (it agrees to rounding)."""
        logits = self._one(tokens, cache.k, cache.v, cache.length)
        cache.length += 1
        return logits

    def check(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits `[T, V]` of `tokens` `[T]` after the `cache.length` tokens of a float32 one-sequence
        KVCache, each seeing the ones before it (the target's check of a draft's proposals,
        `infer/speculative.py`); their keys and values are written and the cache advanced, as
        GPT.forward does (to rounding, like `draft_step`)."""
        C, H, D, eps, T, pos = self.width, self.heads, self.head_dim, self.eps, tokens.shape[0], cache.length
        keys, values = cache.k, cache.v
        end = pos + T
        # Query i sees keys 0 .. pos + i (SDPA's is_causal aligns its triangle top-left, so a mask).
        mask = torch.arange(end, device=tokens.device)[None, :] <= torch.arange(pos, end, device=tokens.device)[:, None]
        x = F.embedding(tokens, self.wte).view(1, T, C)
        cos, sin = self.cos[pos:end].view(T, 1, D // 2), self.sin[pos:end].view(T, 1, D // 2)
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, down) in enumerate(self.blocks):
            q, k, v = F.linear(F.rms_norm(x, (C,), ln_1, eps), c_attn.weight, c_attn.bias).view(1, T, 3, H, D).unbind(2)
            qk = _rotate(torch.stack((q, k)), cos, sin)  # [2, 1, T, H, D]
            keys[layer][0, :, pos:end].copy_(qk[1, 0].transpose(0, 1))
            values[layer][0, :, pos:end].copy_(v[0].transpose(0, 1))
            y = F.scaled_dot_product_attention(qk[0].transpose(1, 2), keys[layer][:1, :, :end], values[layer][:1, :, :end],
                                               attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(1, T, C), c_proj.weight, c_proj.bias)
            x = x + _mlp(x, ln_2, c_fc, down, eps)
        cache.length = end
        return self._logits(x)[0]

    def static(self, tokens: torch.Tensor, positions: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
               span: int) -> torch.Tensor:
        """Logits `[1, V]` of row 0's token `tokens` `[1]` at `positions` `[1]` (a tensor, not a Python
        int), over its keys 0 .. position among the first `span` columns: tensors and a fixed span
        only, so `torch.compile` makes one graph per span (see the module docstring)."""
        C, H, D, eps = self.width, self.heads, self.head_dim, self.eps
        x = F.embedding(tokens, self.wte).view(1, 1, C)
        cos, sin = self.cos.index_select(0, positions), self.sin.index_select(0, positions)  # [1, D/2]
        mask = (torch.arange(span, device=positions.device) <= positions).view(1, span)
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, down) in enumerate(self.blocks):
            q, k, v = F.linear(F.rms_norm(x, (C,), ln_1, eps), c_attn.weight, c_attn.bias).view(1, 3, H, D).unbind(1)
            qk = _rotate(torch.stack((q, k)), cos, sin)
            keys[layer][self.row0, :, positions] = qk[1]  # index_put_ on the buffer: in place when compiled
            values[layer][self.row0, :, positions] = v
            y = F.scaled_dot_product_attention(qk[0].view(1, H, 1, D), keys[layer][:1, :, :span], values[layer][:1, :, :span],
                                               attn_mask=mask)
            x = x + F.linear(y.view(1, 1, C), c_proj.weight, c_proj.bias)
            x = x + _mlp(x, ln_2, c_fc, down, eps)
        return self._logits(x)[:, 0]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.rms_norm(x, (self.width,), self.ln_f, self.eps), self.head)

    def _one(self, tokens: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], pos: int) -> torch.Tensor:
        C, H, D, eps = self.width, self.heads, self.head_dim, self.eps
        x = F.embedding(tokens, self.wte).view(1, 1, C)
        cos, sin = self.cos[pos], self.sin[pos]
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, down) in enumerate(self.blocks):
            q, k, v = F.linear(F.rms_norm(x, (C,), ln_1, eps), c_attn.weight, c_attn.bias).view(1, 3, H, D).unbind(1)
            qk = _rotate(torch.stack((q, k)), cos, sin)  # q and k together, as `apply_rope` does
            keys[layer][0, :, pos].copy_(qk[1, 0])
            values[layer][0, :, pos].copy_(v[0])
            y = F.scaled_dot_product_attention(qk[0].view(1, H, 1, D), keys[layer][:1, :, :pos + 1],
                                               values[layer][:1, :, :pos + 1])
            x = x + F.linear(y.view(1, 1, C), c_proj.weight, c_proj.bias)
            x = x + _mlp(x, ln_2, c_fc, down, eps)
        return self._logits(x)[:, 0]

    def _rows(self, tokens: torch.Tensor, slots: SlotCache) -> torch.Tensor:
        """B > 1 rows, each at its own position: GPT.decode's ops (and StepKV's writes and mask) without
        the modules around them."""
        C, H, D, eps, B = self.width, self.heads, self.head_dim, self.eps, slots.rows
        positions, lengths = slots.positions(), slots.lengths
        span = max(lengths) + 1
        keys, values = slots.buffers()
        rows = torch.arange(B, device=positions.device)
        # Rows of one length see every column: no mask, as GPT.decode decides through StepKV.
        mask = None if min(lengths) == span - 1 else \
            (torch.arange(span, device=positions.device)[None, :] <= positions[:, None])[:, None, None, :]
        x = F.embedding(tokens, self.wte).view(B, 1, C)
        cos, sin = self.cos[positions].view(B, 1, 1, D // 2), self.sin[positions].view(B, 1, 1, D // 2)
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, down) in enumerate(self.blocks):
            q, k, v = F.linear(F.rms_norm(x, (C,), ln_1, eps), c_attn.weight, c_attn.bias).view(B, 1, 3, H, D).unbind(2)
            qk = _rotate(torch.stack((q, k)), cos, sin)  # [2, B, 1, H, D]
            keys[layer][rows, :, positions] = qk[1, :, 0]
            values[layer][rows, :, positions] = v[:, 0]
            y = F.scaled_dot_product_attention(qk[0].transpose(1, 2), keys[layer][:B, :, :span], values[layer][:B, :, :span],
                                               attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(B, 1, C), c_proj.weight, c_proj.bias)
            x = x + _mlp(x, ln_2, c_fc, down, eps)
        return self._logits(x)[:, 0]


class _Linear(NamedTuple):
    """A linear layer's tensors where `bound` stands them in for an nn.Linear."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def _rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """q and k stacked `[2, ..., D]`, rotated by their positions' cos and sin in the "rotate_half" layout
    of `model.gpt.apply_rope` (the same ops, so the same bits)."""
    re, im = qk.chunk(2, dim=-1)
    return torch.cat((re * cos - im * sin, im * cos + re * sin), dim=-1)


def _mlp(x: torch.Tensor, ln_2: torch.Tensor, c_fc: nn.Linear, down: nn.Linear, eps: float) -> torch.Tensor:
    """The SwiGLU MLP of a block on its RMSNorm'd input (what the block adds to `x`)."""
    gate, up = F.linear(F.rms_norm(x, (x.shape[-1],), ln_2, eps), c_fc.weight, c_fc.bias).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down.weight, down.bias)
