"""What the server reports about itself: Prometheus metrics and a request log.

Metrics (text format at GET /metrics, one registry per app so two servers in one process do not mix):

    londinium_requests_total{endpoint, status}          finished requests by HTTP status; a stream the
                                                        client dropped counts as 499, one that failed
                                                        after its 200 as the status of its error event
    londinium_waiting_requests / _running_sequences     the engine's queue depth and busy KV-cache slots
    londinium_max_running_sequences                     the slots at most (serve.max_running, or what
                                                        serve.memory_budget_mb sized it to)
    londinium_time_to_first_token_seconds               arrival to first token (queueing included)
    londinium_time_per_output_token_seconds             decode time per token after the first
    londinium_e2e_request_latency_seconds               arrival to last byte
    londinium_prompt_tokens_total / _generation_tokens_total

The request log is one JSON object per line per request: id, endpoint, status, token counts and
timings; prompt text only when `serve.log_prompts` is on. Its file is opened before the port opens
(a folder, or a FIFO that nothing reads, is one line then: opening such a FIFO used to wait for a
reader for ever); a line that cannot be written later (a full disk) is lost and said once a minute,
and the request is served all the same.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from londinium.errors import PathError

log = logging.getLogger("londinium.serve")

# Latency buckets from 1 ms to 2 minutes: tiny CPU models answer in milliseconds, big ones queue.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_PER_TOKEN = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, stats: Callable[[], dict]):
        """`stats` returns the engine loop's counters ({"running": ..., "waiting": ...}), read at scrape time."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("londinium_requests", "Requests finished, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("londinium_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("londinium_generation_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram("londinium_time_to_first_token_seconds", "Arrival to the first generated token.",
                              buckets=_LATENCY, registry=r)
        self.tpot = Histogram("londinium_time_per_output_token_seconds", "Decode time per output token after the first.",
                              buckets=_PER_TOKEN, registry=r)
        self.e2e = Histogram("londinium_e2e_request_latency_seconds", "Arrival to the end of the response.",
                             buckets=_LATENCY, registry=r)
        self.waiting = Gauge("londinium_waiting_requests", "Requests queued for a KV-cache slot.", registry=r)
        self.running = Gauge("londinium_running_sequences", "Sequences being decoded (busy KV-cache slots).", registry=r)
        self.waiting.set_function(lambda: float(stats().get("waiting", 0)))
        self.running.set_function(lambda: float(stats().get("running", 0)))
        self.max_running = Gauge("londinium_max_running_sequences", "KV-cache slots at most (serve.max_running).", registry=r)
        self.max_running.set_function(lambda: float(stats().get("max_running", 0)))

    def observe(self, record: dict[str, Any]) -> None:
        """Count one finished request (the same record the request log writes)."""
        self.requests.labels(record["endpoint"], str(record["status"])).inc()
        self.prompt_tokens.inc(record.get("prompt_tokens") or 0)
        self.generation_tokens.inc(record.get("completion_tokens") or 0)
        if record.get("ttft_s") is not None:
            self.ttft.observe(record["ttft_s"])
        if record.get("tpot_s") is not None:
            self.tpot.observe(record["tpot_s"])
        if record.get("e2e_s") is not None:
            self.e2e.observe(record["e2e_s"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestLog:
    """Appends one JSON line per request to a file, or to standard error when no path is given."""

    def __init__(self, path: str | Path | None = None, log_prompts: bool = False):
        self.log_prompts = log_prompts
        self._lock = threading.Lock()
        self._file: IO[str] = _open_for_appending(Path(path)) if path else sys.stderr
        self._owned, self._where = bool(path), str(path or "standard error")
        self._lost, self._said_at = 0, -float("inf")

    def write(self, record: dict[str, Any]) -> None:
        if not self.log_prompts:
            record = {k: v for k, v in record.items() if k != "prompt"}
        line = json.dumps({"time": round(time.time(), 3), **record}, ensure_ascii=False)
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as e:  # the log's trouble is not the request's: serve it, say so once a minute
                self._lost += 1
                if time.monotonic() - self._said_at >= 60:
                    self._said_at = time.monotonic()
                    log.warning("londinium serve: the request log %s cannot be written (%s); requests are served, "
                                "%d log line(s) lost so far", self._where, e.strerror or e, self._lost)

    def close(self) -> None:
        if self._owned:
            try:
                self._file.close()
            except OSError:
                pass  # the last lines could not be flushed: already said by write


def _open_for_appending(path: Path) -> IO[str]:
    """`path` opened to append lines, or PathError naming serve.request_log and what to do. Opened
    without blocking, so a FIFO that no program reads is an error now instead of a wait for ever."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
    except IsADirectoryError:
        raise PathError(f"serve.request_log {path} is a folder; give a file to append the log to") from None
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise PathError(f"serve.request_log {path} is a FIFO that no program reads; start its reader first, "
                            "or give a file") from None
        raise PathError(f"serve.request_log {path} cannot be opened ({e.strerror or e}); give a file that can be written") from None
    os.set_blocking(fd, True)  # writes wait for a slow FIFO reader, as they would for a plain open()
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)
