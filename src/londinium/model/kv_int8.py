"""An int8 KV cache for the engine's running sequences (`generate.kv_dtype = "int8"`): KIVI's split.

KIVI (Liu et al. 2024) found that keys have outlier *channels* and values do not, so keys are
quantized per channel and values per token. Here, per layer and sequence:

- keys: int8, one scale per (head, channel) for each group of `GROUP` positions (16); the newest
  keys of the unfinished group (0 .. GROUP-1 of them) wait in a float16 ring of GROUP positions and
  the group is quantized when its last position is written (KIVI's residual: a per-channel scale
  needs the whole group; KIVI's own code keeps it in the model's 16-bit type);
- values: int8, one scale per (head, position), quantized as they are written: a per-token scale
  needs no other position, so values keep no ring.
Scales are float16.

Groups sit at fixed positions (0-15, 16-31, ...), so what is quantized, and how, depends on the
sequence alone: a sequence decodes the same alone or in any company. A prompt is prefilled in
float32 as always, and quantized as it joins.

Bytes per position per layer and kv head: 2 x head size (int8) + 2 x head size / 16 (key scales) +
2 (value scale), plus the key ring (16 x head size x 2 per sequence): 3.51x less than float32 at
small's context of 256 and head size 64, 3.77x at slm's 1,024 (`londinium model memory`,
benchmarks/kv_dtypes.py). Before, values had a ring too and both rings were float32: 3.01x and
3.51x; the bits per byte did not move (docs/LOG.md).
A decode step reads the quantized positions dequantized to float32 (SDPA needs them so): the
memory saved is the cache held between steps, not the step's own work, which grows by a few
elementwise ops per layer.
"""

from __future__ import annotations

import torch

from londinium.model.cache import KVCache, SlotCache

GROUP = 16  # positions per key-scale group, and the key ring's length
SCALE = torch.float16
RING = torch.float16  # the unfinished group's keys


