"""Server-Sent Events exactly as the openai SDK parses them.

Each event is `data: {json}\\n\\n`; the stream always ends with `data: [DONE]\\n\\n`. Every chunk
carries `id`, `object`, `created` and `model`. A chat choice's first chunk carries the role and is
sent only once its first token exists (an early empty chunk would make every client's
time-to-first-token a lie); the last carries `finish_reason`. The usage chunk (`choices: []`) comes
only when `stream_options.include_usage` asked for it. An error after the 200 goes out as a
`data: {"error": ...}` event, then `[DONE]`. If the client goes away, the request is cancelled,
which frees its KV-cache slots within one engine step.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from londinium.infer.outputs import TextDelta
from londinium.serve.convert import chat_logprobs, completion_logprobs
from londinium.serve.errors import APIError
from londinium.serve.prompts import Prepared
from londinium.serve.sse import DONE, sse
from londinium.serve.tools import ToolCallStream


@dataclass
class Call:
    """One request in flight: what its responses need to say, and its record for the log."""

    id: str
    kind: str  # "completion" or "chat"
    model: str
    prepared: Prepared
    handles: Sequence[Any]  # londinium.infer.scheduler.RequestHandle, one per prompt
    token_bytes: Sequence[bytes]
    record: dict[str, Any]
    echo: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return self.prepared.params[0].n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(h.prompt_ids) for h in self.handles)

    @property
    def object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    @functools.cached_property
    def framing(self) -> tuple[str, str]:
        """What comes before and after the one choice of a chunk event, rendered once per call."""
        marker = "\x00choice\x00"
        head, tail = sse(_chunk(self, [marker])).split(json.dumps(marker), 1)
        return head, tail

    def cancel(self) -> None:
        for h in self.handles:
            h.cancel()


def coalesce(deltas: Sequence[TextDelta]) -> list[TextDelta]:
    """One delta per choice from several of the same prompt, in the order the choices first appear:
    text and token ids (and log-probabilities) concatenated in order, the last one's finish_reason.
    Each delta's text is whole characters with no partial stop string, so their concatenation is too.
    Under load a stream's consumer falls behind the engine; sending what queued up as one chunk
    (as vLLM does) costs one SSE event instead of one per token."""
    if len(deltas) == 1:
        return list(deltas)
    by_choice: dict[int, list[TextDelta]] = {}
    for d in deltas:
        by_choice.setdefault(d.choice, []).append(d)
    out = []
    for group in by_choice.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        lps = [d.logprobs for d in group]
        logprobs = None if all(lp is None for lp in lps) else [e for lp in lps for e in (lp or [])]
        out.append(TextDelta(group[0].index, group[0].choice, "".join(d.text for d in group),
                             [t for d in group for t in d.token_ids], logprobs, group[-1].finish_reason))
    return out


async def merged(handles: Sequence[Any]) -> AsyncIterator[tuple[int, list[TextDelta]]]:
    """(prompt index, delta) from every handle as they arrive; the deltas of a choice that arrived
    together (the consumer was behind) come as one, see `coalesce`."""
    if len(handles) == 1:
        async for batch in handles[0].batches():
            for d in coalesce(batch):
                yield 0, d
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, h: Any) -> None:
        try:
            async for batch in h.batches():
                await queue.put((i, batch, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            await queue.put((i, None, e))
            return
        await queue.put((i, None, None))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        left = len(handles)
        while left:
            i, batch, err = await queue.get()
            if err is not None:
                raise err
            if batch is None:
                left -= 1
                continue
            for d in coalesce(batch):
                yield i, d
    finally:
        for t in tasks:
            t.cancel()


def _chunk(call: Call, choices: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"id": call.id, "object": call.object, "created": call.created, "model": call.model, "choices": choices}
    if call.prepared.include_usage:
        out["usage"] = None  # OpenAI sends it null on every chunk but the last when usage was asked for
    return out


def chunk_event(call: Call, choice: dict[str, Any]) -> str:
    """`sse(_chunk(call, [choice]))`, the same bytes, but only the choice is serialised: the rest of
    the chunk is the same for every chunk of the call and rendered once (a chunk per token per stream
    is the server's hottest path)."""
    return f"{call.framing[0]}{json.dumps(choice, ensure_ascii=False, separators=(',', ':'))}{call.framing[1]}"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def events(call: Call, error_of: Any) -> AsyncIterator[str]:
    """The SSE body of a streamed completion or chat completion. `error_of(exc)` turns an engine
    exception into the APIError to report."""
    started: set[int] = set()
    completion_tokens = 0
    finish: dict[int, str] = {}
    offsets: dict[int, int] = {}
    record = call.record
    # Tool calls (`serve/tools.py`): per choice, its calls as they stream, or that it is writing text.
    tools = call.prepared.tools if call.prepared.tools and call.prepared.tools.calls_tools else None
    tool_streams: dict[int, ToolCallStream] = {}
    free_text: set[int] = set()
    choices = len(call.handles) * call.n
    last: list[str] = []  # the events of the delta that ended the last choice: sent with the end of the stream
    try:
        try:
            async for p, d in merged(call.handles):
                out: list[str] = []  # this delta's events, written to the socket as one
                index = p * call.n + d.choice
                completion_tokens += len(d.token_ids)
                if record.get("ttft_s") is None and d.token_ids:
                    record["ttft_s"] = time.perf_counter() - call.arrived
                if d.finish_reason == "cancelled":
                    raise APIError(503, "the server is shutting down and cancelled this request; retry it",
                                   code="shutting_down")
                first = index not in started
                started.add(index)
                if call.kind == "chat" and tools is not None and index not in free_text:
                    calls = tool_streams.get(index)
                    if calls is None and (tools.choice != "auto" or d.text.startswith("<")):
                        calls = tool_streams[index] = ToolCallStream()  # the grammar allows "<" only as a call
                    elif calls is None and d.text:
                        free_text.add(index)
                if call.kind == "chat" and index in tool_streams:
                    calls = tool_streams[index]
                    fragments = calls.push(d.text)
                    if first or fragments or d.logprobs:
                        delta = {"role": "assistant", "content": None} if first else {}
                        if fragments:
                            delta["tool_calls"] = fragments
                        lp = chat_logprobs(d.logprobs, call.token_bytes).model_dump() if d.logprobs else None
                        out.append(chunk_event(call, {"index": index, "delta": delta, "logprobs": lp, "finish_reason": None}))
                    if d.finish_reason:
                        whole = d.finish_reason == "stop" and calls.calls and not calls.in_arguments and not calls.buffer
                        finish[index] = "tool_calls" if whole else d.finish_reason
                        out.append(chunk_event(call, {"index": index, "delta": {}, "logprobs": None, "finish_reason": finish[index]}))
                elif call.kind == "chat":
                    if first or d.text or d.logprobs:
                        delta = {"role": "assistant", "content": d.text} if first else {"content": d.text}
                        lp = chat_logprobs(d.logprobs, call.token_bytes).model_dump() if d.logprobs else None
                        out.append(chunk_event(call, {"index": index, "delta": delta, "logprobs": lp, "finish_reason": None}))
                    if d.finish_reason:
                        finish[index] = d.finish_reason
                        out.append(chunk_event(call, {"index": index, "delta": {}, "logprobs": None, "finish_reason": d.finish_reason}))
                else:
                    text = (call.prepared.texts[p] if call.echo and first else "") + d.text
                    lp = None
                    if d.logprobs:
                        lp = completion_logprobs(d.logprobs, offsets.get(index, 0)).model_dump()
                    offsets[index] = offsets.get(index, 0) + len(text)
                    if first or text or lp or d.finish_reason:
                        out.append(chunk_event(call, {"index": index, "text": text, "logprobs": lp, "finish_reason": d.finish_reason}))
                    if d.finish_reason:
                        finish[index] = d.finish_reason
                if len(finish) == choices:
                    last = out  # nothing follows but the end: one write for both (each write is a syscall and h11's framing)
                elif out:
                    yield "".join(out)
            if call.prepared.include_usage:
                last.append(sse({**_chunk(call, []), "usage": _usage(call.prompt_tokens, completion_tokens)}))
            record["status"] = 200
        except Exception as e:  # after the 200 an error can only be an event
            err = e if isinstance(e, APIError) else error_of(e)
            record["status"], record["error"] = err.status, err.message
            last.append(sse(err.body()))
        yield "".join(last) + DONE
    except (asyncio.CancelledError, GeneratorExit):
        record["status"], record["error"] = 499, "client disconnected"
        raise
    finally:
        call.cancel()  # no-op for finished requests; frees the slots of a dropped stream
        record.update(prompt_tokens=call.prompt_tokens, completion_tokens=completion_tokens,
                      finish_reasons=[finish.get(i) for i in range(len(call.handles) * call.n)])
