"""Tool calling through a real `londinium serve` process and the official openai SDK, on an untrained
model (so every call's shape comes from the grammar): tool_choice variants, parallel calls, the
SDK's stream helper accumulating `delta.tool_calls`, a conversation carrying calls and results back,
and bad tools answered with a 400 naming the field."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from serve_helpers import served

from tests.integration.agent_helpers import untrained_run

FIND_VERSE = {"type": "function", "function": {"name": "find_verse", "description": "Find a verse.", "parameters": {
    "type": "object", "required": ["book", "chapter"],
    "properties": {"book": {"enum": ["Genesis", "Psalms", "John"]}, "chapter": {"type": "integer", "minimum": 1, "maximum": 150}}}}}
WHAT_HOUR = {"type": "function", "function": {"name": "what_hour", "description": "The hour.",
                                              "parameters": {"type": "object", "properties": {}}}}
TOOLS = [FIND_VERSE, WHAT_HOUR]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Where is it written?"}]


@pytest.fixture(scope="module")
def url(tiny_workspace):
    with served(tiny_workspace, untrained_run(tiny_workspace, context=2048)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _valid(message) -> None:
    assert message.content is None and message.tool_calls
    for call in message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_and_named_calls_are_valid_tool_calls(client):
    named = {"type": "function", "function": {"name": "find_verse"}}
    for seed in range(4):
        for choice in ("required", named):
            reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=choice, seed=seed,
                                                   parallel_tool_calls=False, max_completion_tokens=80, temperature=1.0)
            [c] = reply.choices
            assert c.finish_reason == "tool_calls", c.message.content
            _valid(c.message)
            assert len(c.message.tool_calls) == 1
            if choice is named:
                assert c.message.tool_calls[0].function.name == "find_verse"


def test_parallel_calls_come_in_one_reply(client):
    most = 0
    for seed in range(10):  # an untrained model goes on with another call or ends, at random
        reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[WHAT_HOUR], tool_choice="required",
                                               seed=seed, max_completion_tokens=300)
        if reply.choices[0].finish_reason == "tool_calls":
            _valid(reply.choices[0].message)
            ids = [c.id for c in reply.choices[0].message.tool_calls]
            assert len(set(ids)) == len(ids)
            most = max(most, len(ids))
            if most >= 2:
                break
    assert most >= 2


def test_the_sdk_stream_helper_accumulates_the_same_calls(client):
    for seed in range(10):  # a seed whose reply is whole calls (an untrained model may run out of tokens)
        args = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", seed=seed, max_completion_tokens=300)
        whole = client.chat.completions.create(**args).choices[0]
        if whole.finish_reason == "tool_calls":
            break
    pieces = 0
    with client.chat.completions.stream(**args) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                pieces += 1
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == whole.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in final.message.tool_calls] == \
           [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert all(c.id.startswith("call_") for c in final.message.tool_calls)
    assert pieces >= 2  # the arguments came in pieces, not in one chunk


def test_auto_and_none(client):
    for seed in range(3):
        auto = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, seed=seed, max_completion_tokens=40).choices[0]
        if auto.message.tool_calls:
            _valid(auto.message)
        else:
            assert auto.finish_reason in ("stop", "length") and not auto.message.content.startswith("<")
        none = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none", seed=seed,
                                              max_completion_tokens=20).choices[0]
        assert none.message.tool_calls is None and none.finish_reason in ("stop", "length")


def test_calls_and_results_go_back_into_the_conversation(client):
    first = client.chat.completions.create(model="tiny", messages=ASK, tools=[WHAT_HOUR], tool_choice="required",
                                           parallel_tool_calls=False, seed=1, max_completion_tokens=120).choices[0].message
    history = [*ASK, first, *({"role": "tool", "tool_call_id": c.id, "content": "Noon."} for c in first.tool_calls)]
    reply = client.chat.completions.create(model="tiny", messages=history, tools=[WHAT_HOUR], tool_choice="none",
                                           seed=1, max_completion_tokens=10)
    assert reply.choices[0].message.content is not None
    assert reply.usage.prompt_tokens > client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WHAT_HOUR], tool_choice="none", max_completion_tokens=1).usage.prompt_tokens


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "fly"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
])
def test_bad_tools_are_a_400_naming_the_param(url, body, param):
    r = httpx.post(url + "/v1/chat/completions", timeout=60, json={"model": "tiny", "messages": ASK, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
