"""Which device and which precision a run uses, and the switches that go with them.

`auto` picks CUDA, then Apple's MPS, then the CPU. Precision follows measurement (docs/training.md):
on the 2-core AVX2 CPUs londinium is developed on, bf16 matmuls ran at 1-23 GFLOP/s against ~187 for
fp32, so CPUs train in fp32;
GPUs train under bf16 autocast when they support it, else fp16 autocast with a gradient scaler
(fp16's narrow exponent underflows small gradients without one). MPS defaults to fp32 because its
autocast coverage is still partial; `train.dtype` overrides any of these.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from londinium.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # compute dtype under autocast; float32 means no autocast

    @property
    def autocast(self) -> bool:
        return self.dtype != torch.float32

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def context(self) -> ContextManager:
        """Autocast for forward passes (weights and optimiser stay fp32)."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        name = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}
        return f"{self.device} {name[self.dtype]}"


def resolve_device(pref: str, local_rank: int = 0, setting: str = "train.device") -> torch.device:
    """The torch device for a device setting (one process per GPU under torchrun: cuda:<local rank>).

    `setting` names where the value came from (`train.device`, `generate.device`, `--device`), so an
    error points at what the user actually wrote."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{setting} = {pref!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{setting} = {pref!r} but this torch has no CUDA device; use 'auto' or 'cpu'")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting} = {pref!r} but MPS is not available; use 'auto' or 'cpu'")
    return device


def resolve_precision(dtype_pref: str, device: torch.device) -> Precision:
    """The compute dtype for `train.dtype` on `device`."""
    if dtype_pref == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
        return Precision(device, dtype)
    if dtype_pref not in DTYPES:
        raise ConfigError(f"train.dtype = {dtype_pref!r}; use one of auto, {', '.join(DTYPES)}")
    dtype = DTYPES[dtype_pref]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.dtype = 'bfloat16' but {torch.cuda.get_device_name(device)} has no bf16; use 'float16' or 'auto'")
    return Precision(device, dtype)


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls on Ampere and newer: ~8x the fp32 rate for the fp32 parts (optimiser-side
    matmuls, anything outside autocast) at a precision training does not notice."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
