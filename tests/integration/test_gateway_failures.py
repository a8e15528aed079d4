"""The gateway in front of small real servers whose failures the test chooses (500, 429, a stall, a
trickle, a stream broken off, no usage): fallback, retries, the circuit breaker, keys and limits,
the ledger against what the openai SDK received, metrics, spans and the request log."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from gateway_helpers import Upstream, gateway_server, upstream_server, write_config
from serve_helpers import metric


@pytest.fixture
def pair():
    a, b = Upstream("a"), Upstream("b")
    with upstream_server(a) as ua, upstream_server(b) as ub:
        yield a, b, ua, ub


def two_backends(ua: str, ub: str, **a_fields) -> list[dict]:
    return [{"name": "a", "base_url": ua, "model": "a", "input_price": 2.0, "output_price": 6.0, "timeout_s": 10.0, **a_fields},
            {"name": "b", "base_url": ub, "model": "b", "input_price": 1.0, "output_price": 3.0}]


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.parametrize("mode", ["500", "429", "stall", "trickle"])
def test_a_failing_backend_falls_back_to_the_next_before_any_byte_reaches_the_client(pair, tmp_path, mode) -> None:
    a, b, ua, ub = pair
    a.mode = mode
    # The cost order tries a first; its deadline is short so that a stall or a trickle is cut off soon.
    cheap_a = two_backends(ua, ub, input_price=0.5, output_price=0.5, timeout_s=0.6)
    cfg = write_config(tmp_path / "gw.toml", cheap_a, [{"alias": "m", "backends": ["a", "b"], "strategy": "cost"}], keys_required=False)
    with gateway_server(cfg) as (url, gw):
        c = client(url)
        raw = c.completions.with_raw_response.create(model="m", prompt="one two three", max_tokens=5, stream=True)
        text = "".join(ch.choices[0].text for ch in raw.parse() if ch.choices)
        assert text == "".join(b.text()) and raw.headers["x-londinium-backend"] == "b"
        assert "fell back from a:" in raw.headers["x-londinium-route"] and a.calls == 1
        answer = c.completions.with_raw_response.create(model="m", prompt="one two", max_tokens=5)
        assert answer.parse().choices[0].text == "".join(b.text()) and a.calls == 2
        rows = gw.store.ledger()
    assert [(r["backend"], r["status"], r["attempts"]) for r in rows] == [("b", 200, 2)] * 2


def test_a_stream_broken_off_mid_way_ends_with_an_error_event_and_is_recorded(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    a.mode = "drop"
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a"]}], keys_required=False)
    with gateway_server(cfg) as (url, gw):
        chunks = []
        with pytest.raises(openai.APIError, match="broke off the stream"):
            for ch in client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True):
                chunks.append(ch.choices[0].delta.content)
        assert chunks == ["a0 ", "a1 "]  # what arrived before the break was passed on at once
        [row] = gw.store.ledger()
    assert row["status"] == 502 and row["completion_tokens"] == 2 and row["usage_source"] == "estimate"


def test_the_breaker_opens_skips_the_backend_then_half_opens_and_closes(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    a.mode = "500"
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a", "b"], "strategy": "latency"}],
                       keys_required=False, breaker_failures=2, breaker_cooldown_s=1.0, retries=1)
    with gateway_server(cfg) as (url, gw):
        c = client(url)
        gw.backends["b"].observe_ttfb(10.0)  # latency order puts a first while it is allowed
        for _ in range(2):
            assert c.completions.create(model="m", prompt="x", max_tokens=2).choices[0].text == "".join(b.text())
        assert a.calls == 2 and gw.backends["a"].breaker.state == "open"
        assert metric(url, 'londinium_gateway_breaker_open{backend="a"}') == 1.0
        raw = c.completions.with_raw_response.create(model="m", prompt="x", max_tokens=2)
        assert a.calls == 2 and "a left out: breaker open" in raw.headers["x-londinium-route"]
        time.sleep(1.1)
        a.mode = "ok"  # recovered: the half-open trial succeeds and closes the breaker
        raw = c.completions.with_raw_response.create(model="m", prompt="x", max_tokens=2)
        assert raw.headers["x-londinium-backend"] == "a" and gw.backends["a"].breaker.state == "closed"


def test_every_backend_failing_is_one_error_naming_each_attempt(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    a.mode, b.mode = "429", "500"  # the cost order tries b (cheaper) first, then a: its 429 is the answer
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a", "b"], "strategy": "cost"}],
                       keys_required=False, retries=1)
    with gateway_server(cfg) as (url, gw):
        with pytest.raises(openai.RateLimitError) as e:
            client(url).completions.create(model="m", prompt="x")
        message = e.value.body["message"]
        assert "b: HTTP 500: b says 500" in message and "a: HTTP 429: a says 429" in message
        assert e.value.response.headers["retry-after"] == "1"
        assert gw.store.ledger()[-1]["status"] == 429


def test_usage_the_backend_does_not_report_is_counted_with_its_tokenizer(pair, tmp_path, tiny_workspace) -> None:
    from londinium.tokenizer.codec import load_tokenizer

    a, b, ua, ub = pair
    a.mode = "no-usage"
    backends = two_backends(ua, ub, tokenizer=str(tiny_workspace.tokenizer_file))
    cfg = write_config(tmp_path / "gw.toml", backends, [{"alias": "m", "backends": ["a"]}], keys_required=False)
    tok = load_tokenizer(tiny_workspace)
    count = lambda s: len(tok.encode(s, add_special_tokens=False).ids)  # noqa: E731
    with gateway_server(cfg) as (url, gw):
        c = client(url)
        c.completions.create(model="m", prompt="thou art the king", max_tokens=5)
        list(c.completions.create(model="m", prompt="thou art the king", max_tokens=5, stream=True))
        rows = gw.store.ledger()
    for row in rows:
        assert row["usage_source"] == "tokenizer" and row["prompt_tokens"] == count("thou art the king")
        assert row["completion_tokens"] == count("".join(a.text())) and row["cost"] == pytest.approx(
            (row["prompt_tokens"] * 2.0 + row["completion_tokens"] * 6.0) / 1e6)


def test_keys_allow_lists_rpm_budgets_and_revocation_are_enforced_exactly(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a"]}, {"alias": "n", "backends": ["b"]}])
    with gateway_server(cfg) as (url, gw):
        r = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "x"})  # the SDK always sends a key
        assert r.status_code == 401 and "Missing API key" in r.json()["error"]["message"]
        with pytest.raises(openai.AuthenticationError, match="unknown or revoked"):
            client(url, "lk-made-up").completions.create(model="m", prompt="x")
        _, limited = gw.store.create_key("limited", models=["m"], rpm=4)
        c = client(url, limited)
        with pytest.raises(openai.PermissionDeniedError, match="may not use model 'n'"):
            c.completions.create(model="n", prompt="x")
        start = time.monotonic()
        outcomes = []
        for _ in range(7):
            try:
                c.completions.create(model="m", prompt="x", max_tokens=2)
                outcomes.append(200)
            except openai.RateLimitError as e:
                outcomes.append(429)
                assert int(e.response.headers["retry-after"]) >= 1 and e.body["code"] == "rate_limit_exceeded"
        refilled = int((time.monotonic() - start) * 4 / 60)  # rpm 4 refills a request every 15 s
        assert outcomes[:4] == [200] * 4 and outcomes.count(200) <= 4 + refilled  # no false rejection, none too many
        # A budget: each request costs (1 * 2 + 5 * 6) / 1e6 dollars at a's prices (1 prompt word, 5 words back).
        _, budgeted = gw.store.create_key("budgeted", budget=3.5 * 32 / 1e6)
        c = client(url, budgeted)
        served = 0
        with pytest.raises(openai.RateLimitError, match="budget"):
            for _ in range(10):
                c.completions.create(model="m", prompt="x", max_tokens=5)
                served += 1
        assert served == 4  # admitted while spend < budget: 0, 1, 2 and 3 requests' worth
        key = next(k for k in gw.store.list_keys() if k.name == "budgeted")
        assert key.spend == pytest.approx(4 * 32 / 1e6) == pytest.approx(sum(r["cost"] for r in gw.store.ledger(key.id)))
        gw.store.revoke_key(key.id)
        with pytest.raises(openai.AuthenticationError, match="unknown or revoked"):
            c.completions.create(model="m", prompt="x")


def test_tokens_per_minute_admit_while_the_bucket_is_positive_and_charge_what_was_served(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    a.words = 20
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a"]}])
    with gateway_server(cfg) as (url, gw):
        _, secret = gw.store.create_key("tpm", tpm=60)  # one token a second comes back
        c = client(url, secret)
        c.completions.create(model="m", prompt="one two three four five", max_tokens=20)  # 25 tokens: 60 -> 35
        list(c.completions.create(model="m", prompt="one two three four five", max_tokens=20, stream=True))  # 35 -> 10
        c.completions.create(model="m", prompt="one two three four five", max_tokens=20)  # 10 > 0: admitted, -> -15
        with pytest.raises(openai.RateLimitError, match="60 tokens per minute"):
            c.completions.create(model="m", prompt="x")  # unless 16 s passed, the bucket is below 1
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in gw.store.ledger()) == 75


def test_streaming_usage_reaches_the_ledger_and_the_client_only_if_it_asked(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a"]}], keys_required=False,
                       request_log=str(tmp_path / "requests.jsonl"))
    with gateway_server(cfg, exporter="memory") as (url, gw):
        c = client(url)
        plain = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "secret words"}], stream=True))
        assert all(ch.choices and ch.usage is None for ch in plain) and a.bodies[-1]["stream_options"] == {"include_usage": True}
        asked = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "secret words"}], stream=True,
                                               stream_options={"include_usage": True}))
        assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 5
        rows = gw.store.ledger()
        assert [(r["prompt_tokens"], r["completion_tokens"], r["usage_source"]) for r in rows] == [(2, 5, "upstream")] * 2
        assert metric(url, 'londinium_gateway_tokens_total{backend="a",kind="completion",model="m"}') == 10
        spans = gw.telemetry.memory.get_finished_spans()
    [root, _] = [s for s in spans if s.name == "chat m"]
    assert root.attributes["gen_ai.usage.input_tokens"] == 2 and root.attributes["gen_ai.usage.output_tokens"] == 5
    assert root.attributes["gen_ai.response.model"] == "a" and root.attributes["gen_ai.operation.name"] == "chat"
    steps = {s.name for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id}
    assert steps == {"gateway.auth"}  # the outermost step; the others nest inside it
    assert {"gateway.usage", "gateway.limits", "gateway.route", "gateway.upstream", "chat a"} <= {s.name for s in spans}
    log = (tmp_path / "requests.jsonl").read_text()
    assert "secret" not in log and "secret" not in json.dumps([dict(s.attributes) for s in spans])
    assert [json.loads(line)["completion_tokens"] for line in log.splitlines()] == [5, 5]


def test_unknown_models_bad_bodies_and_foreign_hosts_get_openai_errors(pair, tmp_path) -> None:
    a, b, ua, ub = pair
    cfg = write_config(tmp_path / "gw.toml", two_backends(ua, ub), [{"alias": "m", "backends": ["a"]}], keys_required=False)
    with gateway_server(cfg) as (url, gw):
        with pytest.raises(openai.NotFoundError, match="routes: m"):
            client(url).completions.create(model="nope", prompt="x")
        assert [m.id for m in client(url).models.list().data] == ["m"]
        r = httpx.post(url + "/v1/completions", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "x"}, headers={"Host": "evil.example"})
        assert r.status_code == 421
        assert httpx.get(url + "/health").json()["backends"]["a"]["breaker"] == "closed"
