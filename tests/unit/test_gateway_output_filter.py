"""The output guardrail alone (gateway/output_filter.py, output_scan.py): the `output_filter` step after the
real `route` and `pii` steps, over an upstream that answers a fixed text, as JSON or as a stream cut into
pieces of every size. Masking and blocking by deny-list, regex and personal data (Presidio), what a
stream holds back, the client's own masked values coming back untouched, and the counts."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from londinium.errors import ConfigError
from londinium.gateway.chain import Chain, Exchange, Reply
from londinium.gateway.output_scan import Rules, Scanner
from londinium.gateway.runtime import Gateway
from londinium.gateway.settings import parse_settings

needs_presidio = pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is None, reason="needs the guardrails extra")
LEAK = "Write to anne.hart@example.com, order ORD-123456; the plan is Falconry, not Falcon. Card 4111 1111 1111 1111 ends it."


class Fixed:
    """Answers `text` (or, with echo, the request's last message), as JSON or in pieces of `size` characters."""

    name = "upstream"

    def __init__(self, text: str = LEAK, size: int = 0, echo: bool = False):
        self.text, self.size, self.echo = text, size, echo

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        text = ex.body["messages"][-1]["content"] if self.echo else self.text
        if not ex.stream:
            return Reply(200, body={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        return Reply(200, events=self._events(text))

    async def _events(self, text: str):
        size = self.size or len(text)
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        for i, piece in enumerate(pieces):
            yield {"id": "s", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if i == len(pieces) - 1 else None}]}
        yield {"id": "s", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}


def settings(tmp_path, actions: dict, pii: dict | None = None) -> dict:
    return {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "pii", "output_filter", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
            "routes": [{"alias": "m", "backends": ["a"]}, {"alias": "raw", "backends": ["a"], "output_filter": False}],
            "pii": {"actions": pii or {"EMAIL_ADDRESS": "off", "PHONE_NUMBER": "off", "CREDIT_CARD": "off", "IBAN_CODE": "off", "IP_ADDRESS": "off"}},
            "output_filter": {"actions": actions, "patterns": {"ORDER": "ORD-[0-9]{6}"}, "deny_lists": {"SECRET": ["Falcon", "Osprey"]}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway (Presidio's set-up takes seconds): emails masked on the way in and in answers, cards blocked in answers."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        pytest.skip("needs the guardrails extra")
    tmp = tmp_path_factory.mktemp("out")
    gw = Gateway(parse_settings(settings(tmp, {"ORDER": "mask", "SECRET": "mask", "EMAIL_ADDRESS": "mask", "CREDIT_CARD": "block"},
                                         pii={"EMAIL_ADDRESS": "mask"}), "gw.toml"))
    yield gw
    asyncio.run(gw.close())


def run(gw: Gateway, upstream, stream: bool, text: str = "Tell me", model: str = "m") -> tuple[str, list[str], dict]:
    route, pii, out, _ = gw.chain.steps
    ex = Exchange("chat", {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream})
    reply = asyncio.run(Chain([route, pii, out, upstream])(ex))
    if not stream:
        choice = reply.body["choices"][0]
        return choice["message"]["content"], [choice["finish_reason"]], ex.outcome

    async def read():
        return [c async for c in reply.events]

    chunks = asyncio.run(read())
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    return text, [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]], ex.outcome


MASKED = "Write to [EMAIL_ADDRESS], order [ORDER]; the plan is Falconry, not [SECRET]. Card "


@needs_presidio
@pytest.mark.parametrize("size", [0, 1, 5, 17])
def test_an_answer_is_masked_and_cut_at_a_blocked_finding_the_same_in_a_stream_of_any_piece_size(gateway, size) -> None:
    for stream in ([False, True] if size == 0 else [True]):
        text, finish, outcome = run(gateway, Fixed(size=size), stream)
        assert text == MASKED and finish == ["content_filter"]
        assert outcome["output_filter"] == "blocked"
        assert outcome["output_found"] == "CREDIT_CARD=1,EMAIL_ADDRESS=1,ORDER=1,SECRET=1"
    assert "4111" not in text and "anne.hart" not in text


@needs_presidio
def test_the_clients_own_masked_value_comes_back_and_a_route_may_switch_the_filter_off(gateway) -> None:
    mine = "Answer anne.hart@example.com please"
    for stream in (False, True):
        text, _, outcome = run(gateway, Fixed(echo=True, size=4), stream, text=mine)
        assert text == mine and outcome["output_filter"] == "clean" and outcome["pii"] == "masked"
    text, finish, outcome = run(gateway, Fixed(), False, model="raw")
    assert text == LEAK and "output_filter" not in outcome
    metrics = gateway.telemetry.metrics.registry.get_sample_value
    assert metrics("londinium_gateway_output_findings_total", {"model": "m", "rule": "CREDIT_CARD", "action": "block"}) >= 1


class Calling:
    """Answers with one tool call whose arguments are `arguments`, as JSON or as a stream of `size`-character fragments."""

    name = "upstream"

    def __init__(self, arguments: str, size: int = 0):
        self.arguments, self.size = arguments, size

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        call = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": self.arguments}}
        if not ex.stream:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return Reply(200, body={"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        return Reply(200, events=self._events())

    async def _events(self):
        yield {"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                          "function": {"name": "send", "arguments": ""}}]}, "finish_reason": None}]}
        for i in range(0, len(self.arguments), self.size):
            yield {"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": self.arguments[i:i + self.size]}}]},
                                           "finish_reason": None}]}
        yield {"id": "s", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}


