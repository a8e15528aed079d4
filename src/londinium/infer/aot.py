"""The fused batch-1 decode step compiled ahead of time with AOTInductor, for `generate.compile`.

`torch.compile` runs a compiled step through Python on every call: dynamo's frame hook and guards,
AOTAutograd's runtime wrapper, then the C++ wrapper's kernels. At one row of the tiny preset that
path is a large part of a ~330 us step. AOTInductor (`torch.export` then
`torch._inductor.aoti_compile_and_package`) compiles the same Inductor kernels into a shared library
that is called as one function: on the tiny run the bare step took 228-414 us against 321-597 us
through `torch.compile` (9 alternating rounds, load 4.3; the same tokens; docs/LOG.md).

One library per key span (the same powers of two as `infer/decode.py`), ~30 s to build on the
development CPU. The libraries hold no weights: the step is exported with every tensor it reads
(weights, rotary tables) as inputs, handed in live at every call, so a library depends only on the
code, not on the checkpoint, and a weight changed in place (training, RL) is read as it is. Built
once, a library is kept in a folder (the workspace's `compiled/`, see `Engine.with_settings`) under
a key of everything that makes its code: the shapes, strides and dtypes of its inputs, the span,
the norm's epsilon, the torch version, the CPU's instruction set and the source of this module and
`infer/fused.py`; the next process loads it in well under a second instead of building it again.
Without a folder the libraries are built in a temporary one, in every process. Each library returns
the logits, the argmax and its log-probability, so greedy and sampled rows share it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from londinium.errors import PathError
from londinium.files import atomic_write
from londinium.infer import fused
from londinium.infer.fused import FusedStep


class _Step(nn.Module):
    """`FusedStep.static` over `span` keys with the cache buffers and the step's tensors as inputs,
    as torch.export takes it."""

    def __init__(self, step: FusedStep, span: int, n_layer: int):
        super().__init__()
        self.step, self.span, self.n_layer = step, span, n_layer

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        L = self.n_layer
        keys, values, tensors = list(inputs[:L]), list(inputs[L:2 * L]), list(inputs[2 * L:])
        logits = self.step.bound(tensors).static(tokens, positions, keys, values, self.span).float()
        best = logits.argmax(dim=-1)
        # The same ops as `decode._choose_greedy`, so a greedy token is the one the logits give.
        return logits, best, logits.log_softmax(dim=-1).gather(1, best[:, None])[:, 0]


def library_key(inputs: list[torch.Tensor], span: int, eps: float, torch_version: str = torch.__version__) -> str:
    """What a library's code depends on, hashed: a stored library with another key is not reused."""
    code = hashlib.sha256(Path(__file__).read_bytes() + Path(fused.__file__).read_bytes()).hexdigest()
    parts = [torch_version, torch.backends.cpu.get_cpu_capability(), span, eps, code,
             [(str(t.dtype), t.device.type, list(t.shape), list(t.stride())) for t in inputs]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


class AotStep:
    """The batch-1 step of a `FusedStep` through AOTInductor libraries, one per key span, kept in
    `store` (a folder) when given."""

    def __init__(self, step: FusedStep, store: Path | None = None):
        if store is not None and Path(store).exists() and not Path(store).is_dir():
            # Said before a library is built (half a minute or more), not when it is written.
            raise PathError(f"{store} is not a folder: generate.compile keeps its compiled decode steps there; "
                            "move that file away, or set generate.compile=false")
        self.step, self.store = step, store
        self.runners: dict[int, Any] = {}  # span -> AOTInductor's loader of that span's library
        self.built: list[int] = []  # spans built by this process
        self.loaded: list[int] = []  # spans loaded from the store

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                 span: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits `[1, V]`, argmax `[1]` and its log-probability `[1]` of row 0's next token; its key
        and value are written at `positions` (the caller advances the cache)."""
        inputs = [tokens, positions, *keys, *values, *self.step.tensors()]
        runner = self.runners.get(span)
        if runner is None:
            runner = self.runners[span] = self._runner(inputs, span, len(keys))
        # The loader itself, not the package's `__call__`, which parses its argument and result specs
        # from JSON and flattens them on every call; the inputs and outputs here are flat already.
        logits, best, logprob = runner.boxed_run(inputs)
        return logits, best, logprob

    def path(self, inputs: list[torch.Tensor], span: int) -> Path | None:
        """Where the library for these inputs and span is kept (None: no store)."""
        if self.store is None:
            return None
        return Path(self.store) / f"fused-step-span{span}-{library_key(inputs, span, self.step.eps)}.pt2"

    def _runner(self, inputs: list[torch.Tensor], span: int, n_layer: int) -> Any:
        path = self.path(inputs, span)
        if path is not None and path.is_file():
            try:
                runner = _loader(path)
            except RuntimeError:
                pass  # unreadable (cut short by a full disk, say): built again below and written over
            else:
                self.loaded.append(span)
                return runner
        with tempfile.TemporaryDirectory() as tmp:
            built = self._build(inputs, span, n_layer, Path(tmp) / "step.pt2")
            self.built.append(span)
            if path is None:
                return _loader(built)
            with atomic_write(path, "wb") as f:
                f.write(built.read_bytes())
        return _loader(path)

    def _build(self, inputs: list[torch.Tensor], span: int, n_layer: int, package: Path) -> Path:
        # Exported outside inference mode, on stand-ins of the same shapes (the engine's own tensors
        # are inference tensors, which export does not take); the library is then called on the real ones.
        with torch.inference_mode(False):
            example = tuple(torch.zeros_like(t) for t in inputs)
            program = torch.export.export(_Step(self.step, span, n_layer), example)
            return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(package)))


def _loader(package: Path) -> Any:
    """AOTInductor's C++ loader of a package's library (the model `aoti_compile_and_package` names
    "model", on the CPU). `torch._inductor.aoti_load_package` returns the same loader, but through
    Python that imports Inductor and torch.export first: 14 s wall for 3 libraries on the busy
    development CPU, against 0.04 s for the loader alone (docs/LOG.md)."""
    return torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
