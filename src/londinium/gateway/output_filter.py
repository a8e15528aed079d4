"""The `output_filter` step: the output guardrail. Every answer's text (a chat message's content and its
tool calls' arguments, a completion's text; streams chunk by chunk) is scanned for deny-listed words, the operator's regular
expressions and personal data the model may have memorised (Presidio, as the `pii` step), and each
finding gets its rule's action (gateway/output_scan.py):

- **mask**: the finding becomes `[NAME]` (`[EMAIL_ADDRESS]`, `[SECRET]`);
- **block**: the text ends before it, and the choice's `finish_reason` is "content_filter". In a tool
  call's arguments too: the arguments end before the finding (no longer valid JSON), and the choice's
  `finish_reason` says not to run the call; nothing of the choice follows.

A stream holds back only what a match could still need (output_scan.py), so it stays a stream. Put the
step inside `pii` (after it in the chain): it then sees the backend's text before `pii` unmasks the
client's own values into it, so those come back as the client sent them. `[[routes]] output_filter =
false` turns it off for a route.

**Every decision** is `outcome.output_filter` (clean, masked, blocked) with `outcome.output_found`
(names and counts, no value) in the ledger and the request log, and
`londinium_gateway_output_filter_total{model, decision}` and
`londinium_gateway_output_findings_total{model, rule, action}` in /metrics.
"""

from __future__ import annotations

import copy
from collections import Counter as Tally
from typing import Any, AsyncIterator

from prometheus_client import Counter

from londinium.gateway.chain import Exchange, Next, Reply
from londinium.gateway.output_scan import Rules, Scanner
from londinium.gateway.pii import arguments, text_slot


