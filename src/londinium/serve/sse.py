"""Server-Sent Events framing as the openai SDK parses it: `data: {json}` and a blank line, ending with
`data: [DONE]`. Shared by `londinium serve` (streaming.py) and the gateway, torch-free.

`EventStream` sends such a stream over ASGI with as few writes as it can: Starlette's
`StreamingResponse` starts a task group per response (to notice a client that goes away) and ends
every stream with an empty body message, each a write through h11's framing and a syscall; here
a plain asyncio task watches for the disconnect, and the chunk that ends with `[DONE]` is the last
message of the response.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.responses import StreamingResponse

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class EventStream(StreamingResponse):
    """An SSE response of `events` (strings of whole events; the one ending with `[DONE]` is the
    last). When the client goes away the iteration is cancelled (so the events' `finally` frees what
    the request holds), as Starlette's StreamingResponse does."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            end = False
            async for chunk in self.body_iterator:  # to its end, so that the events' `finally` runs now
                end = chunk.endswith(DONE)
                await send({"type": "http.response.body", "body": chunk.encode(), "more_body": not end})
            if not end:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:  # cancelled from outside (the server stopping): not ours to absorb
                raise
            streaming.uncancel()
        finally:
            watcher.cancel()
