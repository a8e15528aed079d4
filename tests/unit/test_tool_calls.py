"""Tool calls by constrained decoding (`serve/tools.py`): an untrained model's calls always name an
offered tool with arguments valid against its schema, for every tool_choice; the streamed fragments
add up to the same calls; bad tools are refused naming the field."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from engine_fixtures import make_model, make_tokenizer

from londinium.infer import Engine, SamplingParams
from londinium.infer.chat_template import tokenize_chat
from londinium.serve.errors import APIError
from londinium.serve.protocol import ChatCompletionRequest
from londinium.serve.tools import ToolCallStream, parse_calls, tool_plan

pytestmark = pytest.mark.usefixtures("one_thread")

FIND_VERSE = {"type": "function", "function": {"name": "find_verse", "description": "Find a verse.", "parameters": {
    "type": "object", "required": ["book", "chapter"],
    "properties": {"book": {"enum": ["Genesis", "Psalms", "John"]}, "chapter": {"type": "integer", "minimum": 1, "maximum": 150},
                   "words": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 6}},
                   "where": {"type": "object", "properties": {"verse": {"type": "integer", "minimum": 1}}}}}}}
WHAT_HOUR = {"type": "function", "function": {"name": "what_hour", "description": "The hour.",
                                              "parameters": {"type": "object", "properties": {}}}}
TOOLS = [FIND_VERSE, WHAT_HOUR]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
SAMPLES = 48
MESSAGES = [{"role": "user", "content": "Where is it written?"}]


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = make_tokenizer()
    return Engine(make_model(tok, context=1024), tok, max_running=SAMPLES)


def _request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=MESSAGES, **fields)


def _sample(engine, choice, parallel=None, n=SAMPLES, max_tokens=120):
    plan = tool_plan(_request(tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel), engine)
    ids = tokenize_chat(engine.tokenizer, MESSAGES, tools=TOOLS).ids
    end = engine.tokenizer.token_to_id("<|end|>")
    params = [SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=s, constraint=plan.constraint, stop_token_ids=[end])
              for s in range(n)]
    return engine.generate([ids] * n, params)


def _valid(calls):
    for call in calls:
        assert call["id"].startswith("call_") and call["type"] == "function"
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


@pytest.mark.parametrize("choice, parallel", [("required", False), ("required", True),
                                              ({"type": "function", "function": {"name": "find_verse"}}, None)])
def test_untrained_model_calls_always_validate(engine, choice, parallel):
    completions = _sample(engine, choice, parallel)
    finished = [c for c in completions if c.finish_reason == "stop"]
    for c in finished:
        calls = parse_calls(c.text)
        assert calls, c.text
        _valid(calls)
        if isinstance(choice, dict):
            assert {call["function"]["name"] for call in calls} == {"find_verse"}
        if not parallel:
            assert len(calls) == 1
    assert all(c.finish_reason == "length" and parse_calls(c.text) is None for c in completions if c.finish_reason != "stop")
    assert len(finished) >= SAMPLES // 2, f"only {len(finished)} of {SAMPLES} calls completed within 120 tokens"


def test_parallel_calls_come_several_at_once(engine):
    counts = [len(parse_calls(c.text) or []) for c in _sample(engine, "required", True)]
    assert max(counts) >= 2, counts


def test_auto_is_a_call_or_text_that_does_not_begin_with_a_tag(engine):
    kinds = set()
    for c in _sample(engine, "auto", n=24):
        calls = parse_calls(c.text)
        if calls:
            _valid(calls)
            kinds.add("call")
        else:
            assert not c.text.startswith("<"), c.text
            kinds.add("text")
    assert "text" in kinds


def test_streamed_fragments_add_up_to_the_calls(engine):
    rng = random.Random(0)
    for c in _sample(engine, "required", True, n=16):
        calls = parse_calls(c.text)
        if not calls:
            continue
        stream, got, cut = ToolCallStream(), {}, 0
        while cut < len(c.text):  # pieces of 1 to 6 characters, as the engine's deltas come
            step = rng.randint(1, 6)
            for f in stream.push(c.text[cut:cut + step]):
                entry = got.setdefault(f["index"], {"name": None, "arguments": "", "id": None})
                if "id" in f:
                    assert entry["id"] is None and f["function"]["arguments"] == ""
                    entry.update(id=f["id"], name=f["function"]["name"])
                entry["arguments"] += f["function"]["arguments"]
            cut += step
        assert [(g["name"], json.loads(g["arguments"])) for g in got.values()] == \
               [(k["function"]["name"], json.loads(k["function"]["arguments"])) for k in calls]
        assert stream.calls == len(calls) and not stream.in_arguments and stream.buffer == ""


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "two words"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/nowhere"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WHAT_HOUR, WHAT_HOUR]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "fly"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tools_are_refused_naming_the_field(engine, fields, param):
    with pytest.raises(APIError) as caught:
        tool_plan(_request(**fields), engine)
    assert caught.value.status == 400 and caught.value.param == param, caught.value.message


def test_parameters_are_closed_as_strict_mode_but_an_open_object_stays_open(engine):
    from londinium.serve.tools import _closed

    closed = _closed(FIND_VERSE["function"]["parameters"])
    assert closed["additionalProperties"] is False and closed["properties"]["where"]["additionalProperties"] is False
    assert _closed({"type": "object"}) == {"type": "object"}
    assert _closed({"type": "object", "properties": {}, "additionalProperties": True})["additionalProperties"] is True
