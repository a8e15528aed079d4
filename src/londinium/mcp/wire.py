"""Every message that reaches `londinium mcp` is checked here before the SDK's transports read it.

The SDK (mcp 2.3) leaves a host waiting forever on some messages. Its stdio transport drops a line
it cannot read (malformed JSON, nesting deeper than its parser goes, a lone surrogate escape such as
"\\ud800", JSON that is not JSON-RPC): it hands the dispatcher an exception, which logs it at debug
level and answers nothing. Both transports read a request whose id is a float, a boolean or null as
a notification, which is never answered either; and the HTTP transport calls a malformed request
invalid *params* (-32602). JSON-RPC 2.0 asks for a parse error (-32700) for what is not JSON, an
invalid request (-32600) for JSON that is not a valid message, with `"id": null` when the id
cannot be read; MCP ids are strings or integers. `check_message` is that rule, one function for
both transports:

- stdio: `serve_stdio` reads stdin itself, line by line (at most `MAX_MESSAGE_BYTES` a line, the
  SDK's own HTTP body limit, so a huge line costs no memory), answers a bad line on stdout at once
  and hands the good ones to the SDK's `stdio_server`, which writes every answer through the same
  lock, so answers never interleave;
- HTTP: `CheckedBody` answers a bad POST body with 400 and the error, before the SDK's app.

Either way the server keeps serving. Whatever `check_message` passes, the SDK reads as the message
it is, because its last check is the SDK's own reading of the line.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

import anyio
import pydantic_core
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError, jsonrpc_message_adapter
from pydantic import ValidationError

from londinium.serve.bodies import replay_body

MAX_MESSAGE_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE  # 4 MiB: one limit for a stdio line and an HTTP body


def _error(request_id: Any, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


def _is_id(value: Any) -> bool:
    """An MCP request id: a string or an integer, not a boolean, a float or null."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _reason(msg: dict) -> str:
    """Why the SDK refused a JSON object, in a line (pydantic's own report is a page)."""
    if msg.get("jsonrpc") != "2.0":
        return 'a message needs "jsonrpc": "2.0"'
    if "method" in msg and not isinstance(msg["method"], str):
        return '"method" must be a string'
    if "params" in msg and not isinstance(msg["params"], dict):
        return '"params" must be an object'
    return 'not a request ("method" and "id"), a notification ("method") or a response ("id" and "result" or "error")'


def check_message(data: bytes) -> JSONRPCError | None:
    """None when `data` is one JSON-RPC message the SDK will read as what it is; otherwise the
    error that answers it (its id when the id can be read, else null).

    JSON is parsed by the SDK's own parser (pydantic's), so "is it JSON" has one answer here and
    there: it refuses NaN and Infinity (not JSON), a lone surrogate escape such as "\\ud800" (not
    Unicode text) and nesting deeper than 200 levels, each a parse error."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return _error(None, PARSE_ERROR, f"Parse error: not UTF-8 (byte {e.start})")
    try:
        msg = pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as e:
        hint = ": \\ud800-\\udfff escapes must come in pairs" if "hex escape" in str(e) else ""
        return _error(None, PARSE_ERROR, f"Parse error: {e}{hint}")
    if not isinstance(msg, dict):
        batch = " (batches are not supported)" if isinstance(msg, list) else ""
        return _error(None, INVALID_REQUEST, f"Invalid Request: a message is one JSON object{batch}")
    error_response = "error" in msg and "method" not in msg  # a peer's error about what it could not read has id null
    if "id" in msg and not _is_id(msg["id"]) and not (error_response and msg["id"] is None):
        return _error(None, INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    try:
        jsonrpc_message_adapter.validate_json(data, by_name=False)  # exactly how the SDK reads a line
    except ValidationError:
        return _error(msg.get("id"), INVALID_REQUEST, f"Invalid Request: {_reason(msg)}")
    return None


def too_long(limit: int = MAX_MESSAGE_BYTES) -> JSONRPCError:
    return _error(None, INVALID_REQUEST, f"Invalid Request: a message of more than {limit:,} bytes")


def dump(error: JSONRPCError) -> str:
    """An error as one line of JSON, as the SDK writes its messages."""
    return error.model_dump_json(by_alias=True, exclude_unset=True)


# ---- stdio -----------------------------------------------------------------------------------------


class Wire:
    """The protocol's stdout for the SDK's `stdio_server`: each write is one whole message line,
    written and flushed under a lock, so an error written by `CheckedLines` never lands inside
    another answer."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.lock = sink, threading.Lock()

    async def write(self, text: str) -> None:
        import anyio

        await anyio.to_thread.run_sync(self._write, text.encode("utf-8", "replace"))

    def _write(self, data: bytes) -> None:
        with self.lock:
            self.sink.write(data)
            self.sink.flush()

    async def flush(self) -> None:
        """Each write is flushed already."""


