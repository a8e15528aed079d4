"""Where keys, rate limits and the ledger live: SQLite (WAL) by default, PostgreSQL for several gateways.

One class over both, with the SQL written once: placeholders are `?` and the scalar min/max are
`LEAST`/`GREATEST`, rewritten for the dialect. Everything that must stay exact across processes is
one atomic statement or one transaction in the database, never a read-modify-write in Python:

- a rate limit is a token bucket row `(key, kind) -> (level, updated)`; taking from it is one
  `UPDATE ... WHERE refilled level >= need RETURNING`, which PostgreSQL re-checks under the row lock
  and SQLite runs under its write lock, so two gateways on one database never both take the last token;
- a ledger row, the key's spend and its tokens-per-minute debit are written in one transaction, so
  the spend a budget is checked against is always the sum of the ledger's costs.

Connections are per thread (the app calls in from a small thread pool, `Store.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from londinium.errors import LondiniumError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, models TEXT NOT NULL,
    rpm INTEGER NOT NULL, tpm INTEGER NOT NULL, budget DOUBLE PRECISION NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS buckets (
    key_id TEXT NOT NULL, kind TEXT NOT NULL, level DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, kind));
CREATE TABLE IF NOT EXISTS ledger (
    id {autoid}, time DOUBLE PRECISION NOT NULL, day TEXT NOT NULL, request_id TEXT NOT NULL, key_id TEXT,
    model TEXT, backend TEXT, backend_model TEXT, stream INTEGER NOT NULL, status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost DOUBLE PRECISION NOT NULL,
    latency_s DOUBLE PRECISION NOT NULL, usage_source TEXT NOT NULL, attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL, error TEXT);
CREATE INDEX IF NOT EXISTS ledger_key_day ON ledger (key_id, day);
"""

LEDGER_COLUMNS = ("time", "day", "request_id", "key_id", "model", "backend", "backend_model", "stream", "status",
                  "prompt_tokens", "completion_tokens", "cost", "latency_s", "usage_source", "attempts", "outcome", "error")


@dataclass
class Key:
    """A virtual key as stored (never its secret: only the secret's sha256)."""

    id: str
    name: str
    models: list[str]  # route aliases it may use; empty: all
    rpm: int  # requests per minute (0: no limit)
    tpm: int  # tokens per minute (0: no limit)
    budget: float  # dollars (0: no limit)
    spend: float
    created: float
    revoked: float | None = None


@dataclass
class LedgerRow:
    """One request as the ledger records it."""

    request_id: str
    key_id: str | None
    model: str  # the alias the client asked for
    backend: str | None
    backend_model: str | None
    stream: bool
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    usage_source: str = "none"  # "upstream", "tokenizer", "estimate", "none"
    attempts: int = 0
    outcome: dict[str, str] = field(default_factory=dict)  # what steps decided: {"cache": "miss", ...}
    error: str | None = None
    time: float = field(default_factory=time.time)


