"""The `response_schema` step alone: answers to response_format requests checked with the reference
JSON Schema validator, one repair retry that carries the complaint, then a 502; streams read whole
and replayed; both calls' tokens in the usage. An upstream that answers from a script of texts."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from londinium.gateway.chain import Chain, Exchange, Reply
from londinium.gateway.runtime import Gateway
from londinium.gateway.settings import parse_settings
from londinium.serve.errors import APIError

SCHEMA = {"type": "object", "properties": {"book": {"type": "string"}, "chapter": {"type": "integer"}}, "required": ["book", "chapter"]}
ASK = {"model": "m", "messages": [{"role": "user", "content": "Where is the flood?"}],
       "response_format": {"type": "json_schema", "json_schema": {"name": "ref", "schema": SCHEMA}}}


class Scripted:
    """Answers the next text of its script each call (JSON or a stream in 4-character pieces) and keeps the requests."""

    name = "upstream"

    def __init__(self, *texts: str):
        self.texts, self.requests = list(texts), []

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        self.requests.append(copy.deepcopy(ex.body))
        text = self.texts.pop(0)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        chat = ex.endpoint == "chat"
        if not ex.stream:
            answer = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            return Reply(200, body={"choices": [{"index": 0, **answer, "finish_reason": "stop"}], "usage": usage})
        return Reply(200, events=self._events(text, usage, chat))

    async def _events(self, text: str, usage: dict, chat: bool):
        for i in range(0, len(text), 4):
            piece = {"delta": {"content": text[i:i + 4]}} if chat else {"text": text[i:i + 4]}
            yield {"id": "s", "choices": [{"index": 0, **piece, "finish_reason": None}]}
        yield {"id": "s", "choices": [{"index": 0, **({"delta": {}} if chat else {"text": ""}), "finish_reason": "stop"}]}
        yield {"id": "s", "choices": [], "usage": usage}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    data = {"gateway": {"database": str(tmp / "gw.db"), "chain": ["route", "response_schema", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
            "routes": [{"alias": "m", "backends": ["a"]}, {"alias": "loose", "backends": ["a"], "response_schema": False}]}
    gw = Gateway(parse_settings(data, "gw.toml"))
    yield gw
    asyncio.run(gw.close())


def run(gw: Gateway, upstream: Scripted, body: dict, endpoint: str = "chat") -> tuple[str, dict, Exchange]:
    route, step, _ = gw.chain.steps
    ex = Exchange(endpoint, copy.deepcopy(body))
    reply = asyncio.run(Chain([route, step, upstream])(ex))
    text_of = (lambda c, part: c[part].get("content", "")) if endpoint == "chat" else (lambda c, part: c["text"])  # noqa: E731
    if reply.events is None:
        return text_of(reply.body["choices"][0], "message"), reply.body["usage"], ex

    async def read():
        return [c async for c in reply.events]

    chunks = asyncio.run(read())
    text = "".join(text_of(c["choices"][0], "delta") for c in chunks if c["choices"])
    return text, chunks[-1]["usage"], ex


GOOD, BAD = '{"book": "Genesis", "chapter": 7}', '{"book": "Genesis", "chapter": "seven"}'


@pytest.mark.parametrize("stream", [False, True])
def test_a_valid_answer_passes_and_an_invalid_one_is_repaired_by_one_retry_that_says_why(gateway, stream) -> None:
    body = {**ASK, "stream": stream}
    text, usage, ex = run(gateway, Scripted(GOOD), body)
    assert json.loads(text) == {"book": "Genesis", "chapter": 7} and ex.outcome["response_schema"] == "valid" and usage["completion_tokens"] == 5
    upstream = Scripted(BAD, GOOD)
    text, usage, ex = run(gateway, upstream, body)
    assert text == GOOD and ex.outcome["response_schema"] == "repaired"
    assert usage == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}  # both calls are paid for
    retry = upstream.requests[1]["messages"]
    assert retry[:1] == ASK["messages"] and retry[1] == {"role": "assistant", "content": BAD}
    assert "$.chapter" in retry[2]["content"] and "'type'" in retry[2]["content"]
    assert ex.body["messages"] == ASK["messages"]  # the ledger and the caches see the client's request


def test_an_answer_still_invalid_after_the_repair_is_a_502_naming_where_without_quoting_it(gateway) -> None:
    upstream = Scripted("Genesis, chapter seven", '{"book": "Genesis"}')
    with pytest.raises(APIError) as e:
        run(gateway, upstream, ASK)
    assert e.value.status == 502 and e.value.code == "invalid_response_schema"
    assert "$: fails 'required'" in e.value.message and "Genesis" not in e.value.message
    assert "not JSON" in upstream.requests[1]["messages"][-1]["content"]
    metrics = gateway.telemetry.metrics.registry.get_sample_value
    assert metrics("londinium_gateway_response_schema_total", {"model": "m", "decision": "invalid"}) == 1


def test_json_object_requests_need_an_object_and_other_requests_and_routes_pass_unchecked(gateway) -> None:
    upstream = Scripted("[1, 2]", '{"a": 1}')
    text, _, ex = run(gateway, upstream, {**ASK, "response_format": {"type": "json_object"}})
    assert text == '{"a": 1}' and ex.outcome["response_schema"] == "repaired"
    for body in ({**ASK, "response_format": {"type": "text"}}, {**ASK, "model": "loose"}):
        text, _, ex = run(gateway, Scripted("not JSON"), body)
        assert text == "not JSON" and "response_schema" not in ex.outcome
    with pytest.raises(APIError, match="not a valid JSON Schema") as e:
        run(gateway, Scripted(GOOD), {**ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}})
    assert e.value.status == 400


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_is_checked_and_repaired_with_the_complaint_appended_to_its_prompt(gateway, stream) -> None:
    body = {"model": "m", "prompt": "The flood, as JSON: ", "response_format": ASK["response_format"], "stream": stream}
    upstream = Scripted(BAD, GOOD)
    text, usage, ex = run(gateway, upstream, body, endpoint="completion")
    assert text == GOOD and ex.outcome["response_schema"] == "repaired" and usage["completion_tokens"] == 10
    retry = upstream.requests[1]["prompt"]
    assert retry.startswith("The flood, as JSON: " + BAD) and "$.chapter" in retry and ex.body["prompt"] == body["prompt"]
    listed = Scripted(BAD)  # several prompts: no one text to append the complaint to
    with pytest.raises(APIError, match="not repaired") as e:
        run(gateway, listed, {**body, "prompt": ["a", "b"]}, endpoint="completion")
    assert e.value.status == 502 and len(listed.requests) == 1
