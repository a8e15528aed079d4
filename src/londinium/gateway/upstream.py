"""The last step: call the route's backends in order until one answers.

- **What falls back**: a 429 or 5xx, a timeout, a connection refused or dropped, an answer that is
  not JSON, and a 400 context_length_exceeded (that backend only: its context is what failed).
  Any other 4xx is the client's mistake and goes back to it as the backend said it.
- **Retries**: `gateway.retries` attempts after the first, walking the order (a backend tried
  again waits a jittered exponential backoff first); each attempt reports to the backend's breaker.
- **Streams** fall back only before their first event: the gateway reads the backend's first event
  (within `timeout_s`, a total deadline, so a backend that trickles bytes is cut off) before it
  answers the client; after that, chunks pass through one by one as they arrive, and a backend
  that stalls (`stream_idle_s`) or breaks off ends the stream with an error event.
- **Usage**: a stream always asks the backend for `include_usage`, so the ledger gets the
  backend's own count; the usage chunk reaches the client only if it asked for it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any, AsyncIterator

import httpx

from londinium.bench.stream import MAX_ERROR_BYTES, StreamError, parse_chunk, read_bounded, sse_lines
from londinium.gateway.backends import Backend
from londinium.gateway.chain import Exchange, Next, Reply
from londinium.serve.errors import APIError

PATHS = {"chat": "/chat/completions", "completion": "/completions"}


class Failure(Exception):
    """An attempt that may fall back: `kind` is timeout, connection, status or context."""

    def __init__(self, kind: str, message: str, status: int = 502, body: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.kind, self.status, self.body, self.headers = kind, status, body, headers or {}


async def _events(resp: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The chunks of an event stream; a StreamError if it ends without `[DONE]`."""
    async for line in sse_lines(resp):
        if line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield parse_chunk(data)
    raise StreamError("the stream ended without [DONE]")


def _error_body(raw: bytes) -> dict | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("error"), dict) else None


def _classify(backend: Backend, status: int, raw: bytes, headers: httpx.Headers) -> Failure | Reply:
    """A non-200 answer: a Failure to fall back on, or the client's own error to hand back."""
    body = _error_body(raw)
    message = (body or {}).get("error", {}).get("message") if body else raw[:200].decode("utf-8", "replace")
    if status == 400 and body and body["error"].get("code") == "context_length_exceeded":
        return Failure("context", f"{backend.name}: {message}", 400, body)
    if status == 429 or status >= 500:
        keep = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else {}
        return Failure("status", f"{backend.name}: HTTP {status}: {message}", status, body, keep)
    return Reply(status=status, body=body or {"error": {"message": f"{backend.name}: {message}", "type": "invalid_request_error",
                                                        "param": None, "code": None}})


