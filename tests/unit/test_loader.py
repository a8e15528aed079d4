"""The loader: exact resume, windows straight from the shard, disjoint ranks, hash-checked shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from londinium.data.loader import TokenLoader, iter_eval_batches, open_shard
from londinium.errors import LondiniumError
from londinium.files import write_bytes, write_json
from londinium.workspace import Workspace

HASH = "a" * 64


def _write_shard(ws: Workspace, split: str, tokens: np.ndarray, tokenizer_hash: str = HASH) -> None:
    """A shard in the on-disk format whose ids are their own positions, so windows are easy to check."""
    write_bytes(ws.shard_bin(split), tokens.astype(np.uint16).tobytes())
    write_json(ws.shard_meta(split), {
        "dtype": "uint16", "vocab_size": 65536, "tokens": len(tokens), "documents": 1,
        "text_bytes": 4 * len(tokens), "tokenizer_sha256": tokenizer_hash, "eot_id": 0, "split": split,
    })  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    _write_shard(ws, "train", np.arange(10_000))
    _write_shard(ws, "val", np.arange(1_001))
    return ws


def test_restored_state_gives_the_same_next_batch(ws: Workspace, tmp_path: Path):
    shard = open_shard(ws, "train", HASH)
    a = TokenLoader(shard, context=32, batch_size=4, seed=7)
    for _ in range(5):
        a.next_batch()
    # Through a checkpoint file loaded the safe way, as the trainer does.
    torch.save({"loader": a.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["loader"]
    expected = [a.next_batch() for _ in range(3)]
    b = TokenLoader(shard, context=32, batch_size=4, seed=7)
    b.load_state_dict(state)
    for (x, y), (ex, ey) in zip((b.next_batch() for _ in range(3)), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_batches_are_windows_of_the_shard_with_y_shifted_by_one(ws: Workspace):
    loader = TokenLoader(open_shard(ws, "train", HASH), context=16, batch_size=8, seed=1)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # ids equal positions in this shard: every row is one contiguous slice.
    assert torch.equal(x, x[:, :1] + torch.arange(16))
    assert int(y.max()) < 10_000


def test_seed_and_rank_each_give_their_own_stream(ws: Workspace):
    shard = open_shard(ws, "train", HASH)
    first = lambda **kw: TokenLoader(shard, 16, 8, **kw).next_batch()[0]  # noqa: E731
    assert torch.equal(first(seed=3), first(seed=3))
    assert not torch.equal(first(seed=3), first(seed=4))
    # Ranks are not shifted copies of one stream: offsets inside their own regions differ too.
    r0, r1 = (TokenLoader(shard, 16, 8, seed=3, rank=r, world_size=2) for r in (0, 1))
    assert not torch.equal(r0.next_batch()[0][:, 0] - r0.lo, r1.next_batch()[0][:, 0] - r1.lo)


def test_ranks_read_disjoint_parts_of_the_shard(ws: Workspace):
    shard = open_shard(ws, "train", HASH)
    seen = []
    for rank in range(3):
        loader = TokenLoader(shard, context=50, batch_size=16, seed=0, rank=rank, world_size=3)
        tokens = set()
        for _ in range(40):
            x, y = loader.next_batch()
            tokens |= set(x.flatten().tolist()) | set(y.flatten().tolist())
        seen.append(tokens)
        assert min(tokens) >= rank * 3333 and max(tokens) < (rank + 1) * 3333
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_eval_batches_predict_every_token_once_in_order(ws: Workspace):
    shard = open_shard(ws, "val", HASH)  # 1001 tokens: exactly 10 windows of 100 (+1 target)
    batches = list(iter_eval_batches(shard, context=100, batch_size=3))
    assert [x.shape[0] for x, _ in batches] == [3, 3, 3, 1]
    ys = torch.cat([y for _, y in batches]).flatten()
    assert torch.equal(ys, torch.arange(1, 1001))
    xs = torch.cat([x for x, _ in batches]).flatten()
    assert torch.equal(xs, torch.arange(0, 1000))
    assert [torch.equal(a[0], b[0]) for a, b in zip(batches, iter_eval_batches(shard, 100, 3))] == [True] * 4


def test_eval_ranks_are_disjoint_and_get_equally_many_batches(ws: Workspace):
    shard = open_shard(ws, "val", HASH)
    per_rank = [list(iter_eval_batches(shard, 100, 2, rank=r, world_size=3)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1  # DDP needs the same count on every rank
    targets = [set(torch.cat([y for _, y in b]).flatten().tolist()) for b in per_rank]
    assert sum(len(t) for t in targets) == len(set().union(*targets)) == 9 * 100  # 10 windows, 3 each


def test_eval_max_batches_samples_the_whole_shard_not_its_start(ws: Workspace):
    shard = open_shard(ws, "train", HASH)  # 9999 // 10 = 999 windows
    batches = list(iter_eval_batches(shard, context=10, batch_size=5, max_batches=4))
    assert len(batches) == 4
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert starts.tolist() == sorted(starts.tolist()) and len(set(starts.tolist())) == 20
    assert int(starts.max()) > 9000  # reaches the end of the shard


def test_shard_from_another_tokenizer_is_refused_naming_both_hashes(ws: Workspace):
    other = "b" * 64
    with pytest.raises(LondiniumError) as e:
        open_shard(ws, "train", other)
    assert HASH in str(e.value) and other in str(e.value) and "train.bin" in str(e.value)
    assert "londinium data prepare --force" in str(e.value)


def test_missing_or_truncated_shard_is_a_clear_error(ws: Workspace):
    with pytest.raises(LondiniumError, match="test.bin is missing: run `londinium data prepare"):
        open_shard(ws, "test")
    with open(ws.shard_bin("train"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(LondiniumError, match="truncated"):
        open_shard(ws, "train", HASH)


def test_resuming_with_another_seed_or_context_is_refused(ws: Workspace):
    shard = open_shard(ws, "train", HASH)
    state = TokenLoader(shard, 16, 4, seed=1).state_dict()
    with pytest.raises(LondiniumError, match="seed"):
        TokenLoader(shard, 16, 4, seed=2).load_state_dict(state)
    with pytest.raises(LondiniumError, match="context"):
        TokenLoader(shard, 32, 4, seed=1).load_state_dict(state)


def test_shard_too_small_for_the_context_is_a_clear_error(ws: Workspace):
    shard = open_shard(ws, "val", HASH)
    with pytest.raises(LondiniumError, match="too few"):
        TokenLoader(shard, context=600, batch_size=1, seed=0, world_size=2)
    with pytest.raises(LondiniumError, match="too few"):
        list(iter_eval_batches(shard, context=2000, batch_size=1))
