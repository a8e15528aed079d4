"""Request fields are held to their JSON types, as OpenAI holds them: a value of the wrong type
(`"stream": "yes"`, `"n": "2"`, `"temperature": "0.5"`, a token id `true` or `2.0`) is a 400 naming
the field, never coerced; a value of the right type (an integer where a number is expected
included) is served. The types below are OpenAI's API reference's, written out by hand as the
oracle, and the table must name every field the request models declare, so a new field cannot
slip past. Fields the server refuses or ignores whatever their value are in docs/serving.md."""

from __future__ import annotations

import json
import math
import string
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import live_server, trained_run

from londinium.config import GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.serve.app import create_app
from londinium.serve.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, StreamOptions

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny"
VOCAB = 512  # the tiny workspace's tokenizer

# JSON types: a name, ("array", item), ("map", value) for an object's values, or ("any", [types]).
S, I, N, B, O = "string", "integer", "number", "boolean", "object"  # noqa: E741
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates: not text
WORDS = st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=12)
IDS = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=12)
SMALL = st.integers(1, 3)


def unit(low: float, high: float) -> st.SearchStrategy:
    """Numbers in [low, high], integers among them: an integer is a number."""
    return st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))


# field: (its JSON type, values of that type this server serves with 200, given the base request)
SAMPLING: dict[str, tuple[Any, st.SearchStrategy]] = {
    "model": (S, st.just(MODEL)),
    "n": (I, SMALL),
    "seed": (I, st.integers(-2**63, 2**63 - 1)),
    "stop": (("any", [S, ("array", S)]), WORDS | st.lists(WORDS, max_size=3)),
    "stream": (B, st.booleans()),
    "temperature": (N, unit(0, 2)),
    "top_p": (N, st.floats(0.01, 1) | st.just(1)),
    "frequency_penalty": (N, unit(-2, 2)),
    "presence_penalty": (N, unit(-2, 2)),
    "logit_bias": (("map", N), st.dictionaries(st.integers(0, VOCAB - 1).map(str), unit(-100, 100), max_size=3)),
    "user": (S, TEXT),
    "top_k": (I, st.integers(0, 50)),
    "min_p": (N, unit(0, 1)),
    "repetition_penalty": (N, st.floats(0.5, 2) | st.just(1)),
    "ignore_eos": (B, st.booleans()),
    "stream_options": (O, st.just({"include_usage": True})),  # with stream (see BASE_STREAM)
}
COMPLETION = SAMPLING | {
    "prompt": (("any", [S, ("array", S), ("array", I), ("array", ("array", I))]),
               TEXT | st.lists(WORDS, min_size=1, max_size=3) | IDS | st.lists(IDS, min_size=1, max_size=2)),
    "max_tokens": (I, SMALL),
    "best_of": (I, st.integers(1, 2)),
    "echo": (B, st.booleans()),
    "logprobs": (I, st.integers(0, 5)),
    "suffix": (S, st.just("")),  # a suffix is refused (the model only continues text); empty is none
    "response_format": (O, st.just({"type": "text"})),  # our extension: the chat endpoint's structured outputs
}
CHAT = SAMPLING | {
    "messages": (("array", O), st.just([{"role": "user", "content": "Hail"}])),
    "max_tokens": (I, SMALL),
    "max_completion_tokens": (I, SMALL),
    "logprobs": (B, st.booleans()),
    "top_logprobs": (I, st.integers(0, 5)),  # with logprobs (see BASE_LOGPROBS)
    "response_format": (O, st.just({"type": "text"})),
    "tools": (("array", O), st.just([])),
    "tool_choice": (("any", [S, O]), st.just("none")),
    "parallel_tool_calls": (B, st.nothing()),  # refused whatever its value without tools (test_serve_tools has them)
    "functions": (("array", O), st.just([])),
    "function_call": (("any", [S, O]), st.just("none")),
    "store": (B, st.just(False)),
    "metadata": (("map", S), st.dictionaries(WORDS, TEXT, max_size=3)),
    "service_tier": (S, st.sampled_from(["auto", "default"])),
}
MESSAGE = {
    "role": (S, st.sampled_from(["system", "developer", "user", "assistant"])),
    "content": (("any", [S, ("array", O)]), TEXT | st.lists(st.builds(lambda t: {"type": "text", "text": t}, TEXT), max_size=2)),
    "name": (S, TEXT),
    "refusal": (S, st.just("")),
    "tool_calls": (("array", O), st.just([])),
    "tool_call_id": (S, st.just("")),
    "function_call": (O, st.just({})),
}
STREAM_OPTIONS = {
    "include_usage": (B, st.booleans()),
    "include_obfuscation": (B, st.booleans()),
    "continuous_usage_stats": (B, st.just(False)),
}

BASE = {"/v1/completions": {"model": MODEL, "prompt": "Thou art", "max_tokens": 2},
        "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hail"}], "max_tokens": 2}}
BASE_STREAM = {"stream": True}
BASE_LOGPROBS = {"logprobs": True}
# Near misses first: the probe's own examples, then anything JSON can hold.
NEAR_MISSES = st.sampled_from(["yes", "true", "2", "0.5", "1", "", True, False, 0, 1, 2.0, 0.5, [True], [1.0], ["1"], {}, []])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)


def conforms(value: Any, kind: Any) -> bool:
    """Whether a JSON value has the type `kind` (null aside: every optional field takes it)."""
    if kind == S:
        return isinstance(value, str)
    if kind == I:
        return type(value) is int
    if kind == N:
        return type(value) in (int, float)
    if kind == B:
        return type(value) is bool
    if kind == O:
        return isinstance(value, dict)
    tag, inner = kind
    if tag == "array":
        return isinstance(value, list) and all(conforms(v, inner) for v in value)
    if tag == "map":
        return isinstance(value, dict) and all(conforms(v, inner) for v in value.values())
    return any(conforms(value, k) for k in inner)


