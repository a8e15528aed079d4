"""Fewer bytes per weight for inference: the linear layers' weights in float16 or int8.

`quantize_weights(model, "int8" | "float16")` replaces every `nn.Linear` of a GPT (the blocks'
projections and the output head) by a module holding its weight packed for PyTorch's own CPU
kernels (fbgemm, the backend of `torch.ao`'s dynamic quantization), in place. The token (and
position) embeddings stay float32: a lookup reads one row, not the matrix. A tied output head gets
its own packed copy. What the choice rests on was measured on this project's CPU at batch 1 and 8
(docs/LOG.md, "Fewer bytes per weight"): fbgemm's int8 GEMM ran the small preset's matrices
1.6-3x faster than float32 at batch 1; its float16-weight GEMM 1.1-1.7x; weight-only int8 kernels
(torchao's `Int8WeightOnlyConfig`, `torch._weight_int8pack_mm`) 3-8x *slower*; bfloat16 no faster.

- `float16`: weights stored as float16 and widened inside the GEMM; activations and sums stay
  float32 (`quantized::linear_dynamic_fp16`). Half the bytes, results within ~1e-4 relative.
- `int8`: weights int8 with one scale per output channel; activations quantized to 8 bits on the
  fly and multiplied in integers (`quantized::linear_dynamic`). A quarter of the bytes, results
  within ~1-2% relative per layer.

fbgemm picks one activation scale for the whole batch (from its minimum and maximum), which would
make a sequence's tokens depend on what it is batched with. So each row is first divided by its own
largest magnitude, and a row holding -1 and 1 is added: the batch's range is then always exactly
[-1, 1], the scale is the same for every batch, and each row's result depends on that row alone
(the engine's "a request gets the same tokens alone or in any company" holds for int8 too; tested).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from londinium.config import WEIGHT_DTYPES
from londinium.errors import ConfigError


class Float16Linear(nn.Module):
    """A linear layer whose weight is stored in float16; activations and sums stay float32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.has_bias = bias is not None
        self._packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)

    def packed_bytes(self) -> int:
        """Bytes held in the packed weight (float16 weights, float32 bias)."""
        return self.out_features * (2 * self.in_features + (4 if self.has_bias else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, self.in_features), self._packed)
        return y.view(*x.shape[:-1], self.out_features)


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight (one scale per output channel) and 8-bit activations,
    each row scaled on its own (see the module docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        with warnings.catch_warnings():
            # PyTorch deprecates its quantized tensors in favour of torchao (pytorch#184982), whose CPU
            # int8 kernels measured slower than float32 here; fbgemm's are still the fast ones.
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(q, None)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        guard = torch.zeros(1, self.in_features)
        guard[0, 0], guard[0, -1] = -1.0, 1.0  # the batch's range is always exactly [-1, 1]
        self.register_buffer("guard", guard, persistent=False)

    def packed_bytes(self) -> int:
        """Bytes held in the packed weight: int8 weights, and per output row a float32 scale and
        fbgemm's int32 column offset (the bias and the guard row are buffers)."""
        return self.out_features * (self.in_features + 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = torch.cat([flat, self.guard])  # the guard row's largest magnitude is 1: it stays as it is
        peak = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True).clamp_(min=1e-30)
        # reduce_range: 7-bit activations, so fbgemm's AVX2 kernels (no VNNI) cannot overflow.
        y = torch.ops.quantized.linear_dynamic(rows.div_(peak), self._packed, True)[:-1].mul_(peak[:-1])
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features)


def quantize_weights(model: nn.Module, dtype: str) -> nn.Module:
    """Pack `model`'s linear layers as `dtype` ('float32' leaves it as it is), in place; returns it.
    For inference on the CPU: the model is put in eval mode, and training it afterwards is refused
    by the packed layers having no parameters to train."""
    if dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"weight dtype {dtype!r}: choose one of {', '.join(WEIGHT_DTYPES)}")
    if dtype == "float32":
        return model
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(f"weight dtype {dtype} runs on the CPU only (PyTorch's fbgemm kernels); the model is on {device}: "
                          "use weight dtype float32 there")
    kind = Int8Linear if dtype == "int8" else Float16Linear
    model.eval()
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, kind(child))
    model.weight_dtype = dtype
    return model
