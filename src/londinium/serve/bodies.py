"""The bounds on a request body that every HTTP surface of londinium mounts (`londinium serve`, the
gateway): its size and the time it may take to arrive. Kept apart from the server's app so that a
surface without a model (the gateway) mounts it without importing torch."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from londinium.serve.errors import APIError


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes (by Content-Length, or as it
    arrives); 408 for one not all arrived `timeout_s` after the app began to read it. A client that
    trickles its upload would otherwise hold its connection (and a file descriptor) for ever; the
    408 closes the connection, as the rest of the body is never read."""

    def __init__(self, app: Any, limit: int, timeout_s: float, setting: str = "serve"):
        self.app, self.limit, self.timeout_s, self.setting = app, limit, timeout_s, setting

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(int(length))(scope, receive, send)
        seen, deadline, complete = 0, None, False
        clock = asyncio.get_running_loop().time

        async def counted() -> dict:
            nonlocal seen, deadline, complete
            if complete:  # later calls wait for a disconnect while a response streams: no deadline
                return await receive()
            deadline = deadline or clock() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - clock()))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout_s:g} s "
                                         f"({self.setting}.read_timeout_s); send it at once", headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._message(seen))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int) -> str:
        return (f"the request body is {size:,} bytes, more than this server's limit of {self.limit:,} "
                f"({self.setting}.max_body_mb)")

    def _too_large(self, size: int) -> JSONResponse:
        return APIError(413, self._message(size), code="request_too_large").response()


def replay_body(body: bytes, receive: Callable) -> Callable:
    """An ASGI `receive` that gives an app `body` (already read whole by a middleware) as one message,
    then hands on to the real `receive` (the disconnect, when it comes)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