class OutputFilter:
    name = "output_filter"

    def __init__(self, gateway: Any):
        s = gateway.settings
        cfg = s.output_filter
        own = set(cfg.patterns) | set(cfg.deny_lists)
        entities = sorted(e for e in cfg.actions if e not in own)
        detector = None
        if entities:  # personal data: Presidio, imported only then
            from londinium.gateway.pii_detect import Detector

            detector = Detector(entities, language=s.pii.language, score_threshold=s.pii.score_threshold,
                                ner_model=s.pii.ner_model, where=f"{s.source}: output_filter")
        self.rules = Rules.build(cfg.patterns, cfg.deny_lists, dict(cfg.actions), detector, cfg.pii_hold_chars, cfg.max_hold_chars)
        self.routes = {r.alias: r for r in s.routes}
        registry = gateway.telemetry.metrics.registry
        self.decisions = Counter("londinium_gateway_output_filter", "Output guardrail decisions per answer, by model alias and "
                                 "decision (clean, masked, blocked).", ["model", "decision"], registry=registry)
        self.findings = Counter("londinium_gateway_output_findings", "Output guardrail findings, by model alias, rule and action.",
                                ["model", "rule", "action"], registry=registry)

    def _decide(self, ex: Exchange, found: Tally[str], blocked: bool) -> None:
        model = ex.model if ex.model in self.routes else "-"  # bounded labels: configured aliases and rule names only
        decision = "blocked" if blocked else "masked" if found else "clean"
        ex.outcome["output_filter"] = decision
        if found:
            ex.outcome["output_found"] = ",".join(f"{n}={c}" for n, c in sorted(found.items()))
        for name, n in found.items():
            self.findings.labels(model, name, self.rules.actions.get(name, "mask")).inc(n)
        self.decisions.labels(model, decision).inc()

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        route = self.routes.get(ex.model)
        reply = await call_next(ex)
        if route is not None and not route.output_filter:
            return reply
        if reply.events is not None:
            reply.events = self._stream(ex, reply.events)
        elif reply.status == 200 and reply.body is not None:
            reply.body = self._body(ex, reply.body)
        return reply

    def _body(self, ex: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)  # a cached answer's body may be shared
        found: Tally[str] = Tally()
        blocked = False
        for choice in body.get("choices") or []:
            where = text_slot(choice, "message")
            message = choice.get("message") if isinstance(choice, dict) else None
            slots = [*([where] if where is not None else []),
                     *arguments(message.get("tool_calls") if isinstance(message, dict) else None)]
            for holder, k in slots:
                scanner = Scanner(self.rules)
                head, stop = scanner.feed(holder[k])
                tail, stop = (("", stop) if stop else scanner.flush())
                holder[k] = head + tail
                found += scanner.found
                if stop:
                    choice["finish_reason"], blocked = "content_filter", True
                    break
        self._decide(ex, found, blocked)
        return body

    async def _stream(self, ex: Exchange, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Each choice's text scanned as it passes; a choice's held tail goes out with its finish_reason,
        or in one last chunk if the stream ends first; a blocked choice sends nothing after the chunk
        that ended it with "content_filter"."""
        scanners: dict[int, Scanner] = {}
        calls: dict[int, dict[int, Scanner]] = {}  # choice index -> tool call index -> its arguments' scanner
        last: dict[str, Any] | None = None
        try:
            async for chunk in events:
                chunk = copy.deepcopy(chunk)  # chunks may be shared (a cached stream's are)
                choices = []
                for choice in chunk.get("choices") or []:
                    index = choice.get("index", 0) if isinstance(choice, dict) else 0
                    scanner = scanners.setdefault(index, Scanner(self.rules))
                    mine = calls.setdefault(index, {})
                    if scanner.blocked or any(s.blocked for s in mine.values()):
                        continue
                    if isinstance(choice, dict):
                        self._scan_choice(choice, scanner)
                        if not scanner.blocked:
                            self._scan_calls(choice, mine, self.rules)
                    choices.append(choice)
                if chunk.get("choices") and not choices and chunk.get("usage") is None:
                    continue  # only blocked choices' text was in it
                if "choices" in chunk:
                    chunk["choices"] = choices
                last = chunk
                yield chunk
            for index, scanner in scanners.items():
                mine = calls.get(index, {})
                if last is None or scanner.blocked or any(s.blocked for s in mine.values()) or not (scanner.held or any(s.held for s in mine.values())):
                    continue
                rest, stop = scanner.flush()
                piece = {"delta": {"content": rest}} if ex.endpoint == "chat" else {"text": rest}
                if not stop and mine:
                    held, stop = self._flush_calls(mine)
                    piece["delta"]["tool_calls"] = held
                yield {**{k: v for k, v in last.items() if k not in ("choices", "usage")},
                       "choices": [{"index": index, **piece, "finish_reason": "content_filter" if stop else None}]}
        finally:
            every = [*scanners.values(), *(s for mine in calls.values() for s in mine.values())]
            self._decide(ex, sum((s.found for s in every), Tally()), any(s.blocked for s in every))

    @staticmethod
    def _scan_calls(choice: dict[str, Any], scanners: dict[int, Scanner], rules: Rules) -> None:
        """A chunk's tool-call argument fragments scanned, each call's on its own; what they hold goes out
        with the choice's finish_reason; a block ends the choice with "content_filter"."""
        delta = choice.get("delta")
        stop = False
        for call in (delta.get("tool_calls") if isinstance(delta, dict) else None) or []:
            for holder, k in arguments([call]):
                scanner = scanners.setdefault(call.get("index", 0), Scanner(rules))
                holder[k], stop = scanner.feed(holder[k]) if not stop else ("", True)
        if not stop and choice.get("finish_reason") and any(s.held for s in scanners.values()):
            held, stop = OutputFilter._flush_calls(scanners)
            choice.setdefault("delta", {}).setdefault("tool_calls", []).extend(held)
        if stop:
            choice["finish_reason"] = "content_filter"

    @staticmethod
    def _flush_calls(scanners: dict[int, Scanner]) -> tuple[list[dict[str, Any]], bool]:
        """The held tails of the calls' arguments as a delta's tool_calls, and whether one was blocked."""
        held = []
        for i, scanner in sorted(scanners.items()):
            if scanner.held:
                rest, stop = scanner.flush()
                held.append({"index": i, "function": {"arguments": rest}})
                if stop:
                    return held, True
        return held, False

    @staticmethod
    def _scan_choice(choice: dict[str, Any], scanner: Scanner) -> None:
        where = text_slot(choice)
        out, stop = scanner.feed(where[0][where[1]]) if where is not None else ("", False)
        if not stop and choice.get("finish_reason"):
            rest, stop = scanner.flush()
            out += rest
        if where is not None:
            where[0][where[1]] = out
        elif out:
            choice.setdefault("delta", {})["content"] = out
        if stop:
            choice["finish_reason"] = "content_filter"