def test_the_table_names_every_field_of_the_request_models() -> None:
    assert set(COMPLETION) == set(CompletionRequest.model_fields)
    assert set(CHAT) == set(ChatCompletionRequest.model_fields)
    assert set(MESSAGE) == set(ChatMessage.model_fields)
    assert set(STREAM_OPTIONS) == set(StreamOptions.model_fields)


@pytest.fixture(scope="module")
def served(tiny_workspace):
    trained = load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(), GenerateConfig())
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


# (where the value goes, its path as the error names it, the table) for every field, nested ones included
TARGETS = ([("/v1/completions", (f,), f, COMPLETION) for f in COMPLETION]
           + [("/v1/chat/completions", (f,), f, CHAT) for f in CHAT]
           + [("/v1/chat/completions", ("messages", 0, f), f"messages[0].{f}", MESSAGE) for f in MESSAGE]
           + [("/v1/completions", ("stream_options", f), f"stream_options.{f}", STREAM_OPTIONS) for f in STREAM_OPTIONS])


def request(path: str, at: tuple, value: Any) -> dict:
    body = json.loads(json.dumps(BASE[path]))
    if at[0] == "stream_options":
        body |= BASE_STREAM | {"stream_options": {}}
    if at == ("stream_options",):
        body |= BASE_STREAM
    if at == ("top_logprobs",):
        body |= BASE_LOGPROBS
    node = body
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = value
    return body


@st.composite
def typed(draw, right: bool) -> tuple[str, tuple, str, Any]:
    """A request with one field set: to a value of its type that is served (`right`), or to any
    value not of its type (null aside: optional fields take it)."""
    targets = [t for t in TARGETS if not (right and t[3][t[1][-1]][1].is_empty)]
    path, at, name, table = draw(st.sampled_from(targets))
    kind, served_values = table[at[-1]]
    if right:
        value = draw(served_values)
        assert conforms(value, kind)  # the table's own values are of its type
    else:
        value = draw((NEAR_MISSES | JSON).filter(lambda v: v is not None and not conforms(v, kind)))
    return path, at, name, value


LIVE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # one server for all examples


def post(served: httpx.Client, case: tuple[str, tuple, str, Any]) -> tuple[str, Any, httpx.Response]:
    path, at, name, value = case
    return name, value, served.post(path, json=request(path, at, value))


@settings(LIVE, max_examples=120)
@given(case=typed(right=False))
def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(served, case) -> None:
    name, value, r = post(served, case)
    assert r.status_code == 400, (name, value, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["param"] is not None and error["param"].startswith(name), (name, value, error)
    assert name in error["message"], (name, value, error)


@settings(LIVE, max_examples=80)
@given(case=typed(right=True))
def test_a_value_of_the_right_type_is_served(served, case) -> None:
    name, value, r = post(served, case)
    assert r.status_code == 200, (name, value, r.status_code, r.text[:300])


def test_the_probes_examples_through_the_openai_sdk(served) -> None:
    """The issue's examples as the SDK sends them (extra_body passes a value through untouched)."""
    client = openai.OpenAI(base_url=str(served.base_url).rstrip("/") + "/v1", api_key="x", max_retries=0, timeout=30)
    for field, value in [("stream", "yes"), ("n", "2"), ("temperature", "0.5"), ("max_tokens", 2.0), ("echo", 1)]:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model=MODEL, prompt="Thou", extra_body={field: value})
        assert e.value.param == field and "Invalid type" in e.value.message, e.value.message
    for prompt, param in [([True, 5], "prompt"), ([5, 2.0], "prompt"), ([[5, True]], "prompt[0][1]")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
        assert e.value.param == param, e.value.message
    # An integer is a number, as in OpenAI's API.
    assert client.completions.create(model=MODEL, prompt="Thou", max_tokens=2, temperature=1, top_p=1).choices


@settings(LIVE, max_examples=60)
@given(key=st.sampled_from([" 1", "1 ", "+1", "1_0", "\u0661", "\uff11", "1.0", "0x1", "1e1", ""]) | st.text(max_size=6))
def test_a_logit_bias_key_is_a_token_id_in_ascii_digits(served, key) -> None:
    """Python's int() reads " 1", "+1", "1_0" and other scripts' digits ("١", "１"): each was taken
    as a token id. Only ASCII digits are; a key with anything else is a 400 naming logit_bias."""
    r = served.post("/v1/completions", json={**BASE["/v1/completions"], "logit_bias": {key: 1}})
    if key.isascii() and key.isdigit() and int(key) < VOCAB:
        assert r.status_code == 200, (key, r.text[:300])
    else:
        assert r.status_code == 400 and "logit_bias" in r.json()["error"]["message"], (key, r.text[:300])


def test_null_content_is_refused_except_in_a_reply(served) -> None:
    """Only an assistant reply may come back with content null (the SDK sends replies back so); a
    system or user message with none was rendered as empty text and answered."""
    for role in ("system", "developer", "user"):
        r = served.post("/v1/chat/completions", json={**BASE["/v1/chat/completions"], "messages": [{"role": role, "content": None}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", r.text[:300]
        assert f"a {role} message needs content" in r.json()["error"]["message"]
    history = [{"role": "user", "content": "Hail"}, {"role": "assistant", "content": None}, {"role": "user", "content": "Again"}]
    assert served.post("/v1/chat/completions", json={**BASE["/v1/chat/completions"], "messages": history}).status_code == 200
