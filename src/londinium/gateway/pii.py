"""The `pii` step: the input guardrail for personal data. Each request's text (chat messages' content
and earlier tool calls' arguments, a completion's prompt) goes through Presidio (gateway/pii_detect.py); what it finds gets its entity's
action:

- **mask**: the value becomes a placeholder (`<EMAIL_ADDRESS_1>`, the same value the same placeholder
  across the request), so the backend sees placeholders only; the answer's placeholders are turned
  back into the values before the client sees them, a stream chunk by chunk (gateway/pii_mask.py).
- **block**: 400 `pii_blocked`, naming the entity types found, never a value.
- **log**: the text passes unchanged; the finding is counted.
- **off**: not looked for.

Actions come from `[pii] actions`, overridden by the route's `pii_actions`, overridden by the
virtual key's entry in `[pii] keys`; a route with `pii = false` or a key in `bypass_keys` skips the
step.

**Every decision** is `outcome.pii` in the ledger and the request log (clean, masked, logged,
blocked, bypass) with `outcome.pii_found` (`EMAIL_ADDRESS=2,PHONE_NUMBER=1`: types and counts, no
value), and `londinium_gateway_pii_total{model, decision}` and `londinium_gateway_pii_entities_total
{model, entity, action}` in /metrics. No value reaches a log: the request log's prompt (with
gateway.log_prompts) is the request with every finding replaced by a placeholder, whatever its action
(`Exchange.log_body`).
"""

from __future__ import annotations

import copy
from collections import Counter as Tally
from typing import Any, AsyncIterator

from prometheus_client import Counter

from londinium.gateway.chain import Exchange, Next, Reply
from londinium.gateway.pii_detect import Detector, Span
from londinium.gateway.pii_mask import Masking, StreamUnmasker
from londinium.serve.errors import APIError


def arguments(calls: Any) -> list[tuple[Any, str]]:
    """(function, "arguments") of each tool call of a message or a stream's delta whose arguments are text."""
    if not isinstance(calls, list):
        return []
    functions = [c.get("function") for c in calls if isinstance(c, dict)]
    return [(f, "arguments") for f in functions if isinstance(f, dict) and isinstance(f.get("arguments"), str)]