def hash_secret(secret: str) -> str:
    """Keys are random 192-bit secrets, so a plain sha256 is enough to store them safely (no salt or
    slow hash is needed against guessing, unlike passwords)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    """Keys, buckets and the ledger in SQLite (`url` a file path) or PostgreSQL (`postgresql://...`)."""

    def __init__(self, url: str, threads: int = 4):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gateway-db")
        with self._cursor() as cur:
            for statement in _SCHEMA.format(autoid="BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY").split(";"):
                if statement.strip():
                    cur.execute(statement)

    # ---- plumbing --------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise LondiniumError("gateway.database is a PostgreSQL URL but psycopg is not installed: "
                                     "pip install 'londinium[postgres]'") from None
            try:
                return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as e:
                raise LondiniumError(f"gateway.database: cannot connect to PostgreSQL ({str(e).strip().splitlines()[0]})") from None
        try:
            conn = sqlite3.connect(self.url, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a power cut may lose the last commits
        except sqlite3.Error as e:
            raise LondiniumError(f"gateway.database {self.url}: cannot open it as SQLite ({e})") from None
        return conn

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._connections.append(conn)
        return conn

    def _sql(self, text: str) -> str:
        if self.postgres:
            return text.replace("?", "%s")
        return text.replace("LEAST(", "MIN(").replace("GREATEST(", "MAX(")

    @contextlib.contextmanager
    def _cursor(self, transaction: bool = False) -> Iterator[Any]:
        conn = self._conn()
        if self.postgres:
            with (conn.transaction() if transaction else contextlib.nullcontext()), conn.cursor() as cur:
                yield _Cursor(cur, self._sql)
            return
        cur = conn.cursor()
        if transaction:
            cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read
        try:
            yield _Cursor(cur, self._sql)
            if transaction:
                cur.execute("COMMIT")
        except BaseException:
            if transaction:
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a method from the event loop: PostgreSQL's on the store's threads (a network round
        trip must not stop the loop); SQLite's in place, as its statements take tens of microseconds
        and handing them to a thread cost more than that (docs/LOG.md, the gateway's overhead)."""
        if not self.postgres:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()

    # ---- keys ------------------------------------------------------------------------------------

    def create_key(self, name: str, models: list[str] | None = None, rpm: int = 0, tpm: int = 0,
                   budget: float = 0.0) -> tuple[Key, str]:
        """A new key and its secret (shown once; only its hash is kept)."""
        secret = "lk-" + secrets.token_urlsafe(24)
        key = Key(id="key_" + secrets.token_hex(6), name=name, models=list(models or []), rpm=rpm, tpm=tpm,
                  budget=budget, spend=0.0, created=time.time())
        with self._cursor() as cur:
            cur.execute("INSERT INTO keys (id, name, hash, models, rpm, tpm, budget, spend, created) VALUES (?,?,?,?,?,?,?,?,?)",
                        (key.id, name, hash_secret(secret), json.dumps(key.models), rpm, tpm, budget, 0.0, key.created))
        return key, secret

    _KEY = "SELECT id, name, models, rpm, tpm, budget, spend, created, revoked FROM keys"

    @staticmethod
    def _key(row: tuple) -> Key:
        return Key(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])

    def find_key(self, secret: str) -> Key | None:
        with self._cursor() as cur:
            row = cur.execute(self._KEY + " WHERE hash = ?", (hash_secret(secret),)).fetchone()
        return self._key(row) if row else None

    def list_keys(self) -> list[Key]:
        with self._cursor() as cur:
            return [self._key(r) for r in cur.execute(self._KEY + " ORDER BY created").fetchall()]

    def revoke_key(self, key_id: str) -> Key:
        with self._cursor() as cur:
            cur.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), key_id))
            row = cur.execute(self._KEY + " WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise LondiniumError(f"no key {key_id!r}; `londinium gateway keys list` shows the ids")
        return self._key(row)

    # ---- token buckets ---------------------------------------------------------------------------

    _REFILLED = "LEAST(?, level + GREATEST(0, ? - updated) * ?)"

    def take(self, key_id: str, kind: str, capacity: float, per_second: float, need: float, cost: float,
             now: float | None = None) -> float:
        """Take `cost` from the bucket if its refilled level is at least `need`: 0.0, else the seconds
        until it will be (the caller's Retry-After). A new bucket starts full."""
        now = time.time() if now is None else now
        refill = (capacity, now, per_second)
        with self._cursor() as cur:
            for _ in range(2):
                row = cur.execute(f"UPDATE buckets SET level = {self._REFILLED} - ?, updated = GREATEST(updated, ?) "
                                  f"WHERE key_id = ? AND kind = ? AND {self._REFILLED} >= ? RETURNING level",
                                  (*refill, cost, now, key_id, kind, *refill, need)).fetchone()
                if row is not None:
                    return 0.0
                level = cur.execute(f"SELECT {self._REFILLED} FROM buckets WHERE key_id = ? AND kind = ?",
                                    (*refill, key_id, kind)).fetchone()
                if level is not None:
                    return max(1e-3, (need - level[0]) / per_second) if per_second > 0 else 86400.0
                cur.execute("INSERT INTO buckets (key_id, kind, level, updated) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            (key_id, kind, capacity, now))
        raise AssertionError("unreachable: the bucket exists after the insert")

    def take_all(self, key_id: str, buckets: list[tuple[str, int]]) -> tuple[float, str]:
        """A request's admission, in one call: for each (kind, per-minute limit) in order, "tpm" needs a
        positive bucket and takes nothing (`record` debits the tokens served), "rpm" takes one
        request. (0.0, "") when all allow it, else (seconds to wait, the kind that refused)."""
        now = time.time()
        for kind, limit in buckets:
            cost = 1.0 if kind == "rpm" else 0.0
            wait = self.take(key_id, kind, limit, limit / 60.0, 1.0, cost, now)
            if wait:
                return wait, kind
        return 0.0, ""

    def debit(self, key_id: str, kind: str, capacity: float, tokens: float, now: float | None = None) -> None:
        """Take the tokens a request was served from a tokens-per-minute bucket (it may go negative:
        then nothing is admitted until it has refilled past zero)."""
        with self._cursor(transaction=True) as cur:
            self._debit(cur, key_id, kind, capacity, tokens, time.time() if now is None else now)

    def _debit(self, cur: Any, key_id: str, kind: str, capacity: float, tokens: float, now: float) -> None:
        refill = (capacity, now, capacity / 60.0)
        cur.execute(f"UPDATE buckets SET level = {self._REFILLED} - ?, updated = GREATEST(updated, ?) "
                    "WHERE key_id = ? AND kind = ?", (*refill, tokens, now, key_id, kind))

    # ---- the ledger ------------------------------------------------------------------------------

    def record(self, row: LedgerRow, key: Key | None) -> None:
        """Append a ledger row; add its cost to the key's spend and its tokens to the key's
        tokens-per-minute bucket, in the same transaction."""
        values = {"time": row.time, "day": time.strftime("%Y-%m-%d", time.gmtime(row.time)), "request_id": row.request_id,
                  "key_id": row.key_id, "model": row.model, "backend": row.backend, "backend_model": row.backend_model,
                  "stream": int(row.stream), "status": row.status, "prompt_tokens": row.prompt_tokens,
                  "completion_tokens": row.completion_tokens, "cost": row.cost, "latency_s": row.latency_s,
                  "usage_source": row.usage_source, "attempts": row.attempts,
                  "outcome": json.dumps(row.outcome, sort_keys=True), "error": row.error}
        tokens = row.prompt_tokens + row.completion_tokens
        with self._cursor(transaction=True) as cur:
            cur.execute(f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})",
                        tuple(values[c] for c in LEDGER_COLUMNS))
            if key is not None and row.cost:
                cur.execute("UPDATE keys SET spend = spend + ? WHERE id = ?", (row.cost, key.id))
            if key is not None and key.tpm and tokens:
                self._debit(cur, key.id, "tpm", key.tpm, tokens, row.time)

    def ledger(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Every ledger row (of one key), oldest first."""
        where, args = (" WHERE key_id = ?", (key_id,)) if key_id else ("", ())
        with self._cursor() as cur:
            rows = cur.execute(f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger{where} ORDER BY id", args).fetchall()
        return [dict(zip(LEDGER_COLUMNS, r)) for r in rows]

    def usage(self, by: list[str], since: str = "") -> list[dict[str, Any]]:
        """Requests, tokens and cost grouped by any of key, model, backend, day (days are UTC)."""
        columns = {"key": "COALESCE(k.name || ' (' || l.key_id || ')', '-')", "model": "l.model",
                   "backend": "COALESCE(l.backend, '-')", "day": "l.day"}
        unknown = [b for b in by if b not in columns]
        if unknown:
            raise LondiniumError(f"usage --by {unknown[0]!r}: choose from {', '.join(columns)}")
        group = [columns[b] for b in by]
        select = ", ".join(f"{c} AS {b}" for b, c in zip(by, group))
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT {select}{', ' if by else ''}COUNT(*), SUM(CASE WHEN l.status >= 400 THEN 1 ELSE 0 END), "
                "SUM(l.prompt_tokens), SUM(l.completion_tokens), SUM(l.cost) "
                f"FROM ledger l LEFT JOIN keys k ON k.id = l.key_id WHERE l.day >= ?"
                + (f" GROUP BY {', '.join(group)} ORDER BY {', '.join(group)}" if by else ""), (since,)).fetchall()
        names = [*by, "requests", "errors", "prompt_tokens", "completion_tokens", "cost"]
        return [dict(zip(names, r)) for r in rows if r[len(by)]]


class _Cursor:
    """A DB-API cursor whose `execute` rewrites the SQL for the dialect and returns itself."""

    def __init__(self, cur: Any, sql: Callable[[str], str]):
        self.cur, self.sql = cur, sql

    def execute(self, text: str, args: tuple = ()) -> "_Cursor":
        self.cur.execute(self.sql(text), args)
        return self

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cur.fetchall()
