"""One streamed completion as `londinium bench serve` sends and times it, trusting nothing it receives.

    rec = await stream_completion(client, url, payload, headers, deadline_s=600)

Nothing a server sends can crash or stall the benchmark: each request has a total deadline (httpx's
own timeouts are per read, so a server that trickles a byte now and then never trips them); a
stream line may be at most `MAX_LINE_BYTES` and a whole answer `MAX_STREAM_BYTES`, read as they
arrive, so a 300 MB line costs no memory; every chunk is checked for the shape the OpenAI API
gives it (an object; `choices` a list of one object, index 0, with a string `text`; `usage` whole token counts,
at most the `max_tokens` asked for, and no more prompt tokens than the prompt has bytes plus a
few special tokens). Anything else ends the request as a failed one, with the reason in its
record, and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx

MAX_LINE_BYTES = 1 << 20  # an SSE line of a chunk is ~200 bytes; this is 5,000x that
MAX_STREAM_BYTES = 64 << 20
MAX_ERROR_BYTES = 64 << 10  # what is read of an error response's body
SPECIAL_TOKENS = 16  # tokens a server may add to a prompt (BOS and the like) beyond one per byte


class StreamError(Exception):
    """The server's answer is malformed; the message is the failed request's reason."""


@dataclass
class RequestRecord:
    """One benchmark request as the client saw it. Times in seconds from the moment it was sent."""

    prompt_tokens: int = 0  # the server's usage (else our tokenizer's count of the prompt)
    output_tokens: int = 0  # the server's usage (else our tokenizer's count of the text)
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0  # E2EL: to the last chunk with a choice
    success: bool = False
    error: str = ""
    usage: bool = False  # the token counts came from the server's usage chunk
    expected_prompt_tokens: int | None = None  # our tokenizer's count of the prompt sent
    expected_output_tokens: int | None = None  # max_tokens, when ignore_eos fixed the length
    text_tokens: int | None = None  # our tokenizer's count of the returned text, when it is at hand
    finish_reason: str | None = None  # the last one the stream gave ("length", "stop", ...)
    text: str = ""

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; undefined for a one-token answer."""
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


# ---- reading what the server sends ---------------------------------------------------------------


