"""Batches for supervised fine-tuning: conversations padded to the batch's longest, plus replay rows.

A batch is `batch_size` rows: `batch_size - replay_rows` conversations and `replay_rows` windows of
pre-training text from the train shard (replay, to limit forgetting). Each row is right-padded to
the batch's longest conversation; causal attention never lets a token see the padding after it, so
padding needs no attention mask, and the padded positions' targets are -1 (no loss). A
conversation's targets are its next tokens where the assistant writes them (its content and
`<|end|>`), -1 elsewhere: the loss is on the assistant's tokens only. A replay window's targets are
all its next tokens. Per-token `weights` give the conversations `1 - replay_share` of the loss and
the replay rows `replay_share`, each spread evenly over its tokens, so the share means the same
whatever the answers' lengths. Within the conversations' share, each `<|end|>` target can weigh
`end_weight` ordinary answer tokens (`sft.end_weight`): the one token that stops an answer is one
of ~10-40 an answer has, and a model that misses it loops on to max_tokens. (Packing conversations
into full rows was measured against this: docs/LOG.md.)

Resuming must be exact, so a batch is a pure function of (seed, rank, cursor), as in
`data/loader.py`: conversation number g (counting over all ranks and steps) is example
`permutation(seed, epoch)[g % N]` of epoch `g // N`, and the replay windows are drawn from a
generator seeded with (seed, rank, cursor). Rank r of W takes positions ((cursor * W) + r) * k ..
+ k - 1 (k conversations a row group), so ranks read disjoint conversations; the replay windows
come from the rank's own region of the shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from londinium.data.loader import Shard
from londinium.errors import LondiniumError
from londinium.train.sft_data import Example


@dataclass
class ChatBatch:
    x: torch.Tensor  # int64 [B, T]
    y: torch.Tensor  # int64 [B, T], -1 where no loss
    weights: torch.Tensor  # float32 [B, T]: each target's share of the loss (sums to 1)
    tokens: int  # positions that are not padding: what the step processed


def replay_rows(batch_size: int, share: float) -> int:
    """Rows of pre-training text a batch carries: the share of the rows, at least one when the share
    is above 0, and at least one row left for conversations."""
    if share <= 0:
        return 0
    return min(batch_size - 1, max(1, round(share * batch_size)))


def pad_rows(rows: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of conversations `(ids, mask)`, right-padded to `length` positions."""
    x = np.full((len(rows), length), pad_id, dtype=np.int64)
    y = np.full((len(rows), length), -1, dtype=np.int64)
    for i, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = np.where(mask[1:], ids[1:], -1)
    return x, y


class ChatLoader:
    """Training batches of conversations and replay windows; resumable exactly (module docstring)."""

    def __init__(self, examples: Sequence[Example], replay: Shard | None, batch_size: int, replay_share: float,
                 seed: int, pad_id: int, rank: int = 0, world_size: int = 1, end_id: int = -1, end_weight: float = 1.0):
        if not examples:
            raise LondiniumError("no conversations to train on")
        self.examples, self.replay, self.batch_size, self.share = examples, replay, batch_size, replay_share
        self.seed, self.pad_id, self.rank, self.world_size = seed, pad_id, rank, world_size
        self.end_id, self.end_weight = end_id, end_weight
        self.replay_rows = replay_rows(batch_size, replay_share) if replay is not None else 0
        self.chats = batch_size - self.replay_rows
        if self.replay_rows:
            region = len(replay) // world_size
            longest = max(len(e) for e in examples)
            if region < longest:
                raise LondiniumError(f"{replay.name} has {len(replay):,} tokens: too few for replay windows of "
                                     f"{longest} tokens on {world_size} process(es); set sft.replay_share = 0")
            self.lo, self.region = rank * region, region
        self.cursor = 0
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _example(self, g: int) -> Example:
        epoch, i = divmod(g, len(self.examples))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return self.examples[int(self._order[i])]

    def next_batch(self) -> ChatBatch:
        first = (self.cursor * self.world_size + self.rank) * self.chats
        chosen = [self._example(g) for g in range(first, first + self.chats)]
        length = max(len(e) for e in chosen) - 1
        x, y = pad_rows([(e.ids, e.mask) for e in chosen], self.pad_id, length)
        if self.replay_rows:
            rng = np.random.default_rng([self.seed, self.rank, self.cursor])
            starts = rng.integers(self.lo, self.lo + self.region - (length + 1), size=self.replay_rows, endpoint=True)
            windows = np.asarray(self.replay.tokens[starts[:, None] + np.arange(length + 1)], dtype=np.int64)
            x, y = np.concatenate([x, windows[:, :-1]]), np.concatenate([y, windows[:, 1:]])
        self.cursor += 1
        weights = loss_weights(y, self.chats, self.share if self.replay_rows else 0.0, self.end_id, self.end_weight)
        tokens = sum(len(e) - 1 for e in chosen) + self.replay_rows * length
        return ChatBatch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(weights), tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "seed": self.seed, "batch_size": self.batch_size, "replay_rows": self.replay_rows,
                "examples": len(self.examples), "world_size": self.world_size,
                "replay_tokens": len(self.replay) if self.replay is not None else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved cursor. A different world_size is allowed (the data order then differs)."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "replay_rows", "examples", "replay_tokens"):
            if key in state and state[key] != mine[key]:
                raise LondiniumError(
                    f"cannot resume the conversation loader exactly: the checkpoint's {key} is {state[key]!r} but this "
                    f"run's is {mine[key]!r}; resume with the same config and data, or start a new run")
        self.cursor = int(state["cursor"])


def loss_weights(y: np.ndarray, chat_rows: int, share: float, end_id: int = -1, end_weight: float = 1.0) -> np.ndarray:
    """Each target's weight: `1 - share` spread over the conversations' targets (rows < chat_rows),
    a target `end_id` counting `end_weight` times an ordinary one, and `share` over the replay rows' targets."""
    w = np.zeros(y.shape, dtype=np.float32)
    live = y != -1
    replay = live[chat_rows:]
    units = live[:chat_rows].astype(np.float64)  # float64, so end_weight 1 gives the plain even split to the bit
    units[y[:chat_rows] == end_id] *= end_weight
    w[:chat_rows] = (1.0 - share) * units / (units.sum() or 1.0)
    if replay.size:
        w[chat_rows:][replay] = share / max(1, int(replay.sum()))
    return w


def iter_chat_batches(examples: Sequence[Example], batch_size: int, pad_id: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Held-out conversations in order, padded per batch: rank r takes examples r, r + W, ...
    (ranks may get different counts: evaluation sums across them once, at the end)."""
    mine = list(examples)[rank::world_size]
    for b in range(0, len(mine), batch_size):
        chunk = mine[b:b + batch_size]
        x, y = pad_rows([(e.ids, e.mask) for e in chunk], pad_id, max(len(e) for e in chunk) - 1)
        yield torch.from_numpy(x), torch.from_numpy(y)