def _text_slots(body: dict[str, Any], endpoint: str) -> list[tuple[Any, Any]]:
    """(container, key) of every client text the backend reads: message contents (and their text
    parts) and the arguments of earlier tool calls for chat, the prompt (or each prompt of a list)
    for completions."""
    slots: list[tuple[Any, Any]] = []
    if endpoint == "chat":
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                slots.append((message, "content"))
            elif isinstance(content, list):
                slots += [(part, "text") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
            slots += arguments(message.get("tool_calls"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            slots.append((body, "prompt"))
        elif isinstance(prompt, list):
            slots += [(prompt, i) for i, p in enumerate(prompt) if isinstance(p, str)]
    return slots


class Pii:
    name = "pii"

    def __init__(self, gateway: Any):
        s = gateway.settings
        self.cfg = s.pii
        self.routes = {r.alias: r for r in s.routes}
        tables = [self.cfg.actions, *(r.pii_actions for r in s.routes), *self.cfg.keys.values()]
        entities = sorted({e for t in tables for e, action in t.items() if action != "off"})
        self.detector = Detector(entities, language=self.cfg.language, score_threshold=self.cfg.score_threshold,
                                 patterns=self.cfg.patterns, deny_lists=self.cfg.deny_lists, ner_model=self.cfg.ner_model,
                                 where=f"{s.source}: pii")
        registry = gateway.telemetry.metrics.registry
        self.decisions = Counter("londinium_gateway_pii", "PII guardrail decisions per request, by model alias and decision "
                                 "(clean, masked, logged, blocked, bypass).", ["model", "decision"], registry=registry)
        self.entities = Counter("londinium_gateway_pii_entities", "PII findings, by model alias, entity type and the action taken.",
                                ["model", "entity", "action"], registry=registry)

    def actions(self, ex: Exchange) -> dict[str, str] | None:
        """Entity -> action for this request; None when it skips the step."""
        route = self.routes.get(ex.model)
        key = ex.key.name if ex.key is not None else None
        if (route is not None and not route.pii) or (key is not None and key in self.cfg.bypass_keys):
            return None
        actions = dict(self.cfg.actions)
        if route is not None:
            actions.update(route.pii_actions)
        if key is not None:
            actions.update(self.cfg.keys.get(key, {}))
        return {e: a for e, a in actions.items() if a != "off"}

    def _decide(self, ex: Exchange, decision: str, found: Tally | None = None) -> None:
        model = ex.model if ex.model in self.routes else "-"  # bounded labels: configured aliases only
        ex.outcome["pii"] = decision
        if found:
            ex.outcome["pii_found"] = ",".join(f"{e}={n}" for e, n in sorted(found.items()))
        self.decisions.labels(model, decision).inc()

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        actions = self.actions(ex)
        if actions is None:
            self._decide(ex, "bypass")
            return await call_next(ex)
        slots = _text_slots(ex.body, ex.endpoint)
        texts = [slot[k] for slot, k in slots]
        findings = [[s for s in self.detector.find(t) if s.entity in actions] for t in texts]
        found = Tally(s.entity for spans in findings for s in spans)
        if not found:
            self._decide(ex, "clean")
            return await call_next(ex)
        model = ex.model if ex.model in self.routes else "-"
        for entity, n in found.items():
            self.entities.labels(model, entity, actions[entity]).inc(n)
        ex.log_body = _redacted(ex.body, ex.endpoint, findings)
        blocked = sorted(e for e in found if actions[e] == "block")
        if blocked:
            self._decide(ex, "blocked", found)
            raise APIError(400, f"the request contains personal data this gateway does not pass on: {', '.join(blocked)}; "
                                "remove it and send again", param="messages" if ex.endpoint == "chat" else "prompt", code="pii_blocked")
        if not any(actions[e] == "mask" for e in found):
            self._decide(ex, "logged", found)
            return await call_next(ex)
        masking = Masking(texts)
        ex.body = copy.deepcopy(ex.body)  # the client's request object stays as it came
        for (container, k), text, spans in zip(_text_slots(ex.body, ex.endpoint), texts, findings):
            container[k] = masking.mask(text, [(s.entity, s.start, s.end) for s in spans if actions[s.entity] == "mask"])
        self._decide(ex, "masked", found)
        reply = await call_next(ex)
        if reply.events is not None:
            reply.events = _unmask_stream(reply.events, masking, ex.endpoint == "chat")
        elif reply.body is not None:
            reply.body = _unmask_body(reply.body, masking)
        return reply


def _redacted(body: dict[str, Any], endpoint: str, findings: list[list[Span]]) -> dict[str, Any]:
    """The request as a log may show it: every finding, whatever its action, a placeholder."""
    out = copy.deepcopy(body)
    slots = _text_slots(out, endpoint)
    masking = Masking([c[k] for c, k in slots])
    for (container, k), spans in zip(slots, findings):
        container[k] = masking.mask(container[k], [(s.entity, s.start, s.end) for s in spans])
    return out


def _unmask_body(body: dict[str, Any], masking: Masking) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] = masking.unmask(message["content"])
        for function, k in arguments(message.get("tool_calls") if isinstance(message, dict) else None):
            function[k] = masking.unmask(function[k])  # the model may pass a placeholder on to a tool
        if isinstance(choice.get("text"), str):
            choice["text"] = masking.unmask(choice["text"])
    return body


def text_slot(choice: Any, part: str = "delta") -> tuple[Any, str] | None:
    """(holder, key) of a choice's text: `part`.content for chat ("delta" in a stream's chunk, "message"
    in a JSON answer), text for completions."""
    if not isinstance(choice, dict):
        return None
    inner = choice.get(part)
    if isinstance(inner, dict) and isinstance(inner.get("content"), str):
        return inner, "content"
    if isinstance(choice.get("text"), str):
        return choice, "text"
    return None


async def _unmask_stream(events: AsyncIterator[dict[str, Any]], masking: Masking, chat: bool) -> AsyncIterator[dict[str, Any]]:
    """Each choice's text, and each of its tool calls' arguments, unmasked as they pass, holding back only
    a possible placeholder's start; what a choice holds goes out with its finish_reason, or in one last
    chunk if the stream ends first."""
    unmaskers: dict[int, StreamUnmasker] = {}
    calls: dict[int, dict[int, StreamUnmasker]] = {}  # choice index -> tool call index -> its arguments' unmasker
    last: dict[str, Any] | None = None
    async for chunk in events:
        chunk = copy.deepcopy(chunk)  # chunks may be shared (a cached stream's are); never rewrite them in place
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            unmasker = unmaskers.setdefault(index, masking.stream())
            where = text_slot(choice)
            if where is not None:
                holder, k = where
                holder[k] = unmasker.feed(holder[k])
            delta = choice.get("delta")
            for call in (delta.get("tool_calls") if isinstance(delta, dict) else None) or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict) and isinstance(call["function"].get("arguments"), str):
                    unmasker_of_call = calls.setdefault(index, {}).setdefault(call.get("index", 0), masking.stream())
                    call["function"]["arguments"] = unmasker_of_call.feed(call["function"]["arguments"])
            if choice.get("finish_reason"):
                if unmasker.held:
                    rest = unmasker.flush()
                    if where is not None:
                        where[0][where[1]] += rest
                    else:
                        choice.setdefault("delta", {})["content"] = rest
                held = _held_arguments(calls.pop(index, {}))
                if held:
                    choice.setdefault("delta", {}).setdefault("tool_calls", []).extend(held)
        last = chunk
        yield chunk
    for index in sorted(set(unmaskers) | set(calls)):
        unmasker, held = unmaskers.get(index), _held_arguments(calls.get(index, {}))
        if last is None or not ((unmasker is not None and unmasker.held) or held):
            continue
        rest = unmasker.flush() if unmasker is not None else ""
        choice = {"index": index, "delta": {"content": rest, **({"tool_calls": held} if held else {})}} if chat else {"index": index, "text": rest}
        yield {**{k: v for k, v in last.items() if k not in ("choices", "usage")}, "choices": [{**choice, "finish_reason": None}]}


def _held_arguments(calls: dict[int, StreamUnmasker]) -> list[dict[str, Any]]:
    """The arguments' fragments still held back, as a delta's tool_calls (each by its index)."""
    return [{"index": i, "function": {"arguments": u.flush()}} for i, u in sorted(calls.items()) if u.held]
