"""Batches for training and evaluation, read straight from a shard's memmap.

Training (`TokenLoader`) draws random windows of `context + 1` tokens (x is the first `context`, y
the last `context`: the next-token targets). Resuming must be exact, so the randomness is a pure
function of (seed, rank, cursor): batch number `cursor` of rank `rank` is always the same windows.
The loader's whole state is therefore the cursor (plus what it was built with, checked on
restore); it is plain ints and strings, fit for `torch.load(weights_only=True)`.

In a distributed run the shard is cut into `world_size` equal contiguous regions and each rank only
draws windows that lie entirely inside its own region: ranks read disjoint tokens, and together
they still sample the whole shard evenly. All ranks advance their cursors in lockstep, so one
rank's saved state restores every rank.

Evaluation (`iter_eval_batches`) walks non-overlapping windows in order, so every token is
predicted exactly once. Windows are dealt to ranks in turn (rank r gets windows r, r+W, r+2W, ...),
every rank gets the same number (DDP collectives need that), and with `max_batches` the windows
are spread evenly over the whole shard rather than taken from its start, which in corpus order
would be one source only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from londinium.data.shards import META_KEYS
from londinium.errors import LondiniumError
from londinium.files import loads_json
from londinium.workspace import Workspace


@dataclass
class Shard:
    """One split's tokens (a read-only memmap) and its meta.json."""

    tokens: np.ndarray
    meta: dict
    path: Path | None = field(default=None)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"shard '{self.meta.get('split', '?')}'"


def open_shard(ws: Workspace, split: str, tokenizer_sha256: str | None = None) -> Shard:
    """Open `shards/<split>.bin` read-only, after checking it against its meta and the tokenizer.

    `tokenizer_sha256` is the hash of the tokenizer the caller will use; when None, the workspace's
    current tokenizer.json is checked instead (if there is one), so stale shards never load silently.
    """
    bin_path, meta_path = ws.shard_bin(split), ws.shard_meta(split)
    if not bin_path.is_file() or not meta_path.is_file():
        raise LondiniumError(f"shard {bin_path} is missing: run `londinium data prepare -w {ws.root}` first")
    try:
        meta = loads_json(meta_path.read_text(encoding="utf-8"))
        missing = [k for k in META_KEYS if k not in meta]
        dtype = np.dtype(meta["dtype"]) if not missing else None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise LondiniumError(f"{meta_path} is unreadable ({e}): run `londinium data prepare --force`") from None
    if missing or dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise LondiniumError(f"{meta_path} lacks {missing or 'a uint16/uint32 dtype'}: run `londinium data prepare --force`")

    if tokenizer_sha256 is None and ws.tokenizer_file.is_file():
        from londinium.tokenizer.codec import tokenizer_sha256 as current_hash

        tokenizer_sha256 = current_hash(ws)
    if tokenizer_sha256 is not None and meta["tokenizer_sha256"] != tokenizer_sha256:
        raise LondiniumError(
            f"shard {bin_path} was encoded with tokenizer sha256 {meta['tokenizer_sha256']}, but the tokenizer "
            f"in use has sha256 {tokenizer_sha256}: its ids would mean other tokens. Re-encode with "
            f"`londinium data prepare --force -w {ws.root}` (or use the tokenizer the shard was made with)"
        )
    size, expected = bin_path.stat().st_size, meta["tokens"] * dtype.itemsize
    if size != expected:
        raise LondiniumError(
            f"shard {bin_path} has {size} bytes but {meta_path} says {meta['tokens']} {dtype.name} tokens "
            f"({expected} bytes): the files are from different runs or truncated; run `londinium data prepare --force`"
        )
    # np.memmap cannot map an empty file; an empty split is still a valid (empty) shard.
    tokens = np.memmap(bin_path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
    return Shard(tokens=tokens, meta=meta, path=bin_path)


def _windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    # One fancy-indexing gather reads all windows from the memmap at once.
    buf = torch.from_numpy(tokens[starts[:, None] + np.arange(length)].astype(np.int64))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


def _check_sizes(context: int, batch_size: int, rank: int, world_size: int) -> None:
    if context < 1 or batch_size < 1:
        raise ValueError(f"context ({context}) and batch_size ({batch_size}) must be at least 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")


class TokenLoader:
    """Random training windows from this rank's part of a shard; resumable exactly (see module doc)."""

    def __init__(self, shard: Shard, context: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        _check_sizes(context, batch_size, rank, world_size)
        self.shard, self.context, self.batch_size = shard, context, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        region = len(shard) // world_size
        if region < context + 1:
            raise LondiniumError(
                f"{shard.name} has {len(shard):,} tokens: too few for windows of {context + 1} tokens on "
                f"{world_size} process(es); use a smaller model.context or a larger corpus"
            )
        self.lo = rank * region
        self.max_start = self.lo + region - (context + 1)  # inclusive: the window ends inside the region
        self.cursor = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), both int64 [batch_size, context], y[:, i] = x[:, i + 1] shifted from the same window."""
        rng = np.random.default_rng([self.seed, self.rank, self.cursor])
        starts = rng.integers(self.lo, self.max_start, size=self.batch_size, endpoint=True)
        self.cursor += 1
        return _windows(self.shard.tokens, starts, self.context + 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "seed": self.seed,
            "context": self.context,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shard_tokens": len(self.shard),
            "tokenizer_sha256": self.shard.meta.get("tokenizer_sha256", ""),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved cursor. A different world_size is allowed (the data order then differs)."""
        mine = self.state_dict()
        for key in ("seed", "context", "batch_size", "shard_tokens", "tokenizer_sha256"):
            if key in state and state[key] != mine[key]:
                raise LondiniumError(
                    f"cannot resume the data loader exactly: the checkpoint's {key} is {state[key]!r} but this run's is "
                    f"{mine[key]!r}; resume with the same config and shards, or start a new run"
                )
        self.cursor = int(state["cursor"])


def iter_eval_batches(
    shard: Shard,
    context: int,
    batch_size: int,
    max_batches: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential non-overlapping (x, y) windows; deterministic; ranks disjoint and equally many.

    Window j is tokens[j*context : j*context + context + 1]. The last batch may be smaller than
    batch_size; weight losses by the number of windows when averaging.
    """
    _check_sizes(context, batch_size, rank, world_size)
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be at least 1 (or None for the whole shard), got {max_batches}")
    per_rank = ((len(shard) - 1) // context) // world_size if len(shard) else 0
    if per_rank == 0:
        raise LondiniumError(
            f"{shard.name} has {len(shard):,} tokens: too few for one evaluation window of {context + 1} tokens "
            f"per process ({world_size}); use a smaller model.context or a larger corpus"
        )
    mine = np.arange(per_rank, dtype=np.int64) * world_size + rank
    if max_batches is not None:
        k = min(per_rank, max_batches * batch_size)
        mine = mine[(np.arange(k, dtype=np.int64) * per_rank) // k]
    for b in range(0, len(mine), batch_size):
        yield _windows(shard.tokens, mine[b : b + batch_size] * context, context + 1)