async def read_bounded(resp: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of a response body (the rest is not read)."""
    out = bytearray()
    async for chunk in resp.aiter_bytes():
        out += chunk[:limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)


async def sse_lines(resp: httpx.Response) -> AsyncIterator[str]:
    """The lines of an event stream as they arrive, each at most MAX_LINE_BYTES and all together at
    most MAX_STREAM_BYTES (a StreamError past either), each UTF-8."""
    buf, total = bytearray(), 0
    async for chunk in resp.aiter_bytes():
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise StreamError(f"the answer ran past {MAX_STREAM_BYTES >> 20} MiB")
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            yield _line(buf[:end])
            del buf[:end + 1]
        if len(buf) > MAX_LINE_BYTES:
            raise StreamError(f"a stream line ran past {MAX_LINE_BYTES >> 20} MiB")
    if buf:
        yield _line(buf)


def _line(raw: bytearray) -> str:
    if len(raw) > MAX_LINE_BYTES:
        raise StreamError(f"a stream line ran past {MAX_LINE_BYTES >> 20} MiB")
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError:
        raise StreamError("a stream line is not UTF-8") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_chunk(data: str) -> dict[str, Any]:
    """A `data:` payload as a JSON object, or a StreamError saying what it is instead."""
    try:
        chunk = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise StreamError(f"a chunk is not JSON ({str(e)[:80] or type(e).__name__})") from None
    if not isinstance(chunk, dict):
        raise StreamError(f"a chunk is a JSON {type(chunk).__name__}, not an object")
    return chunk


def chunk_choice(chunk: dict[str, Any]) -> tuple[str, str | None] | None:
    """(text, finish_reason) of the chunk's first choice; None when it has no choice."""
    choices = chunk.get("choices")
    if not choices:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise StreamError("'choices' is not a list of objects")
    index = choices[0].get("index", 0)
    if len(choices) != 1 or type(index) is not int or index != 0:  # the request asks for one choice (n = 1)
        raise StreamError(f"'choices' holds {len(choices)} choice(s), the first with index {index!r}; one (index 0) was asked for")
    text, finish = choices[0].get("text"), choices[0].get("finish_reason")
    if text is not None and not isinstance(text, str):
        raise StreamError(f"choices[0].text is a {type(text).__name__}, not a string")
    if finish is not None and not isinstance(finish, str):
        raise StreamError(f"choices[0].finish_reason is a {type(finish).__name__}, not a string")
    return text or "", finish


def usage_counts(usage: Any, payload: dict[str, Any]) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a usage object, checked against the request: whole
    counts, not negative, no more completion tokens than max_tokens, no more prompt tokens than the
    prompt's bytes and a few special tokens (no tokenizer makes more)."""
    if not isinstance(usage, dict):
        raise StreamError(f"'usage' is a {type(usage).__name__}, not an object")
    counts = []
    for key in ("prompt_tokens", "completion_tokens"):
        n = usage.get(key)
        if type(n) is not int:
            raise StreamError(f"usage.{key} = {str(n)[:40]!r} is not a whole number of tokens")
        if n < 0:
            raise StreamError(f"usage.{key} = {n} is negative")
        counts.append(n)
    prompt, completion = counts
    if completion > payload["max_tokens"]:
        raise StreamError(f"usage.completion_tokens = {completion} is more than the {payload['max_tokens']} asked for")
    most = len(payload["prompt"].encode("utf-8")) + SPECIAL_TOKENS
    if prompt > most:
        raise StreamError(f"usage.prompt_tokens = {prompt} is more than a {most - SPECIAL_TOKENS}-byte prompt can make")
    return prompt, completion


def _error_text(status: int, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except Exception:  # not OpenAI's error shape: the body itself says what went wrong
        message = None
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace")
    return f"HTTP {status}: {message.strip()[:200]}"


def _stream_error(chunk: dict[str, Any]) -> str:
    err = chunk["error"]
    message = err.get("message", err) if isinstance(err, dict) else err
    return f"error in stream: {str(message)[:200]}"


# ---- one request ---------------------------------------------------------------------------------


async def stream_completion(client: httpx.AsyncClient, url: str, payload: dict, headers: dict, tok: Any = None,
                            deadline_s: float = 600.0) -> RequestRecord:
    """Send one streamed completion and time its chunks; never raises (a failure is a record)."""
    from londinium.tokenizer.codec import encode

    rec = RequestRecord()
    text: list[str] = []
    st = time.perf_counter()
    latest = st

    async def read() -> None:
        nonlocal latest
        async with client.stream("POST", url, json=payload, headers=headers) as resp:
            if resp.status_code != 200:
                rec.error = _error_text(resp.status_code, await read_bounded(resp, MAX_ERROR_BYTES))
                return
            async for line in sse_lines(resp):
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = parse_chunk(data)
                if "error" in chunk:
                    rec.error = _stream_error(chunk)
                    return
                if (choice := chunk_choice(chunk)) is not None:
                    now = time.perf_counter()
                    if not text:
                        rec.ttft = now - st
                    else:
                        rec.itl.append(now - latest)
                    latest = now
                    text.append(choice[0])
                    rec.finish_reason = choice[1] or rec.finish_reason
                if usage := chunk.get("usage"):
                    rec.prompt_tokens, rec.output_tokens = usage_counts(usage, payload)
                    rec.usage = True

    try:
        await asyncio.wait_for(read(), deadline_s)
    except asyncio.TimeoutError:
        rec.error = f"no complete answer within {deadline_s:g} s (--timeout)"
    except StreamError as e:
        rec.error = f"malformed stream: {e}"
    except httpx.HTTPError as e:
        rec.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if rec.error:
        return rec
    if not text:
        rec.error = "the stream ended without a completion chunk"
        return rec
    rec.latency, rec.text, rec.success = latest - st, "".join(text), True
    if tok is not None:
        rec.text_tokens = len(encode(tok, rec.text))
    if not rec.usage:  # a server that ignores include_usage: count what came back
        rec.output_tokens = rec.text_tokens if rec.text_tokens is not None else len(text)
    return rec