def _per_channel(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys `[..., G, D]` -> int8 and a scale per channel `[..., 1, D]` (over the G positions)."""
    scale = (k.abs().amax(dim=-2, keepdim=True) / 127).clamp_(min=1e-8).to(SCALE)
    return (k / scale.float()).round_().to(torch.int8), scale


def _per_token(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values `[..., D]` -> int8 and a scale per position `[..., 1]`."""
    scale = (v.abs().amax(dim=-1, keepdim=True) / 127).clamp_(min=1e-8).to(SCALE)
    return (v / scale.float()).round_().to(torch.int8), scale


class Int8SlotCache(SlotCache):
    """A SlotCache whose keys and values are int8 (see the module docstring); same interface."""

    def __init__(self, n_layer: int, slots: int, n_kv_head: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        groups = -(-max_len // GROUP)
        full = groups * GROUP  # whole groups, so a step can view the scales group by group
        self.n_layer, self.n_kv_head, self.head_dim = n_layer, n_kv_head, head_dim

        def zeros(shape: tuple[int, ...], kind: torch.dtype) -> list[torch.Tensor]:
            return [torch.zeros(shape, device=device, dtype=kind) for _ in range(n_layer)]

        self.kq, self.vq = zeros((slots, n_kv_head, full, head_dim), torch.int8), zeros((slots, n_kv_head, full, head_dim), torch.int8)
        self.ks = zeros((slots, n_kv_head, groups, head_dim), SCALE)
        self.vs = zeros((slots, n_kv_head, full, 1), SCALE)
        self.kr = zeros((slots, n_kv_head, GROUP, head_dim), RING)
        self.slots, self.max_len = slots, max_len
        self.lengths = []
        self._positions = None

    def buffers(self) -> tuple[list[torch.Tensor], ...]:
        return self.kq, self.ks, self.vq, self.vs, self.kr

    def _all(self) -> tuple[list[torch.Tensor], ...]:
        return self.buffers()

    def advance(self, n: int = 1) -> None:
        """Positions written; a row whose group is now complete has its keys quantized out of the ring."""
        assert n == 1, "an Int8SlotCache advances one decode step at a time"
        super().advance(n)
        done = [b for b, length in enumerate(self.lengths) if length % GROUP == 0]
        if done:
            rows = torch.tensor(done, device=self.kr[0].device)
            starts = [self.lengths[b] - GROUP for b in done]
            self._quantize_groups(rows, starts)

    def _quantize_groups(self, rows: torch.Tensor, starts: list[int]) -> None:
        """Quantize the key ring of `rows` (each holding positions start .. start + GROUP - 1) into its group."""
        for layer in range(self.n_layer):
            kq, ks = _per_channel(self.kr[layer][rows].float())
            for i, (b, start) in enumerate(zip(rows.tolist(), starts)):
                self.kq[layer][b, :, start:start + GROUP] = kq[i]
                self.ks[layer][b, :, start // GROUP] = ks[i, :, 0]

    # ---- sequences join and leave --------------------------------------------------------------

    def grown(self, slots: int) -> Int8SlotCache:
        new = Int8SlotCache(self.n_layer, slots, self.n_kv_head, self.max_len, self.head_dim, device=self.kr[0].device)
        for mine, theirs in zip(self._all(), new._all()):
            for layer in range(self.n_layer):
                theirs[layer][:self.rows] = mine[layer][:self.rows]
        new.lengths = list(self.lengths)
        return new

    def append(self, src: KVCache, row: int = 0, length: int | None = None) -> int:
        """A prefilled sequence joins: its values and its whole groups of keys are quantized, the
        rest of its keys go to its ring."""
        if self.rows >= self.slots:
            raise RuntimeError(f"all {self.slots} cache slots are in use")
        n = src.length if length is None else length
        b, whole = self.rows, n // GROUP * GROUP
        for layer in range(self.n_layer):
            k, v = src.k[layer][row, :, :n].float(), src.v[layer][row, :, :n].float()
            H, D = k.shape[0], k.shape[-1]
            if whole:
                kq, ks = _per_channel(k[:, :whole].reshape(H, whole // GROUP, GROUP, D))
                self.kq[layer][b, :, :whole] = kq.reshape(H, whole, D)
                self.ks[layer][b, :, :whole // GROUP] = ks[:, :, 0]
            self.vq[layer][b, :, :n], self.vs[layer][b, :, :n] = _per_token(v)
            self.kr[layer][b, :, :n - whole] = k[:, whole:]
        self.lengths.append(n)
        self._positions = None
        return b

    def keep(self, rows: list[int]) -> None:
        for new, old in enumerate(rows):
            if new != old:
                for buffers in self._all():
                    for layer in range(self.n_layer):
                        buffers[layer][new] = buffers[layer][old]
        self.lengths = [self.lengths[r] for r in rows]
        self._positions = None


class Int8StepKV:
    """One decode step's view of an Int8SlotCache (the interface of `StepKV`): the new key goes to
    the row's ring, the new value is quantized in place; attention reads the quantized positions
    dequantized, and the ring's keys."""

    def __init__(self, buffers: tuple[list[torch.Tensor], ...], positions: torch.Tensor, span: int, masked: bool = True):
        self.kq, self.ks, self.vq, self.vs, self.kr = buffers
        self.positions = positions
        device = positions.device
        self.span = -(-span // GROUP) * GROUP  # whole groups (masked past each row's position)
        B = positions.shape[0]
        self.rows = torch.arange(B, device=device)
        columns = torch.arange(self.span, device=device)
        # Key columns from the start of the row's unfinished group on are read from the ring (slot column % GROUP).
        self.in_ring = (columns[None, :] >= (positions - positions % GROUP)[:, None])[:, None, :, None]
        self.ring_index = columns % GROUP
        self.mask = (columns[None, :] <= positions[:, None])[:, None, None, :]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, kr = self.rows.shape[0], self.kr[layer]
        kr[self.rows, :, self.positions % GROUP] = k[:, :, 0].to(RING)
        vq, vs = _per_token(v[:, :, 0].float())
        self.vq[layer][self.rows, :, self.positions] = vq
        self.vs[layer][self.rows, :, self.positions] = vs
        kq = self.kq[layer][:B, :, :self.span]
        H, D = kq.shape[1], kq.shape[-1]
        keys = (kq.view(B, H, -1, GROUP, D).float() * self.ks[layer][:B, :, :self.span // GROUP, None].float()).view(B, H, -1, D)
        keys = torch.where(self.in_ring, kr[:B][:, :, self.ring_index].float(), keys)
        values = self.vq[layer][:B, :, :self.span].float() * self.vs[layer][:B, :, :self.span].float()
        return keys.to(k.dtype), values.to(v.dtype)


Int8SlotCache.view_type = Int8StepKV