class Upstream:
    name = "upstream"

    def __init__(self, gateway: Any):
        self.client: httpx.AsyncClient = gateway.client
        self.retries, self.backoff_s = gateway.settings.gateway.retries, gateway.settings.gateway.backoff_s
        self.rng = gateway.rng
        self.tracer = gateway.telemetry.tracer

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        order, failures, tried = list(ex.candidates), [], {}
        for attempt in range(1 + self.retries):
            if not order:
                break
            backend = order[attempt % len(order)]
            if backend.name in tried:
                await asyncio.sleep(jitter(self.rng, self.backoff_s, tried[backend.name] - 1))
            tried[backend.name] = tried.get(backend.name, 0) + 1
            if not backend.breaker.acquire():
                failures.append(Failure("breaker", f"{backend.name}: circuit breaker {backend.breaker.state}", 503))
                continue
            ex.attempts += 1
            body = {**ex.body, "model": backend.cfg.model}
            if ex.stream:  # the ledger needs the backend's count; the app drops the chunk if the client did not ask
                body["stream_options"] = {**(ex.body.get("stream_options") or {}), "include_usage": True}
            try:
                with self._span(ex, backend):
                    return await (self._stream if ex.stream else self._call)(ex, backend, body)
            except Failure as f:
                failures.append(f)
                ex.reason += f"; fell back from {f}"[:300]
                if f.kind == "context":
                    order.remove(backend)  # its context will not grow on a retry
                else:
                    backend.breaker.failure()
            except BaseException:  # the client went away (cancelled): no verdict on the backend
                backend.breaker.release()
                raise
        raise self._final(ex, failures)

    def _span(self, ex: Exchange, backend: Backend) -> Any:
        import contextlib

        if self.tracer is None:
            return contextlib.nullcontext()
        url = httpx.URL(backend.cfg.base_url)
        return self.tracer.start_as_current_span(
            f"{'chat' if ex.endpoint == 'chat' else 'text_completion'} {backend.cfg.model}",
            attributes={"gen_ai.operation.name": "chat" if ex.endpoint == "chat" else "text_completion",
                        "gen_ai.request.model": backend.cfg.model, "gen_ai.provider.name": "openai",
                        "server.address": url.host, "server.port": url.port or (443 if url.scheme == "https" else 80),
                        "londinium.gateway.backend": backend.name})

    def _final(self, ex: Exchange, failures: list[Failure]) -> APIError:
        said = "; ".join(str(f) for f in failures) or "no backend could be tried"
        if failures and all(f.kind == "context" for f in failures):
            return APIError(400, f"No backend of {ex.model!r} can hold this request: {said}",
                            param="messages" if ex.endpoint == "chat" else "prompt", code="context_length_exceeded")
        last = failures[-1] if failures else Failure("breaker", said, 503)
        code = {"timeout": "upstream_timeout", "connection": "upstream_unavailable", "breaker": "backends_unavailable"}.get(last.kind, "upstream_error")
        status = {"timeout": 504, "connection": 502}.get(last.kind, last.status)
        return APIError(status, f"every attempt on {ex.model!r} failed ({ex.attempts} attempts): {said}", code=code,
                        headers=last.headers or ({"Retry-After": "1"} if status in (429, 503) else None))

    async def _call(self, ex: Exchange, backend: Backend, body: dict) -> Reply:
        start = time.perf_counter()
        backend.in_flight += 1
        try:
            resp = await within(self.client.post(backend.url(PATHS[ex.endpoint]), content=_dumps(body),
                                                 headers={**backend.headers, "Content-Type": "application/json"}),
                                backend.cfg.timeout_s)
        except asyncio.TimeoutError:
            raise Failure("timeout", f"{backend.name}: no answer within {backend.cfg.timeout_s:g} s", 504) from None
        except httpx.HTTPError as e:
            raise Failure("connection", f"{backend.name}: {type(e).__name__}: {e}".rstrip(": "), 502) from None
        finally:
            backend.in_flight -= 1
        elapsed = time.perf_counter() - start
        if resp.status_code != 200:
            outcome = _classify(backend, resp.status_code, resp.content[:MAX_ERROR_BYTES], resp.headers)
            if isinstance(outcome, Failure):
                raise outcome
            backend.breaker.success()
            return outcome
        try:
            answer = resp.json()
            assert isinstance(answer, dict)
        except (ValueError, AssertionError):
            raise Failure("status", f"{backend.name}: the answer is not a JSON object", 502) from None
        backend.breaker.success()
        backend.observe_ttfb(elapsed)
        ex.backend, ex.upstream_s = backend, elapsed
        return Reply(200, body=answer)

    async def _stream(self, ex: Exchange, backend: Backend, body: dict) -> Reply:
        start = time.perf_counter()
        deadline = backend.cfg.timeout_s
        request = self.client.build_request("POST", backend.url(PATHS[ex.endpoint]), content=_dumps(body),
                                            headers={**backend.headers, "Content-Type": "application/json"})
        backend.in_flight += 1
        resp: httpx.Response | None = None
        try:
            resp = await within(self.client.send(request, stream=True), deadline)
            if resp.status_code != 200:
                raw = await within(read_bounded(resp, MAX_ERROR_BYTES), max(0.1, deadline - (time.perf_counter() - start)))
                outcome = _classify(backend, resp.status_code, raw, resp.headers)
                if isinstance(outcome, Failure):
                    raise outcome
                backend.breaker.success()
                await resp.aclose()
                backend.in_flight -= 1
                return outcome
            events = _events(resp)
            first = await within(anext(events), max(0.1, deadline - (time.perf_counter() - start)))
            if "error" in first:
                raise Failure("status", f"{backend.name}: error event before any output: {str(first['error'])[:200]}", 502)
        except BaseException as e:
            if resp is not None:
                await resp.aclose()
            backend.in_flight -= 1
            if isinstance(e, Failure):
                raise
            if isinstance(e, asyncio.TimeoutError):
                raise Failure("timeout", f"{backend.name}: no first event within {deadline:g} s", 504) from None
            if isinstance(e, (httpx.HTTPError, StreamError, StopAsyncIteration)):
                raise Failure("connection", f"{backend.name}: the stream failed before its first event "
                                            f"({type(e).__name__}: {e})", 502) from None
            raise
        elapsed = time.perf_counter() - start
        backend.breaker.success()
        backend.observe_ttfb(elapsed)
        ex.backend, ex.upstream_s = backend, elapsed
        return Reply(200, events=self._relay(backend, resp, first, events))

    async def _relay(self, backend: Backend, resp: httpx.Response, first: dict, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """The backend's chunks as they come, the first already read; errors after it become APIErrors
        (the app sends them as an error event), and count against the backend's breaker."""
        idle = backend.cfg.stream_idle_s
        try:
            yield first
            while True:
                try:
                    chunk = await within(anext(events), idle)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    backend.breaker.failure()
                    raise APIError(504, f"backend {backend.name} sent nothing for {idle:g} s in the middle of the stream "
                                        "(backends.stream_idle_s)", code="upstream_timeout") from None
                except (httpx.HTTPError, StreamError) as e:
                    backend.breaker.failure()
                    raise APIError(502, f"backend {backend.name} broke off the stream ({type(e).__name__}: {e})",
                                   code="upstream_error") from None
                if "error" in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                    raise APIError(502, f"backend {backend.name}: {err.get('message')}", code=err.get("code") or "upstream_error")
                yield chunk
        finally:
            backend.in_flight -= 1
            # shielded: a client that went away cancels this task, and the connection must still close
            await asyncio.shield(resp.aclose())


async def within(awaitable: Any, seconds: float) -> Any:
    """`await awaitable`, or asyncio.TimeoutError after `seconds`: with `asyncio.timeout` where Python
    has it (3.11+), which, unlike `wait_for`, makes no task per call (a stream waits once per chunk)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def _dumps(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def jitter(rng: random.Random, base: float, n: int) -> float:
    """Full jitter (AWS's): uniform in 0..base*2^n, so retries of many clients spread out."""
    return rng.uniform(0, base * 2 ** n)
