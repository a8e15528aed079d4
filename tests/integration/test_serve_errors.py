"""Every error path of `londinium serve` as the openai SDK sees it: its own exception types, OpenAI's
error shape with the field named, and the states around the model (loading, draining)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import live_server, metric, slow_run, trained_run

from londinium.config import GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.serve.app import create_app
from londinium.tokenizer.codec import encode

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny"
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def trained(tiny_workspace):
    return load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")


@pytest.fixture(scope="module")
def slow(tiny_workspace):
    """The slow random model: its requests are still running when a test acts on them."""
    return load_run(tiny_workspace, run=slow_run(tiny_workspace), checkpoint="latest")


@pytest.fixture(scope="module")
def engine(trained):
    """For reading the vocabulary; each server below gets an engine of its own (its loop owns it)."""
    return Engine.from_trained(trained)


@pytest.fixture(scope="module")
def served(trained):
    """A server with an API key and a small body limit."""
    cfg = ServeConfig(api_key=KEY, max_body_mb=0.01)
    with live_server(create_app(lambda: Engine.from_trained(trained), MODEL, cfg, GenerateConfig())) as url:
        yield url


def sdk(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_api_key_is_required_except_for_health(served) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(served, "wrong").completions.create(model=MODEL, prompt="Thou", max_tokens=2)
    assert e.value.code == "invalid_api_key"
    assert httpx.post(f"{served}/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 401
    assert httpx.get(f"{served}/metrics").status_code == 401
    assert httpx.get(f"{served}/health").status_code == 200
    assert sdk(served).completions.create(model=MODEL, prompt="Thou", max_tokens=2).choices


@pytest.mark.parametrize("kwargs, param, says", [
    (dict(temperature=-1.0), "temperature", "temperature"),
    (dict(top_p=0.0), "top_p", "top_p"),
    (dict(n=0), "n", "n"),
    (dict(logprobs=50), "logprobs", "logprobs"),
    (dict(logit_bias={"999999": 5}), "logit_bias", "vocabulary"),
    (dict(extra_body={"frobnicate": 1}), "frobnicate", "Unrecognized request argument"),
    (dict(extra_body={"temperature": "hot"}), "temperature", "temperature"),
    (dict(stream_options={"include_usage": True}), "stream_options", "stream"),
    (dict(max_tokens=1000), "max_tokens", "maximum context length is 128 tokens"),
    (dict(prompt="thou " * 200), "prompt", "maximum context length is 128 tokens"),
    (dict(prompt=[[1, 2, 10 ** 6]]), "prompt", "not in the vocabulary"),
    (dict(suffix="end"), "suffix", "suffix"),
    (dict(n=17), "n", "serve.max_running = 16"),
    (dict(best_of=3, stream=True), "best_of", "cannot stream"),
    (dict(echo=True, logprobs=1), "echo", "logprobs"),
])
def test_invalid_completion_fields_are_400_naming_the_field(served, kwargs, param, says) -> None:
    args = dict(model=MODEL, prompt="Thou art", max_tokens=4) | kwargs
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).completions.create(**args)
    assert e.value.param == param and says in e.value.message, e.value.message
    assert e.value.type == "invalid_request_error"


def test_context_errors_give_the_numbers(served, engine) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).completions.create(model=MODEL, prompt="thou " * 200, max_tokens=4)
    tokens = len(encode(engine.tokenizer, "thou " * 200))
    assert e.value.code == "context_length_exceeded" and f"your prompt has {tokens} tokens" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).completions.create(model=MODEL, prompt="Thou", max_tokens=127)
    assert e.value.code == "context_length_exceeded" and "128" in e.value.message and "127 for the completion" in e.value.message
    # Leaving max_tokens out caps it to what fits: no error, and the completion ends at the context.
    r = sdk(served).completions.create(model=MODEL, prompt="thou " * 120, extra_body={"logit_bias": {str(engine.eos_id): -100}})
    assert r.usage.prompt_tokens + r.usage.completion_tokens <= 128 and r.choices[0].finish_reason == "length"


def test_a_prompt_too_big_to_fit_is_refused_by_its_size_before_it_is_tokenized(served, engine) -> None:
    """10,000 bytes cannot be 128 tokens whatever they are: refused from the byte count, with the
    numbers, for both endpoints (tokenizing 3 MB took 4 s on the event loop every request shares)."""
    longest = max(map(len, engine.token_bytes))
    text = "x" * 10_000
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).completions.create(model=MODEL, prompt=text, max_tokens=4)
    assert e.value.code == "context_length_exceeded" and e.value.param == "prompt"
    assert f"your prompt has at least {-(-10_000 // longest):,} tokens (10,000 bytes)" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text[:5_000]},
                                                                   {"role": "user", "content": text[:5_000]}])
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages"
    assert "your messages has at least" in e.value.message and "(10,000 bytes)" in e.value.message


@pytest.mark.parametrize("kwargs, param", [
    (dict(response_format={"type": "yaml"}), "response_format.type"),
    (dict(top_logprobs=2), "top_logprobs"),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
    (dict(messages=[]), "messages"),
    (dict(max_completion_tokens=0), "max_completion_tokens"),
    (dict(tools=[{"type": "function", "function": {"name": "f g", "parameters": {}}}]), "tools[0].function.name"),
    (dict(tool_choice="required"), "tool_choice"),  # no tools to call
    # Fields this server does not implement are refused, never half-honoured (docs/serving.md's table).
    (dict(parallel_tool_calls=False), "parallel_tool_calls"),
    (dict(store=True), "store"),
    (dict(service_tier="priority"), "service_tier"),
    (dict(stream=True, stream_options={"continuous_usage_stats": True}), "stream_options.continuous_usage_stats"),
    (dict(messages=[{"role": "user", "content": "Hail", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), "messages[0].tool_calls"),
    (dict(messages=[{"role": "tool", "content": "42"}]), "messages[0].tool_call_id"),
    (dict(messages=[{"role": "assistant", "content": None, "refusal": "I cannot"}]), "messages[0].refusal"),
    (dict(messages=[{"role": "user", "content": "Hail", "audio": {"id": "a"}}]), "messages[0].audio"),
])
def test_invalid_chat_fields_are_400(served, kwargs, param) -> None:
    args = dict(model=MODEL, messages=[{"role": "user", "content": "Hail"}], max_tokens=4) | kwargs
    with pytest.raises(openai.BadRequestError) as e:
        sdk(served).chat.completions.create(**args)
    assert e.value.param == param, e.value.message


def test_ignored_fields_change_nothing_and_a_reply_goes_back_into_the_history(served) -> None:
    """metadata, user, service_tier "default" and a message's name are accepted and ignored (as the
    docs say): the greedy reply is the same as without them. A reply appended to the history as the
    SDK hands it back (with its `refusal: null`) is accepted."""
    client = sdk(served)
    base = dict(model=MODEL, messages=[{"role": "user", "content": "Hail"}], max_tokens=6, temperature=0)
    plain = client.chat.completions.create(**base)
    tagged = client.chat.completions.create(**base | dict(
        metadata={"team": "bench"}, user="u-1", service_tier="default", store=False,
        messages=[{"role": "user", "content": "Hail", "name": "Horatio"}]))
    assert tagged.choices[0].message.content == plain.choices[0].message.content
    history = [*base["messages"], plain.choices[0].message, {"role": "user", "content": "Again"}]
    assert client.chat.completions.create(**base | dict(messages=history)).choices


def test_unknown_model_and_route_are_404_in_openai_shape(served) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        sdk(served).completions.create(model="gpt-4", prompt="Thou", max_tokens=2)
    assert e.value.code == "model_not_found" and MODEL in e.value.message
    with pytest.raises(openai.NotFoundError):
        sdk(served).models.retrieve("gpt-4")
    r = httpx.get(f"{served}/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_oversized_body_is_413_and_bad_json_is_400(served) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        sdk(served).completions.create(model=MODEL, prompt="thou " * 4000, max_tokens=2)
    assert e.value.status_code == 413 and "limit" in e.value.message
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{served}/v1/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"] and "Traceback" not in r.text
    assert metric(served, 'londinium_requests_total{endpoint="/v1/completions",status="413"}', headers) >= 1


def test_a_full_queue_is_429_with_retry_after(engine, slow) -> None:
    cfg = ServeConfig(max_running=1, max_waiting=1)
    body = {"model": MODEL, "prompt": "Thou", "max_tokens": 400, "temperature": 0, "stream": True,
            "logit_bias": {str(engine.eos_id): -100}}
    with live_server(create_app(lambda: Engine.from_trained(slow), MODEL, cfg, GenerateConfig())) as url:
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", f"{url}/v1/completions", json=body) as running:
                lines = running.iter_lines()  # kept: a dropped iterator would close the stream
                next(lines)  # the first token is out: this request holds the one slot
                with httpx.Client(timeout=30) as http2, http2.stream("POST", f"{url}/v1/completions", json=body) as waiting:
                    assert waiting.status_code == 200  # queued
                    with pytest.raises(openai.RateLimitError) as e:
                        sdk(url, "x").completions.create(model=MODEL, prompt="Thou", max_tokens=2)
                    assert int(e.value.response.headers["Retry-After"]) >= 1


def test_503_while_loading_then_ready(trained) -> None:
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return Engine.from_trained(trained)

    with live_server(create_app(slow_load, MODEL, ServeConfig(), GenerateConfig()), wait_ready=False) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        with pytest.raises(openai.InternalServerError) as e:
            sdk(url, "x").completions.create(model=MODEL, prompt="Thou", max_tokens=2)
        assert e.value.status_code == 503 and e.value.code == "model_loading"
        release.set()
        from serve_helpers import wait_healthy

        wait_healthy(url)
        assert sdk(url, "x").completions.create(model=MODEL, prompt="Thou", max_tokens=2).choices


def test_draining_cancels_a_stream_with_an_error_event_then_done(engine, slow) -> None:
    app = create_app(lambda: Engine.from_trained(slow), MODEL, ServeConfig(), GenerateConfig())
    body = {"model": MODEL, "prompt": "Thou", "max_tokens": 400, "temperature": 0, "stream": True,
            "logit_bias": {str(engine.eos_id): -100}}
    with live_server(app) as url:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            next(lines)
            app.state.server.drain(0.0)  # what SIGTERM does, with no time left for running requests
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][6:])["error"]
        assert error["code"] == "shutting_down" and error["type"] == "server_error"
        after = httpx.post(f"{url}/v1/completions", json={**body, "stream": False})
        assert after.status_code == 503 and httpx.get(f"{url}/health").json()["status"] == "draining"


def test_a_dropped_stream_frees_its_slot(engine, slow, tmp_path) -> None:
    log_path = tmp_path / "requests.jsonl"
    app = create_app(lambda: Engine.from_trained(slow), MODEL, ServeConfig(request_log=str(log_path)), GenerateConfig())
    dropped = 'londinium_requests_total{endpoint="/v1/completions",status="499"}'
    body = {"model": MODEL, "prompt": "Thou art", "max_tokens": 400, "temperature": 0, "stream": True,
            "logit_bias": {str(engine.eos_id): -100}}
    with live_server(app) as url:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()  # kept: a dropped iterator would close the stream at once
            next(lines)  # the first token is out: the request holds a slot, seconds of decoding to go
            assert metric(url, "londinium_running_sequences") == 1
        deadline = time.monotonic() + 10
        while metric(url, "londinium_running_sequences") != 0:
            assert time.monotonic() < deadline, "the dropped stream still holds its slot"
            time.sleep(0.02)
        while metric(url, dropped, default=0.0) < 1:
            assert time.monotonic() < deadline, "the dropped stream was not counted as 499"
            time.sleep(0.02)
        assert app.state.server.stats()["cancelled"] == 1
    [record] = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert record["status"] == 499 and record["completion_tokens"] < 400  # cancelled, not run to the end