def call_arguments(gw: Gateway, upstream, stream: bool) -> tuple[str, str, dict]:
    route, pii, out, _ = gw.chain.steps
    ex = Exchange("chat", {"model": "m", "messages": [{"role": "user", "content": "Send it"}], "stream": stream})
    reply = asyncio.run(Chain([route, pii, out, upstream])(ex))
    if not stream:
        choice = reply.body["choices"][0]
        return choice["message"]["tool_calls"][0]["function"]["arguments"], choice["finish_reason"], ex.outcome

    async def read():
        return [c async for c in reply.events]

    chunks = [c for c in asyncio.run(read()) if c["choices"]]
    got = "".join(t["function"].get("arguments", "") for c in chunks for t in c["choices"][0]["delta"].get("tool_calls", []))
    return got, [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]][-1], ex.outcome


@needs_presidio
@pytest.mark.parametrize("size", [0, 1, 7])
def test_tool_call_arguments_are_masked_and_cut_at_a_blocked_finding_as_text_is(gateway, size) -> None:
    leak = '{"to": "anne.hart@example.com", "order": "ORD-123456", "note": "Falcon"}'
    for stream in ([False] if size == 0 else [True]):
        got, finish, outcome = call_arguments(gateway, Calling(leak, size), stream)
        assert json.loads(got) == {"to": "[EMAIL_ADDRESS]", "order": "[ORDER]", "note": "[SECRET]"} and finish == "tool_calls"
        assert outcome["output_filter"] == "masked" and outcome["output_found"] == "EMAIL_ADDRESS=1,ORDER=1,SECRET=1"
        got, finish, outcome = call_arguments(gateway, Calling('{"card": "4111 1111 1111 1111", "n": 1}', size), stream)
        assert got == '{"card": "' and finish == "content_filter" and outcome["output_filter"] == "blocked"


def test_a_stream_holds_back_only_what_a_match_could_still_need() -> None:
    rules = Rules.build({"ORDER": "ORD-[0-9]{6}"}, {"SECRET": ["Falcon"]}, {"ORDER": "mask", "SECRET": "block"})
    scanner = Scanner(rules)
    assert scanner.feed("The order OR") == ("The order ", False)  # "OR" may become an order number
    assert scanner.feed("D-12") == ("", False)
    assert scanner.feed("3456 is here. Fal") == ("[ORDER] is here. ", False)
    assert scanner.feed("conry") == ("Falconry", False)  # not the whole word: out it goes
    assert scanner.feed(" and Falcon.") == (" and ", True)
    assert scanner.feed("more") == ("", True)
    long = Scanner(Rules.build({"DIGITS": "[0-9]+"}, {}, {"DIGITS": "mask"}, max_hold=8))
    assert long.feed("n " + "7" * 20) == ("n " + "7" * 12, False)  # a possible match never holds more than max_hold


def test_bad_output_filter_settings_are_one_line_naming_the_field(tmp_path) -> None:
    for change, message in [({"actions": {"ORDER": "hide"}}, "output_filter.actions.ORDER = 'hide': must be one of mask, block"),
                            ({"actions": {}}, "output_filter.patterns.ORDER has no action"),
                            ({"patterns": {"ORDER": "ORD-[0-9"}, "actions": {"ORDER": "mask", "SECRET": "mask"}}, "output_filter.patterns.ORDER = 'ORD-\\[0-9': not a regular expression")]:
        data = settings(tmp_path, {"ORDER": "mask", "SECRET": "mask"})
        data["output_filter"].update(change)
        with pytest.raises(ConfigError, match=message):
            parse_settings(data, "gw.toml")