class CheckedLines:
    """The lines of stdin for the SDK's `stdio_server`, each checked first: a bad line is answered
    on the wire and not passed on, a blank one is skipped."""

    def __init__(self, source: BinaryIO, wire: Wire, limit: int = MAX_MESSAGE_BYTES):
        self.source, self.wire, self.limit = source, wire, limit

    def __aiter__(self) -> CheckedLines:
        return self

    async def __anext__(self) -> str:
        import anyio

        while True:
            line, whole = await anyio.to_thread.run_sync(self._read_line)
            if not line:
                raise StopAsyncIteration
            if whole and not line.strip():
                continue
            error = check_message(line) if whole else too_long(self.limit)
            if error is None:
                return line.decode("utf-8")
            await self.wire.write(dump(error) + "\n")

    def _read_line(self) -> tuple[bytes, bool]:
        """(the next line, True), or (its first bytes, False) for a line over the limit, whose rest is
        read and dropped; (b"", True) at the end of input."""
        line = self.source.readline(self.limit + 1)
        if len(line) <= self.limit or line.endswith(b"\n"):
            return line, True
        while (rest := self.source.readline(1 << 16)) and not rest.endswith(b"\n"):
            pass
        return line[:1], False


@contextmanager
def claimed_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Private copies of stdin and stdout for the protocol; meanwhile fd 0 reads /dev/null and fd 1
    writes to stderr, so a stray print (or a child process) cannot write into the protocol or read
    from it. The SDK's `stdio_server` does the same when it opens the streams itself."""
    sys.stdout.flush()
    saved_in, saved_out = os.dup(0), os.dup(1)
    stdin, stdout = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield stdin, stdout
    finally:
        stdout.close()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def serve_stdio_async(server: Any) -> None:
    """Serve `server` (an `MCPServer`) over stdin and stdout, each line checked by `check_message`."""
    from mcp.server.stdio import stdio_server

    with claimed_stdio() as (stdin, stdout):
        wire = Wire(stdout)
        async with stdio_server(stdin=CheckedLines(stdin, wire), stdout=wire) as (read, write):  # type: ignore[arg-type]
            # MCPServer has no public way to serve streams it is given; its own run_stdio_async
            # does exactly this with the streams of an unchecked stdio_server().
            lowlevel = server._lowlevel_server
            await lowlevel.run(read, write, lowlevel.create_initialization_options())


def serve_stdio(server: Any) -> None:
    import anyio

    anyio.run(serve_stdio_async, server)


# ---- HTTP ------------------------------------------------------------------------------------------


class CheckedBody:
    """ASGI middleware in front of the SDK's streamable HTTP app: a POST body that `check_message`
    refuses (or one over `MAX_MESSAGE_BYTES`) is answered here with 400 and the JSON-RPC error, one
    not all arrived `timeout_s` after the head with 408 (and the connection closed: a client
    trickling its body held the connection for ever); a good one is passed on unchanged."""

    def __init__(self, app: Any, limit: int = MAX_MESSAGE_BYTES, timeout_s: float = 30.0):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        with anyio.move_on_after(self.timeout_s) as deadline:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.limit:
                    await send_error(send, too_long(self.limit), 413)
                    return
        if deadline.cancelled_caught:
            late = _error(None, INVALID_REQUEST, f"Invalid Request: the body did not arrive within {self.timeout_s:g} s "
                                                 "(serve.read_timeout_s); send it at once")
            await send_error(send, late, 408, close=True)
            return
        body = b"".join(chunks)
        error = check_message(body)
        if error is not None:
            await send_error(send, error, 400)
            return
        await self.app(scope, replay_body(body, receive), send)


def refusal(status: int, message: str, code: str = "") -> Any:
    """An ASGI app answering `status` with a JSON-RPC error (id null): `serve.hosts.HostCheck`'s
    refusal for `londinium mcp --http`."""

    async def respond(scope: dict, receive: Any, send: Any) -> None:
        await send_error(send, _error(None, INVALID_REQUEST, message), status)

    return respond


async def send_error(send: Any, error: JSONRPCError, status: int, close: bool = False) -> None:
    """Answer an HTTP request with `status` and the JSON-RPC error as its body."""
    body = dump(error).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *([(b"connection", b"close")] if close else [])]})
    await send({"type": "http.response.body", "body": body})
