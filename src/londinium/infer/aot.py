"""The fused batch-1 decode step compiled ahead of time with AOTInductor, for `generate.compile`.

`torch.compile` runs a compiled step through Python on every call: dynamo's frame hook and guards,
AOTAutograd's runtime wrapper, then the C++ wrapper's kernels. At one row of the tiny preset that
path is a large part of a ~330 us step. AOTInductor (`torch.export` then
`torch._inductor.aoti_compile_and_package`) compiles the same Inductor kernels into a shared library
that is called as one function: on the tiny run the bare step took 228-414 us against 321-597 us
through `torch.compile` (9 alternating rounds, load 4.3; the same tokens; docs/LOG.md).

One library per key span (the same powers of two as `infer/decode.py`), built the first time a span
is met, in every process: ~30 s each on the development CPU, and Inductor's on-disk cache did not
shorten it in a second process (unlike `torch.compile`'s). Each library returns the logits, the argmax and its
log-probability, so greedy and sampled rows share it. The weights are compiled into the library
(AOTInductor lifts the tensors the step reads into constants): a weight changed in place afterwards
(training, RL) is noticed through its version counter and the libraries are built again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from londinium.infer.fused import FusedStep


class _Step(nn.Module):
    """`FusedStep.static` over `span` keys with the cache buffers as inputs, as torch.export takes it."""

    def __init__(self, step: FusedStep, span: int, n_layer: int):
        super().__init__()
        self.step, self.span, self.n_layer = step, span, n_layer

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *buffers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys, values = list(buffers[:self.n_layer]), list(buffers[self.n_layer:])
        logits = self.step.static(tokens, positions, keys, values, self.span).float()
        best = logits.argmax(dim=-1)
        # The same ops as `decode._choose_greedy`, so a greedy token is the one the logits give.
        return logits, best, logits.log_softmax(dim=-1).gather(1, best[:, None])[:, 0]


class AotStep:
    """The batch-1 step of a `FusedStep` through AOTInductor libraries, one per key span."""

    def __init__(self, step: FusedStep):
        self.step = step
        self.runners: dict[int, Any] = {}  # span -> AOTInductor's loader of that span's library
        self._seen = self._versions()

    def _versions(self) -> list[int]:
        # A tensor made under inference_mode has no version counter; it cannot be trained either.
        return [-1 if w.is_inference() else w._version for w in self.step.weights()]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                 span: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits `[1, V]`, argmax `[1]` and its log-probability `[1]` of row 0's next token; its key
        and value are written at `positions` (the caller advances the cache)."""
        seen = self._versions()
        if seen != self._seen:  # weights changed in place since the libraries were built
            self.runners.clear()
            self._seen = seen
        runner = self.runners.get(span)
        if runner is None:
            runner = self.runners[span] = self._build(tokens, positions, keys, values, span)
        # The loader itself, not the package's `__call__`, which parses its argument and result specs
        # from JSON and flattens them on every call; the inputs and outputs here are flat already.
        logits, best, logprob = runner.boxed_run([tokens, positions, *keys, *values])
        return logits, best, logprob

    def _build(self, tokens: torch.Tensor, positions: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
               span: int) -> Any:
        # Exported outside inference mode, on stand-ins of the same shapes (the engine's own tensors
        # are inference tensors, which export does not take); the library is then called on the real ones.
        with torch.inference_mode(False):
            example = tuple(torch.zeros_like(t) for t in (tokens, positions, *keys, *values))
            program = torch.export.export(_Step(self.step, span, len(keys)), example)
            with tempfile.TemporaryDirectory() as tmp:
                path = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(tmp) / f"step-{span}.pt2"))
                return torch._inductor.aoti_load_package(path).loader
