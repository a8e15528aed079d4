"""The `response_schema` step: an answer to a `response_format` request is checked against what it
asked for before the client sees it, repaired by one retry, else refused with a 502.

- **What is checked**: chat and completion requests with `response_format` `{"type": "json_schema",
  "json_schema": {"schema": ...}}` (every choice's content, or text, must parse as JSON and validate against the schema, with
  the reference `jsonschema` validator; a schema-less json_schema means any JSON object) or
  `{"type": "json_object"}` (a JSON object). A backend that decodes under the schema (londinium serve,
  vLLM) passes at once; one that only tries (a hosted API without strict mode, a small model told in
  the prompt) is caught here.
- **Repair**: one retry, the request with the invalid answer and the validator's first complaint
  appended (an assistant turn, then a user turn asking for JSON that matches; for a completion, the
  answer and the complaint appended to its prompt); its answer replaces the first. A completion with a
  list of prompts or token ids is checked but not repaired (there is no one text to append to). Both calls' tokens are in the answer's `usage` and the ledger. Still invalid: 502
  `invalid_response_schema`, naming where the answer broke the schema (the answer itself is not quoted).
- **Streams** asking for a schema are read to their end before the first chunk goes out (a JSON
  value can only be checked whole, and a client that validates it has to wait for the end anyway),
  then replayed as the stream they were.

**Every decision** is `outcome.response_schema` (valid, repaired, invalid) in the ledger and the request
log, and `londinium_gateway_response_schema_total{model, decision}` in /metrics. Put the step inside
the caches (after them in the chain), so they keep only answers that passed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from prometheus_client import Counter

from londinium.gateway.chain import Exchange, Next, Reply
from londinium.serve.errors import APIError

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def requested_schema(ex: Exchange) -> dict[str, Any] | None:
    """The JSON Schema a request's response_format asks its answer to match; None when it asks none."""
    fmt = ex.body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return ANY_OBJECT
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else ANY_OBJECT
    return None


def problem(validator: Draft202012Validator, texts: list[str]) -> str | None:
    """Where the first choice that fails breaks the schema (no value quoted), or None when all pass."""
    for i, text in enumerate(texts):
        try:
            value = json.loads(text)
        except ValueError as e:
            return f"choice {i} is not JSON ({type(e).__name__} at character {getattr(e, 'pos', '?')})"
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
            return f"choice {i} at {where}: fails '{error.validator}' ({error.validator_value!r})"[:300]
    return None


class ResponseSchema:
    name = "response_schema"

    def __init__(self, gateway: Any):
        self.routes = {r.alias: r for r in gateway.settings.routes}
        self.decisions = Counter("londinium_gateway_response_schema", "Checks of answers against the response_format's JSON schema, "
                                 "by model alias and decision (valid, repaired, invalid).", ["model", "decision"],
                                 registry=gateway.telemetry.metrics.registry)

    def _decide(self, ex: Exchange, decision: str) -> None:
        ex.outcome["response_schema"] = decision
        self.decisions.labels(ex.model if ex.model in self.routes else "-", decision).inc()

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        route = self.routes.get(ex.model)
        schema = requested_schema(ex) if route is None or route.response_schema else None
        if schema is None:
            return await call_next(ex)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise APIError(400, f"response_format.json_schema.schema is not a valid JSON Schema: {e.message[:200]}",
                           param="response_format", code="invalid_json_schema") from None
        validator = Draft202012Validator(schema)
        first = await _whole(await call_next(ex))
        if first.reply.status != 200 or (found := problem(validator, first.texts)) is None:
            if first.reply.status == 200:
                self._decide(ex, "valid")
            return first.reply
        asked = ex.body
        ex.body = _repair_request(ex.endpoint, asked, first.texts[0] if first.texts else "", found)
        if ex.body is None:  # nothing to append the complaint to
            ex.body = asked
            self._decide(ex, "invalid")
            raise APIError(502, f"the backend's answer does not match the response_format's JSON schema: {found} (a list of "
                                "prompts is not repaired)", param="response_format", code="invalid_response_schema")
        try:
            again = await _whole(await call_next(ex))
        finally:
            ex.body = asked  # the ledger, the log and the caches see the client's request
        usage = _add(first.usage, again.usage)
        if again.reply.status == 200 and (found := problem(validator, again.texts)) is None:
            self._decide(ex, "repaired")
            return again.with_usage(usage)
        self._decide(ex, "invalid")
        if usage is not None:
            ex.usage = usage  # both calls are paid for, though the client gets an error
        raise APIError(502, f"the backend's answer does not match the response_format's JSON schema after one repair "
                            f"attempt: {found or 'the repair attempt failed'}", param="response_format", code="invalid_response_schema")


