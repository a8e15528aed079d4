"""The semantic cache's vector index: unit vectors of questions, each with its scope, the question's
text and its answer, searched exactly, bounded by TTL, entries and bytes, and kept on disk in one `.npz`
file.

    index = SemanticIndex(dim=256, max_entries=10_000, max_bytes=64 << 20)
    index.add(scope, vector, answer_bytes, ttl_s=3600, question="What line follows ...?")
    index.nearest(scope, vector, k=8)  # [(similarity, row), ...] of that scope's closest live entries
    index.questions[row], index.values[row]; index.touch(row)   # a hit keeps its entry recent
    index.save(path, embedder="corpus"); SemanticIndex.load(path, ...)

The question's text is kept so that a candidate's particulars (its quoted spans, names, rare words:
`particulars.py`) can be checked against the new question's: the step runs after `pii`, so the text is
the masked one.

Search is one matrix-vector product over every row, the rows of other scopes and expired ones masked
out: at the default bound (10,000 entries of 256 float32 dimensions, 10 MB) that is about a
millisecond on one core (benchmarks/semantic_cache.py times it), so an approximate index (faiss,
usearch) would add a dependency and lose exactness for nothing at this scale. The least recently used
entry goes first when a bound is reached, after the expired ones.

The file holds the vectors, each row's scope, question, expiry (wall clock, so it survives a restart)
and answer, and the embedder's name: an index written with another embedder is not loaded (its vectors
mean nothing to this one). It is written atomically (`londinium.files`) and loaded without pickle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from londinium.errors import ConfigError
from londinium.files import atomic_write

FORMAT = 2  # 2 added each entry's question


class SemanticIndex:
    def __init__(self, dim: int, max_entries: int = 10_000, max_bytes: int = 64 << 20, clock: Callable[[], float] = time.time):
        self.dim, self.max_entries, self.max_bytes, self.clock = dim, max_entries, max_bytes, clock
        self.vectors = np.zeros((min(max_entries, 256), dim), np.float32)  # grows by doubling up to max_entries
        self.scope_ids = np.zeros(len(self.vectors), np.int64)
        self.expires = np.zeros(len(self.vectors), np.float64)
        self.used = np.zeros(len(self.vectors), np.float64)  # last hit or add, for LRU eviction
        self.values: list[bytes] = []
        self.questions: list[str] = []
        self.scopes: dict[str, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.values)

    def _scope(self, scope: str) -> int:
        return self.scopes.setdefault(scope, len(self.scopes))

    def nearest(self, scope: str, vector: np.ndarray, k: int = 8) -> list[tuple[float, int]]:
        """The `k` closest live entries of `scope`, closest first: (cosine similarity, row). The rows are
        valid until the next `add`."""
        n = len(self.values)
        sid = self.scopes.get(scope)
        if n == 0 or sid is None:
            return []
        sims = self.vectors[:n] @ vector.astype(np.float32)
        sims[(self.scope_ids[:n] != sid) | (self.expires[:n] <= self.clock())] = -np.inf
        top = np.argpartition(-sims, k - 1)[:k] if n > k else np.arange(n)
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(float(sims[i]), int(i)) for i in top if np.isfinite(sims[i])]

    def touch(self, row: int) -> None:
        """Mark an entry used (a hit): the least recently used goes first when a bound is reached."""
        self.used[row] = self.clock()

    def add(self, scope: str, vector: np.ndarray, value: bytes, ttl_s: float, question: str = "") -> None:
        if len(value) > self.max_bytes:
            return
        now = self.clock()
        self._drop(np.flatnonzero(self.expires[:len(self.values)] <= now))
        while self.values and (len(self.values) >= self.max_entries or self.bytes + len(value) > self.max_bytes):
            self._drop(np.array([int(np.argmin(self.used[:len(self.values)]))]))
        i = len(self.values)
        if i == len(self.vectors):
            self._grow()
        self.vectors[i], self.scope_ids[i], self.expires[i], self.used[i] = vector, self._scope(scope), now + ttl_s, now
        self.values.append(value)
        self.questions.append(question)
        self.bytes += len(value)

    def _grow(self) -> None:
        size = min(self.max_entries, 2 * len(self.vectors))
        for name in ("vectors", "scope_ids", "expires", "used"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def _drop(self, rows: np.ndarray) -> None:
        """Remove rows, filling each hole with the last live row (order carries no meaning)."""
        for i in sorted(rows.tolist(), reverse=True):
            last = len(self.values) - 1
            self.bytes -= len(self.values[i])
            if i != last:
                for arr in (self.vectors, self.scope_ids, self.expires, self.used):
                    arr[i] = arr[last]
                self.values[i], self.questions[i] = self.values[last], self.questions[last]
            self.values.pop()
            self.questions.pop()

    def snapshot(self, embedder: str) -> dict[str, np.ndarray]:
        """The live entries as the arrays `write` puts in the file: copies, so the index may change
        while another thread writes them."""
        n = len(self.values)
        live = np.flatnonzero(self.expires[:n] > self.clock())
        names = sorted(self.scopes, key=self.scopes.__getitem__)
        meta = {"format": FORMAT, "embedder": embedder, "dim": self.dim,
                "scopes": [names[self.scope_ids[i]] for i in live],
                "questions": [self.questions[i] for i in live], "sizes": [len(self.values[i]) for i in live]}
        return {"vectors": self.vectors[live], "expires": self.expires[live],
                "answers": np.frombuffer(b"".join(self.values[i] for i in live), np.uint8),
                "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}

    def save(self, path: str | Path, embedder: str) -> None:
        write(path, self.snapshot(embedder))

    @classmethod
    def load(cls, path: str | Path, embedder: str, dim: int, max_entries: int, max_bytes: int,
             clock: Callable[[], float] = time.time) -> tuple[SemanticIndex, str]:
        """The index at `path` (empty when there is none yet, or it was written with another embedder),
        and a note saying which. A file that is not an index is a ConfigError: it is not overwritten."""
        index = cls(dim, max_entries, max_bytes, clock)
        path = Path(path)
        if not path.is_file():
            return index, "new"
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                vectors, expires, blob = z["vectors"], z["expires"], z["answers"].tobytes()
            if meta.get("format") != FORMAT:  # an older cache is only a cache: start afresh, keep the file until the next save
                return index, f"ignored: written in format {meta.get('format')}, this gateway writes {FORMAT}"
            scopes, sizes, questions = meta["scopes"], meta["sizes"], meta["questions"]
            if not len(scopes) == len(questions) == len(vectors) or sum(sizes) != len(blob):
                raise ValueError("its parts do not agree")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"semantic_cache.index_path {path}: not a semantic cache index ({e}); "
                              "move or delete it and the gateway starts with an empty one") from None
        if meta.get("embedder") != embedder or meta.get("dim") != dim:
            return index, f"ignored: written with embedder {meta.get('embedder')} ({meta.get('dim')} dimensions)"
        offset, now = 0, clock()
        for vector, expiry, scope, size, asked in zip(vectors, expires, scopes, sizes, questions):
            value, offset = blob[offset:offset + size], offset + size
            if expiry > now:
                index.add(scope, vector, value, ttl_s=float(expiry) - now, question=asked)
        return index, f"{len(index)} entries"


def write(path: str | Path, snapshot: dict[str, np.ndarray]) -> None:
    """Write a snapshot to `path` atomically (a crash leaves the previous file whole)."""
    with atomic_write(path, "wb", encoding=None) as f:
        np.savez(f, **snapshot)
