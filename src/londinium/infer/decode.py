"""One decode step of the engine's running sequences, eager or compiled.

`Decoder.logits` runs `GPT.decode` over the rows of a `SlotCache` and returns their logits;
`Decoder.greedy` also picks each row's argmax and its log-probability inside the same call, so an
all-greedy batch without logits processors costs one forward pass and one small transfer per step
(the engine's fast path). Both give what the eager forward pass gives (the equivalence tests hold
them to it). Eager, the running sequences of a Llama-style model go through `FusedStep` (`infer/fused.py`): the
same step written out op by op, 1.7-2.0x faster at batch 1, the same logits bit for bit.

`compile=True` runs both through `torch.compile` (Inductor; on CPU its C++ backend, with the C++
wrapper so the step's kernels are called from C++ rather than Python, which is most of the gain at
batch 1 on a small model). Shapes are static, so each is compiled once and then only looked up: the
rows are padded up to a power of two (at most the cache's slots; padding rows write to free slots,
which are overwritten when a sequence joins) and the keys read up to a power of two of at least 64
columns (masked past each row's length). So a server meets at most about log2(max_running) x
log2(context / 64) shapes, each compiled the first time it is met: tens of seconds each on a small
CPU, seconds when Inductor's on-disk cache already holds it (see docs/generation.md, "Speed").
Compiled, a single running sequence of a Llama-style model goes through `FusedStep.static` (the
fused ops with a tensor position, its keys read to the same power-of-two span) compiled ahead of
time by AOTInductor (`infer/aot.py`): one library call a step instead of `torch.compile`'s Python
path around the same kernels (docs/LOG.md); given `compiled_dir`, its libraries are kept there and
later processes load them instead of building them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from londinium.infer.fused import fused_step
from londinium.model.cache import SlotCache

MIN_SPAN = 64  # keys read by a compiled step at least: short sequences share one shape


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _logits(model: Any, view: type, tokens: torch.Tensor, positions: torch.Tensor, buffers: tuple, span: int,
            masked: bool) -> torch.Tensor:
    return model.decode(tokens, positions, view(buffers, positions, span, masked)).float()


def _greedy(model: Any, view: type, tokens: torch.Tensor, positions: torch.Tensor, buffers: tuple, span: int,
            masked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _choose_greedy(_logits(model, view, tokens, positions, buffers, span, masked))


def _choose_greedy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best = logits.argmax(dim=-1)
    # The same ops as the engine's general path (argmax; log_softmax then gather), so the fast path's
    # tokens and log-probabilities are those of the slow one, bit for bit.
    return best, logits.log_softmax(dim=-1).gather(1, best[:, None])[:, 0]


def _compiled_at_first_call(fn: Any, options: dict[str, Any]) -> Any:
    """`torch.compile(fn)`, made when first called: making it imports dynamo, ~2.4 s of CPU, which a
    batch-1 engine whose every step is an ahead-of-time library (`infer/aot.py`) never needs."""
    compiled = None

    def call(*args: Any) -> Any:
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(fn, dynamic=False, options=options)
        return compiled(*args)

    return call


class Decoder:
    """The engine's decode step for `model` (see the module docstring)."""

    def __init__(self, model: Any, compile: bool = False, compiled_dir: Path | None = None):
        self.model = model
        self.compiled = compile
        self.shapes: set[tuple[int, int]] = set()  # (rows, span) met so far: each is one compilation
        self.fused = fused_step(model)  # eager: every batch; compiled: batch 1 (see infer/fused.py)
        self._greedy, self._logits = functools.partial(_greedy, model), functools.partial(_logits, model)
        self.aot = None  # the batch-1 fused step through AOTInductor (infer/aot.py), when compiled
        if compile:
            # The C++ wrapper: the compiled step calls its kernels from C++ (1.7x faster at batch 1
            # on the tiny preset than Inductor's default Python wrapper; docs/LOG.md).
            options = {"cpp_wrapper": True}
            self._greedy = _compiled_at_first_call(self._greedy, options)
            self._logits = _compiled_at_first_call(self._logits, options)
            if self.fused is not None:
                from londinium.infer.aot import AotStep

                self.aot = AotStep(self.fused, compiled_dir)  # its libraries kept in `compiled_dir` for later processes

    def _span(self, slots: SlotCache) -> int:
        """Keys a compiled step reads: a power of two, at least MIN_SPAN, at most the cache's length."""
        return min(max(MIN_SPAN, _pow2(max(slots.lengths) + 1)), slots.max_len)

    def _static(self, slots: SlotCache) -> bool:
        """Whether this step runs the compiled fused step: compiled, one row, the fused layout."""
        return self.aot is not None and slots.rows == 1 and self.fused is not None and self.fused.applies(slots)

    def _static_step(self, tokens: torch.Tensor, slots: SlotCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.aot is not None
        span = self._span(slots)
        self.shapes.add((1, span))
        return self.aot(tokens, slots.positions(), *slots.buffers(), span)

    def _inputs(self, tokens: torch.Tensor, slots: SlotCache) -> tuple[tuple, int]:
        B, lengths = slots.rows, slots.lengths
        longest = max(lengths)
        if not self.compiled:
            # Exact shapes; rows of one length need no mask (always so at batch 1).
            return (slots.view_type, tokens, slots.positions(), slots.buffers(), longest + 1, min(lengths) != longest), B
        rows = min(_pow2(B), slots.slots)
        span = self._span(slots)
        positions = slots.positions()
        if rows > B:
            pad = rows - B
            tokens = torch.cat([tokens, tokens.new_zeros(pad)])
            positions = torch.cat([positions, positions.new_zeros(pad)])
        self.shapes.add((rows, span))
        return (slots.view_type, tokens, positions, slots.buffers(), span, True), B

    def logits(self, tokens: torch.Tensor, slots: SlotCache) -> torch.Tensor:
        """`[B, V]` float logits of the rows in use; each row's key and value are stored, not yet
        counted (the caller advances the cache)."""
        if self._static(slots):
            return self._static_step(tokens, slots)[0]
        if not self.compiled and self.fused is not None and self.fused.applies(slots):
            return self.fused(tokens, slots).float()
        args, B = self._inputs(tokens, slots)
        return self._logits(*args)[:B]

    def greedy(self, tokens: torch.Tensor, slots: SlotCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's most likely next token and its log-probability."""
        if self._static(slots):
            return self._static_step(tokens, slots)[1:]
        if not self.compiled and self.fused is not None and self.fused.applies(slots):
            return _choose_greedy(self.fused(tokens, slots).float())
        args, B = self._inputs(tokens, slots)
        best, logprob = self._greedy(*args)
        return best[:B], logprob[:B]
