"""Hostile input against a real `londinium serve` app: schemathesis generates requests from our own
/openapi.json (every operation, with and without the key), then the cases a schema cannot express
are sent by hand as raw bytes. Whatever arrives, the server answers below 500, and every error is
OpenAI's shape `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import collections
import json

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given, settings
from serve_helpers import live_server, trained_run

from londinium.config import GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL, KEY = "tiny", "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CASES_PER_OPERATION = 50  # per operation and mode (valid, invalid); each sent with and without the key


@pytest.fixture(scope="module")
def trained(tiny_workspace):
    return load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")


@pytest.fixture(scope="module")
def served(trained):
    cfg = ServeConfig(api_key=KEY, max_body_mb=1.0)
    with live_server(create_app(lambda: Engine.from_trained(trained), MODEL, cfg, GenerateConfig())) as url:
        yield url


def assert_openai_shape(status: int, body: bytes, what: str) -> None:
    """Below 500; an error carries OpenAI's error object and nothing else."""
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, f"{what}: {body[:300]!r}"
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        assert "Traceback" not in error["message"]


@pytest.mark.slow  # ~15 s of generated requests; the hostile cases below stay in the default run
def test_schemathesis_cases_never_5xx_and_errors_are_openai_shaped(served) -> None:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json", headers=AUTH)
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/models/{name}", "/health", "/metrics"} <= paths
    tried: dict = {"cases": 0, "generated": 0, "401": 0, "statuses": collections.Counter()}
    # Invalid input needs something that can be invalid: a body (any string is a valid model name).
    runs = [(op, GenerationMode.POSITIVE) for op in operations] + \
        [(op, GenerationMode.NEGATIVE) for op in operations if op.method.upper() == "POST"]
    for op, mode in runs:
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            # Half the bodies name the served model, so generation reaches sampling, not only the 404.
            if isinstance(case.body, dict) and "model" in case.body and tried["cases"] % 2 == 0:
                case.body["model"] = MODEL
            for headers in (AUTH, {}):
                r = case.call(base_url=served, headers=headers, timeout=60)
                tried["cases"] += 1
                tried["statuses"][r.status_code] += 1
                assert_openai_shape(r.status_code, r.content, f"{case.method} {case.formatted_path} {case.body!r:.300}")
                if not headers and op.path != "/health":
                    assert r.status_code == 401, f"{op.path} answered {r.status_code} without the key"
                    tried["401"] += 1
                if headers and r.status_code == 200 and op.path.endswith("completions"):
                    tried["generated"] += 1

        fuzz()
    print(f"fuzz: {tried['cases']} requests over {len(operations)} operations ({tried['statuses']}), {tried['generated']} generated text, "
          f"{tried['401']} refused without the key")
    assert tried["cases"] >= 300 and tried["generated"] > 0


def raw(url: str, path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{url}{path}", content=body, headers={**AUTH, "Content-Type": content_type}, timeout=60)


def completion(**fields) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "Thou art", "max_tokens": 3} | fields).encode()


def chat(**fields) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hail"}], "max_tokens": 3} | fields).encode()


