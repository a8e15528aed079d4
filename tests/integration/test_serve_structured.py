"""Structured outputs through a real `londinium serve` process and the official openai SDK:
`chat.completions.parse` with a pydantic model, JSON mode streamed, the /v1/completions extension,
and a schema the grammar library refuses answered with a 400 that names it."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from serve_helpers import served, trained_run


class Line(BaseModel):
    speaker: Literal["HAMLET", "OPHELIA", "GHOST"]
    act: int = Field(ge=1, le=5)
    words: list[Annotated[str, Field(max_length=5)]] = Field(max_length=2)
    mood: str = Field(max_length=6)


@pytest.fixture(scope="module")
def url(tiny_workspace):
    with served(tiny_workspace, trained_run(tiny_workspace)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_sdk_parse_returns_the_pydantic_object(client):
    # Sampled, seeded: whatever tokens the model likes, the grammar lets only a Line through.
    for seed in range(3):
        reply = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "Who speaketh?"}],
                                              response_format=Line, max_completion_tokens=80, seed=seed, temperature=1.0)
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(choice.message.parsed, Line)
        assert choice.message.parsed == Line.model_validate_json(choice.message.content)


def test_json_mode_streams_a_json_object_with_logprobs(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Speak."}], response_format={"type": "json_object"},
        max_completion_tokens=60, seed=5, stream=True, logprobs=True, top_logprobs=1))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    assert text.startswith("{")
    if finish == ["stop"]:
        assert isinstance(json.loads(text), dict)


def test_completions_take_response_format_as_an_extension(client):
    schema = {"type": "object", "properties": {"verse": {"type": "integer", "minimum": 1, "maximum": 176}},
              "required": ["verse"], "additionalProperties": False}
    reply = client.completions.create(model="tiny", prompt="Psalm 119, verse", max_tokens=20, n=3, seed=2,
                                      extra_body={"response_format": {"type": "json_schema",
                                                                      "json_schema": {"name": "v", "schema": schema}}})
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice.text
        jsonschema.validate(json.loads(choice.text), schema)


@pytest.mark.parametrize("response_format, says", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/definitions/nowhere"}}}, "cannot be compiled"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "[a-"}}}, "cannot be compiled"),
    ({"type": "yaml"}, "'yaml' is unknown"),
])
def test_a_bad_response_format_is_a_400_naming_it(url, response_format, says):
    r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "response_format": response_format})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"].startswith("response_format") and says in error["message"], error


def test_stop_strings_cannot_cut_a_schema_in_half(client):
    # smolagents' CodeAgent sends "Observation:" and "</code>" as stop strings beside its schema; here the
    # schema's only value holds both, so a stop string applied to the reply would leave half a JSON object.
    schema = {"type": "object", "additionalProperties": False, "required": ["code"],
              "properties": {"code": {"enum": ["x = 1\nObservation: </code>"]}}}
    for create in (client.chat.completions.create, client.completions.create):
        kind = {"messages": [{"role": "user", "content": "Act."}]} if create == client.chat.completions.create else {"prompt": "Act."}
        reply = create(model="tiny", max_tokens=60, seed=0, stop=["Observation:", "</code>"],
                       extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "act", "schema": schema}}}, **kind)
        choice = reply.choices[0]
        text = choice.message.content if hasattr(choice, "message") else choice.text
        assert choice.finish_reason == "stop" and json.loads(text) == {"code": "x = 1\nObservation: </code>"}, text
