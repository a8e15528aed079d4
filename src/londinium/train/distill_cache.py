"""A teacher's top-k cache: one pass of a frozen teacher over the train shard, read by many students.

    cache = teacher_cache(ws, teacher, shard, context, k, log)     # opened, or built once
    loader = CachedWindows(cache, shard, batch_size, seed, rank, world_size)

A student that computes its teacher on the fly pays the teacher's forward pass, and a soft loss over
the whole vocabulary, on every step. The cache (as DistillKit's) pays the forward pass once: the
train shard is cut into non-overlapping windows of `context + 1` tokens (window j starts at token
j x context, as evaluation reads a shard) and for each predicted position it stores the teacher's k
most likely ids and their log-probabilities, plus the log of the mass of all other ids (the tail),
so the soft loss runs over k + 1 outcomes (`distill.topk_distill_loss`). Students read whole cached
windows in a seeded order (a fresh permutation each pass over them), so an alpha = 1 student through
the same cache is plain training on the same data order: the fair baseline.

On disk, `distill/<teacher>-top<k>-<key>/`: `meta.json`, `logprobs.bin` (float16 `[rows, k + 1]`,
the tail last) and `ids.bin` (uint16, or uint32 past 65,536 ids, `[rows, k]`), row j x context + i
for position i of window j. `key` hashes what the numbers depend on: the teacher's weights, the
tokenizer, the train shard's bytes, k and the context; a change to any of them names another folder,
so a stale cache is never read (a new one is built). The folder is built beside its place and
renamed in whole (`files.replace_dir`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from londinium.data.loader import Shard, _windows, iter_eval_batches
from londinium.errors import ConfigError, LondiniumError
from londinium.files import create_temporary_dir, disk_full_guard, ensure_dir, fsync_dir, replace_dir, sha256_bytes, sha256_file, write_json
from londinium.train.distill import TAIL_FLOOR
from londinium.progress import progress
from londinium.workspace import Workspace

META, LOGPROBS, IDS = "meta.json", "logprobs.bin", "ids.bin"
PASS_WINDOWS = 16  # windows per teacher forward pass while building


class CacheError(LondiniumError):
    """A top-k cache that cannot be read as its meta.json describes."""


@dataclass
class TeacherCache:
    path: Path
    meta: dict[str, Any]
    logprobs: np.ndarray  # float16 [rows, k + 1] (memmap)
    ids: np.ndarray  # uint16/uint32 [rows, k] (memmap)

    @property
    def windows(self) -> int:
        return self.meta["windows"]

    @property
    def context(self) -> int:
        return self.meta["context"]


def cache_key(teacher_sha256: str, tokenizer_sha256: str, shard_sha256: str, k: int, context: int) -> str:
    parts = {"teacher_sha256": teacher_sha256, "tokenizer_sha256": tokenizer_sha256, "shard_sha256": shard_sha256,
             "top_k": k, "context": context}
    return sha256_bytes(json.dumps(parts, sort_keys=True).encode())[:16]


def teacher_cache(ws: Workspace, teacher: Any, shard: Shard, context: int, k: int, log: Callable[[str], None],
                  build: bool = True) -> TeacherCache:
    """The cache of `teacher` (a `distill.Teacher`) at top-`k` over `shard`'s windows of `context`:
    opened if it exists for exactly these inputs, else built (one teacher pass) when `build`."""
    vocab = int(shard.meta["vocab_size"])
    if not 1 <= k <= vocab:
        raise ConfigError(f"distill.top_k = {k}: give 1 .. {vocab} (the vocabulary's size), or 0 for the teacher on the fly")
    if shard.path is None:
        raise ConfigError("distill.top_k: the cache is of a shard file; this shard has no path")
    shard_sha256 = sha256_file(shard.path)
    key = cache_key(teacher.sha256, shard.meta["tokenizer_sha256"], shard_sha256, k, context)
    path = ws.distill_cache_dir(f"{teacher.run}-top{k}-{key}")
    if (path / META).is_file():
        return _open(path, key)
    if not build:
        raise CacheError(f"no top-{k} cache of teacher run '{teacher.run}' {teacher.checkpoint} for these shards at "
                         f"context {context} ({path}): build it first with one process, `londinium distill --teacher "
                         f"{teacher.run} --top-k {k} --cache-only`")
    windows = (len(shard) - 1) // context
    if windows < 1:
        raise ConfigError(f"{shard.name} has {len(shard):,} tokens: too few for one window of {context + 1} to cache")
    log(f"distill: building the top-{k} cache of teacher run '{teacher.run}' {teacher.checkpoint}: {windows:,} windows "
        f"x {context} tokens ({windows * context * (k + 1) * 2 + windows * context * k * _id_dtype(vocab).itemsize:,} bytes) "
        f"in {path}")
    start = time.perf_counter()
    ensure_dir(path.parent, "distill cache folder")
    tmp = create_temporary_dir(path)
    try:
        with disk_full_guard(path.parent, hint="free space, or give a smaller distill.top_k"):
            _fill(tmp, teacher, shard, context, k, windows, vocab)
            seconds = time.perf_counter() - start
            write_json(tmp / META, {"key": key, "teacher": teacher.run, "teacher_checkpoint": teacher.checkpoint,
                                    "teacher_sha256": teacher.sha256, "tokenizer_sha256": shard.meta["tokenizer_sha256"],
                                    "shard": str(shard.path.name), "shard_sha256": shard_sha256, "top_k": k,
                                    "context": context, "windows": windows, "rows": windows * context,
                                    "id_dtype": _id_dtype(vocab).name, "build_seconds": round(seconds, 2)})
            fsync_dir(tmp)
            replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"distill: top-{k} cache built in {seconds:.1f} s ({windows * context / max(seconds, 1e-9):,.0f} teacher tokens/s)")
    return _open(path, key)


def _id_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 2**16 else np.dtype(np.uint32)


@torch.no_grad()
def _fill(folder: Path, teacher: Any, shard: Shard, context: int, k: int, windows: int, vocab: int) -> None:
    rows = windows * context
    logprobs = np.memmap(folder / LOGPROBS, dtype=np.float16, mode="w+", shape=(rows, k + 1))
    ids = np.memmap(folder / IDS, dtype=_id_dtype(vocab), mode="w+", shape=(rows, k))
    row = 0
    with progress(total=rows, desc="teacher pass", unit="tok", unit_scale=True) as bar:  # minutes on a CPU
        for x, _ in iter_eval_batches(shard, context, PASS_WINDOWS):  # every window, in order
            top, top_ids = top_k_buckets(teacher.logits(x), k)
            n = top.size(0) * top.size(1)
            logprobs[row:row + n] = top.reshape(n, k + 1).numpy().astype(np.float16)
            ids[row:row + n] = top_ids.reshape(n, k).numpy().astype(ids.dtype)
            row += n
            bar.update(n)
    assert row == rows, (row, rows)
    logprobs.flush()
    ids.flush()


def top_k_buckets(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `[..., V]` -> (log-probabilities of the top k ids then of all the others `[..., k + 1]`, the ids `[..., k]`)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    top, top_ids = log_p.topk(k, dim=-1)
    tail = torch.logsumexp(log_p.scatter(-1, top_ids, float("-inf")), dim=-1, keepdim=True)
    return torch.cat([top, tail], dim=-1).clamp(min=TAIL_FLOOR), top_ids  # k = V: no tail, floored as the student's


def _open(path: Path, key: str) -> TeacherCache:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        rows, k, id_dtype = int(meta["rows"]), int(meta["top_k"]), np.dtype(meta["id_dtype"])
        if meta["key"] != key:
            raise ValueError(f"its key is {meta['key']}, the folder's name says {key}")
        logprobs = np.memmap(path / LOGPROBS, dtype=np.float16, mode="r", shape=(rows, k + 1))
        ids = np.memmap(path / IDS, dtype=id_dtype, mode="r", shape=(rows, k))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CacheError(f"the top-k cache {path} is unreadable ({e}): delete that folder and it is built again") from None
    return TeacherCache(path, meta, logprobs, ids)


class CachedWindows:
    """The cached windows in a seeded order, as the trainer reads a loader; resumable exactly.

    Window number g of the run (g = (cursor x world_size + rank) x batch_size + i) is window
    perm_e[g mod W] of the cache, perm_e a permutation seeded by (seed, e = g // W): every window
    once per pass, ranks disjoint, a pure function of the cursor as `TokenLoader`'s."""

    def __init__(self, cache: TeacherCache, shard: Shard, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.cache, self.shard, self.batch_size = cache, shard, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.cursor = 0
        self._perm: tuple[int, np.ndarray] | None = None

    def _window(self, g: int) -> int:
        epoch, i = divmod(g, self.cache.windows)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.cache.windows))
        return int(self._perm[1][i])

    def next_batch(self) -> Any:
        from londinium.train.objectives import Batch

        first = (self.cursor * self.world_size + self.rank) * self.batch_size
        windows = np.array([self._window(g) for g in range(first, first + self.batch_size)], dtype=np.int64)
        self.cursor += 1
        context, k = self.cache.context, self.cache.meta["top_k"]
        x, y = _windows(self.shard.tokens, windows * context, context + 1)
        rows = (windows[:, None] * context + np.arange(context)).reshape(-1)
        logprobs = torch.from_numpy(self.cache.logprobs[rows].astype(np.float32)).view(len(windows), context, k + 1)
        ids = torch.from_numpy(self.cache.ids[rows].astype(np.int64)).view(len(windows), context, k)
        return Batch(x, y, None, x.numel(), teacher=(logprobs, ids))

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size,
                "cache": self.cache.meta["key"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "batch_size", "cache"):
            if key in state and state[key] != mine[key]:
                raise CacheError(f"cannot resume the cached data order exactly: the checkpoint's {key} is {state[key]!r}, this "
                                 f"run's {mine[key]!r}; resume with the same config, teacher and shards, or start a new run")
        self.cursor = int(state["cursor"])


def build_for(ws: Workspace, cfg: Any, log: Callable[[str], None]) -> TeacherCache:
    """The cache a student of `cfg` (a distill run's config, distill.top_k > 0) reads, built if missing:
    `londinium distill --top-k K --cache-only`, so that its cost is paid (and timed) before any student."""
    from londinium.data.loader import open_shard
    from londinium.tokenizer.codec import tokenizer_sha256
    from londinium.train.distill import open_teacher

    if cfg.train.threads:  # as the trainer does: the pass runs on the threads a student would
        torch.set_num_threads(cfg.train.threads)
    sha = tokenizer_sha256(ws)
    shard = open_shard(ws, "train", sha)
    if not cfg.model.vocab_size:  # 0: the tokenizer's, as the trainer resolves it
        cfg.model.vocab_size = int(shard.meta["vocab_size"])
    return teacher_cache(ws, open_teacher(ws, cfg, sha), shard, cfg.model.context, cfg.distill.top_k, log)