# name: (path, raw body, the status it must get: 400 for what is wrong, 200 for what is odd but
# meaningful, such as an empty token list, which starts from end-of-text like an empty prompt)
HOSTILE = {
    # bytes that are not UTF-8, and JSON escapes of lone surrogates (valid JSON, invalid text)
    "invalid utf-8 prompt": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou \xff\xfe art", "max_tokens": 2}', 400),
    "invalid utf-8 chat": ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xc3\x28"}]}', 400),
    "lone surrogate prompt": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou \\ud800 art", "max_tokens": 2}', 400),
    "lone low surrogate chat": ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "x\\udfff"}], "max_tokens": 2}', 400),
    "surrogate in stop": ("/v1/completions", completion(stop=["\ud800"]).replace(b"\\ud800", b"\\ud800"), 400),
    "NaN temperature": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou", "max_tokens": 2, "temperature": NaN}', 400),
    "Infinity temperature": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou", "max_tokens": 2, "temperature": Infinity}', 400),
    "-Infinity top_p": ("/v1/chat/completions", chat().replace(b'"max_tokens"', b'"top_p": -Infinity, "max_tokens"'), 400),
    "NaN logit_bias": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou", "max_tokens": 2, "logit_bias": {"5": NaN}}', 400),
    "inf penalty": ("/v1/completions", b'{"model": "tiny", "prompt": "Thou", "max_tokens": 2, "presence_penalty": 1e999}', 400),
    "negative temperature": ("/v1/completions", completion(temperature=-0.5), 400),
    "max_tokens 0": ("/v1/completions", completion(max_tokens=0), 400),
    "max_tokens negative": ("/v1/completions", completion(max_tokens=-5), 400),
    "max_tokens huge": ("/v1/completions", completion(max_tokens=10 ** 30), 400),
    "max_completion_tokens huge": ("/v1/chat/completions", chat(max_completion_tokens=2 ** 63), 400),
    "n huge": ("/v1/completions", completion(n=10 ** 9), 400),
    "n 2**64": ("/v1/chat/completions", chat(n=2 ** 64), 400),
    "best_of huge": ("/v1/completions", completion(best_of=10 ** 12), 400),
    "seed huge": ("/v1/completions", completion(seed=10 ** 40), 400),
    "seed negative": ("/v1/completions", completion(seed=-1), 200),
    "top_k huge": ("/v1/completions", completion(top_k=10 ** 20), 200),
    "logprobs huge": ("/v1/completions", completion(logprobs=10 ** 20), 400),
    "logit_bias id out of range": ("/v1/completions", completion(logit_bias={"99999999999999999999": 1}), 400),
    "logit_bias negative id": ("/v1/completions", completion(logit_bias={"-1": 1}), 400),
    "logit_bias non-numeric id": ("/v1/completions", completion(logit_bias={"thou": 1}), 400),
    "logit_bias huge value": ("/v1/completions", completion(logit_bias={"5": 1e308}), 400),
    "token prompt out of range": ("/v1/completions", completion(prompt=[2 ** 63]), 400),
    "token prompt negative": ("/v1/completions", completion(prompt=[[-1, 3]]), 400),
    "empty token prompt": ("/v1/completions", completion(prompt=[]), 400),
    "empty prompt list of lists": ("/v1/completions", completion(prompt=[[]]), 200),
    "many prompts": ("/v1/completions", completion(prompt=["Thou"] * 5000), 400),
    "empty messages": ("/v1/chat/completions", chat(messages=[]), 400),
    "unknown role": ("/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "hi"}]), 400),
    "role not a string": ("/v1/chat/completions", chat(messages=[{"role": 7, "content": "hi"}]), 400),
    "message not an object": ("/v1/chat/completions", chat(messages=["hi"]), 400),
    "content part unknown type": ("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400),
    "only a system message": ("/v1/chat/completions", chat(messages=[{"role": "system", "content": "Be brief"}]), 200),
    "assistant last": ("/v1/chat/completions", chat(messages=[{"role": "assistant", "content": "Hail"}]), 200),
    "tool message": ("/v1/chat/completions", chat(messages=[{"role": "tool", "content": "42", "tool_call_id": "x"}]), 200),
    "tool message without its call id": ("/v1/chat/completions", chat(messages=[{"role": "tool", "content": "42"}]), 400),
    "null content": ("/v1/chat/completions", chat(messages=[{"role": "user", "content": None}]), 400),  # as OpenAI; was served as ""
    "stop list huge": ("/v1/completions", completion(stop=["x" * 1000] * 100), 200),
    "stop empty string": ("/v1/completions", completion(stop=[""]), 400),
    "deeply nested JSON": ("/v1/completions", b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    "deeply nested metadata": ("/v1/chat/completions", chat()[:-1] + b', "response_format": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 400),
    "JSON array body": ("/v1/completions", b"[1, 2, 3]", 400),
    "JSON string body": ("/v1/chat/completions", b'"hello"', 400),
    "JSON null body": ("/v1/completions", b"null", 400),
    "empty body": ("/v1/completions", b"", 400),
    "truncated JSON": ("/v1/completions", completion()[:-5], 400),
    "duplicate keys": ("/v1/completions", b'{"model": "tiny", "prompt": "a", "prompt": 5}', 400),
    "BOM before JSON": ("/v1/completions", b"\xef\xbb\xbf" + completion(), 200),
    "NUL bytes": ("/v1/completions", b'{"model": "tiny", "prompt": "\\u0000\\u0000", "max_tokens": 2}', 200),
    "stream as string": ("/v1/completions", completion(stream="yes"), 400),  # OpenAI refuses it; the types are strict
    "stream_options without stream": ("/v1/chat/completions", chat(stream_options={"include_usage": True}), 400),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_are_refused_or_served_never_5xx(served, name) -> None:
    path, body, status = HOSTILE[name]
    r = raw(served, path, body)
    assert_openai_shape(r.status_code, r.content, name)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
    if status == 400:
        message = r.json()["error"]["message"]
        assert not message.startswith("None") and "error parsing" not in message, message  # says what is wrong
    assert httpx.get(f"{served}/health", timeout=10).status_code == 200  # and the server still serves


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/json; charset=latin-1", "", "application/xml"])
def test_wrong_content_types_never_5xx(served, content_type) -> None:
    r = raw(served, "/v1/completions", completion(), content_type)
    assert_openai_shape(r.status_code, r.content, content_type)
    r = raw(served, "/v1/completions", b"prompt=Thou&model=tiny", content_type)
    assert_openai_shape(r.status_code, r.content, content_type)


def test_a_10_mb_body_is_413_before_it_is_parsed(served) -> None:
    body = b'{"model": "tiny", "prompt": "' + b"thou " * (2 * 1024 * 1024) + b'"}'
    assert len(body) > 10 * 1024 * 1024
    r = raw(served, "/v1/completions", body)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit counts bytes as they arrive
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    r = httpx.post(f"{served}/v1/completions", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert_openai_shape(r.status_code, r.content, "chunked 10 MB")