def _repair_request(endpoint: str, asked: dict[str, Any], answer: str, found: str) -> dict[str, Any] | None:
    """The request again with the invalid answer and the complaint appended; None for a completion whose
    prompt is not one string."""
    complaint = f"That answer does not match the JSON schema of response_format: {found}. Answer again with only JSON that matches the schema."
    body = copy.deepcopy(asked)
    if endpoint == "chat":
        body["messages"] = [*asked.get("messages", []), {"role": "assistant", "content": answer}, {"role": "user", "content": complaint}]
        return body
    if not isinstance(asked.get("prompt"), str):
        return None
    body["prompt"] = f"{asked['prompt']}{answer}\n\n{complaint}\n"
    return body


@dataclass
class Whole:
    """An answer read whole: the reply (a stream's chunks replayable), each choice's text, the chunks."""

    reply: Reply
    texts: list[str]
    chunks: list[dict[str, Any]] | None = None

    @property
    def usage(self) -> Any:
        if self.chunks is None:
            return (self.reply.body or {}).get("usage")
        return next((c["usage"] for c in reversed(self.chunks) if c.get("usage") is not None), None)

    def with_usage(self, usage: dict[str, int] | None) -> Reply:
        """The reply, its usage (the body's, or a stream's usage chunk) replaced by `usage`."""
        if usage is None:
            return self.reply
        if self.chunks is None:
            self.reply.body = {**(self.reply.body or {}), "usage": {**((self.reply.body or {}).get("usage") or {}), **usage}}
        else:
            for i, chunk in enumerate(self.chunks):
                if chunk.get("usage") is not None:
                    self.chunks[i] = {**chunk, "usage": {**chunk["usage"], **usage}}
        return self.reply


async def _whole(reply: Reply) -> Whole:
    """The reply with a stream read to its end (then replayable), and each choice's text in index order."""
    if reply.events is None:
        choices = (reply.body or {}).get("choices") or []
        return Whole(reply, [_text(c, "message") for c in choices if isinstance(c, dict)])
    chunks = [chunk async for chunk in reply.events]
    texts: dict[int, str] = {}
    for chunk in chunks:
        for c in chunk.get("choices") or []:
            if isinstance(c, dict):
                texts[c.get("index", 0)] = texts.get(c.get("index", 0), "") + _text(c, "delta")
    reply.events = _replay(chunks)
    return Whole(reply, [texts[i] for i in sorted(texts)], chunks)


def _text(choice: dict[str, Any], part: str) -> str:
    """A choice's text: its message's (a stream chunk's delta's) content for chat, its text for completions."""
    inner = choice.get(part)
    if isinstance(inner, dict):
        return str(inner.get("content") or "")
    return str(choice.get("text") or "")


async def _replay(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:  # read when the client reads: with_usage may still replace a chunk before
        yield chunk


def _add(a: Any, b: Any) -> dict[str, int] | None:
    """Two usage objects summed (the first call's and the repair's); the second alone if the first has none."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b if isinstance(b, dict) else None
    return {k: int(a.get(k) or 0) + int(b.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
