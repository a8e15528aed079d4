"""The gateway's pieces alone: its config checks, the circuit breaker, the router's orders, the
store's token buckets and ledger (real SQLite), and the request classifier."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from londinium.errors import ConfigError, LondiniumError
from londinium.gateway.backends import Backend
from londinium.gateway.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from londinium.gateway.router import Router
from londinium.gateway.settings import parse_settings
from londinium.gateway.store import LedgerRow, Store
from londinium.serve.errors import APIError


def config(**over) -> dict:
    data = {"backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"},
                         {"name": "b", "base_url": "http://127.0.0.1:2/v1", "model": "b"}],
            "routes": [{"alias": "m", "backends": ["a", "b"]}]}
    data.update(over)
    return data


@pytest.mark.parametrize("change, said", [
    ({"routes": [{"alias": "m", "backends": ["a", "c"]}]}, "routes[0] ('m') names an unknown backend 'c'; known backends: a, b"),
    ({"routes": [{"alias": "m", "backends": ["a"]}, {"alias": "m", "backends": ["b"]}]}, "two routes have the alias 'm'"),
    ({"backends": [{"name": "a", "base_url": "http://x/v1", "model": "a", "input_price": -1}]}, "backends[0].input_price = -1.0: must be in [0, 1000000]"),
    ({"backends": [{"name": "a", "base_url": "http://x/v1", "model": "a", "output_price": "cheap"}]}, "backends[0].output_price: expected float"),
    ({"backends": [{"name": "a", "base_url": "ftp://x", "model": "a"}]}, "backends[0].base_url = 'ftp://x': must match"),
    ({"backends": [{"name": "a", "base_url": "http://x/v1"}]}, "backends[0]: 'model' is required"),
    ({"backends": [{"name": "a", "base_url": "http://x/v1", "model": "a", "speed": 1}]}, "backends[0]: unknown key 'speed'"),
    ({"gateway": {"chain": ["auth", "upstream", "route"]}}, "gateway.chain must end with 'upstream'"),
    ({"routes": [{"alias": "m", "backends": ["a"], "strategy": "fastest"}]}, "routes[0].strategy = 'fastest': must be one of"),
    ({"routes": []}, "no [[routes]]"),
    ({"routes": [{"alias": "m", "backends": ["a"], "classes": {"x": ["a"]}}]}, "has classes but no classifier"),
    ({"guardrails": {}}, "unknown table [guardrails]"),
    ({"cache": {"store": "redis"}}, "cache.store = 'redis' needs cache.redis_url"),
    ({"cache": {"ttl_s": 0}}, "cache.ttl_s = 0.0: must be"),
    ({"cache": {"redis_url": "http://x"}}, "cache.redis_url = 'http://x': must match"),
    ({"routes": [{"alias": "m", "backends": ["a"], "cache_ttl_s": -1}]}, "routes[0].cache_ttl_s = -1.0: must be"),
])
def test_a_bad_gateway_config_is_one_line_naming_the_field(change, said) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(config(**change), "gw.toml")
    assert said in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("gw.toml")


def test_an_unknown_chain_step_is_named_when_the_gateway_is_built(tmp_path) -> None:
    from londinium.gateway.runtime import Gateway

    settings = parse_settings(config(gateway={"chain": ["auth", "guard", "upstream"], "database": str(tmp_path / "g.db")}), "gw.toml")
    with pytest.raises(ConfigError, match="unknown step 'guard'; built-in steps: auth, usage, limits, route, token_limits, pii, output_filter, cache, semantic_cache, "
                                             "response_schema, upstream"):
        Gateway(settings)


def test_the_gateway_starts_without_presidio_until_the_chain_names_pii(tmp_path) -> None:
    """Presidio is the guardrails extra: a gateway without `pii` never imports it, and one with `pii`
    but no Presidio is one ConfigError saying what to install (Presidio made unimportable in a fresh
    interpreter, as on a machine without the extra)."""
    import subprocess
    import sys

    script = f"""
import sys
from londinium.errors import ConfigError
from londinium.gateway.runtime import Gateway
from londinium.gateway.settings import parse_settings
data = {config(gateway={"database": str(tmp_path / "g.db")})!r}
Gateway(parse_settings(data, "gw.toml")).store.close()
assert "presidio_analyzer" not in sys.modules and "spacy" not in sys.modules
sys.modules["presidio_analyzer"] = None  # what a missing package looks like to `import`
data["gateway"]["chain"] = ["route", "pii", "upstream"]
try:
    Gateway(parse_settings(data, "gw.toml"))
except ConfigError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the gateway's `pii` step needs Microsoft Presidio: pip install 'londinium[guardrails]'" in out.stdout


def test_breaker_opens_after_consecutive_failures_and_half_opens_for_one_trial() -> None:
    now = [0.0]
    b = Breaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    b.failure()
    b.success()  # a success in between resets the count
    b.failure()
    assert b.state == CLOSED and b.acquire()
    b.failure()
    assert b.state == OPEN and not b.acquire()
    now[0] = 10.0
    assert b.state == HALF_OPEN and b.acquire() and not b.acquire()  # one trial at a time
    b.failure()
    assert b.state == OPEN  # the trial failed: open for another cooldown
    now[0] = 20.0
    assert b.acquire()
    b.success()
    assert b.state == CLOSED and b.acquire() and b.acquire()


def backends(**fields) -> dict[str, Backend]:
    s = parse_settings(config(backends=[{"name": n, "base_url": "http://127.0.0.1:1/v1", "model": n, **f}
                                        for n, f in fields.items()], routes=[{"alias": "m", "backends": list(fields)}]))
    return {b.name: Backend(b, s.gateway) for b in s.backends}, s


def route_of(s, **over):
    r = s.routes[0]
    for k, v in over.items():
        setattr(r, k, v)
    return r


def test_weighted_routing_follows_the_weights() -> None:
    bs, s = backends(a={"weight": 3.0}, b={"weight": 1.0})
    router = Router(route_of(s), bs, random.Random(0))
    firsts = Counter(router.decide({"prompt": "hi"}, "completion")[0][0].name for _ in range(2000))
    assert 0.70 < firsts["a"] / 2000 < 0.80  # 3:1 is 75%


def test_least_busy_latency_and_cost_order_the_group() -> None:
    bs, s = backends(a={"input_price": 5.0, "output_price": 5.0}, b={"input_price": 1.0, "output_price": 2.0})
    bs["a"].in_flight = 3
    assert [b.name for b in Router(route_of(s, strategy="least-busy"), bs, random.Random(0)).decide({"prompt": "x"}, "completion")[0]] == ["b", "a"]
    bs["a"].observe_ttfb(0.01)
    bs["b"].observe_ttfb(0.2)
    assert [b.name for b in Router(route_of(s, strategy="latency"), bs, random.Random(0)).decide({"prompt": "x"}, "completion")[0]] == ["a", "b"]
    order, reason = Router(route_of(s, strategy="cost"), bs, random.Random(0)).decide({"prompt": "x", "max_tokens": 10}, "completion")
    assert [b.name for b in order] == ["b", "a"] and reason.startswith("cost")


def test_a_request_goes_only_to_backends_whose_context_holds_it() -> None:
    bs, s = backends(small={"context": 64}, big={"context": 4096})
    router = Router(route_of(s, strategy="cost"), bs, random.Random(0))
    order, reason = router.decide({"messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 8}, "chat")
    assert [b.name for b in order] == ["big"] and "small left out: ~133 tokens > its context 64" in reason
    with pytest.raises(APIError) as e:
        router.decide({"prompt": "word " * 5000}, "completion")
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"


def test_open_breakers_leave_a_backend_out_and_all_open_is_503() -> None:
    bs, s = backends(a={}, b={})
    router = Router(route_of(s), bs, random.Random(0))
    for _ in range(3):
        bs["a"].breaker.failure()
    order, reason = router.decide({"prompt": "x"}, "completion")
    assert [b.name for b in order] == ["b"] and "a left out: breaker open" in reason
    for _ in range(3):
        bs["b"].breaker.failure()
    with pytest.raises(APIError) as e:
        router.decide({"prompt": "x"}, "completion")
    assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1


def test_token_bucket_gives_exactly_its_capacity_to_concurrent_takers(tmp_path) -> None:
    store = Store(str(tmp_path / "g.db"), threads=8)
    key, _ = store.create_key("k", rpm=50)
    now = time.time()
    results: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(10):
            wait = store.take(key.id, "rpm", 50, 0.0, 1.0, 1.0, now)  # no refill: exactly 50 tokens
            with lock:
                results.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w == 0 for w in results) == 50 and len(results) == 80
    store.close()


def test_the_ledger_and_the_keys_spend_agree(tmp_path) -> None:
    store = Store(str(tmp_path / "g.db"))
    key, secret = store.create_key("k", tpm=1000)
    assert store.find_key(secret).id == key.id and store.find_key("lk-wrong") is None
    t0, rate = time.time(), 1000 / 60
    assert store.take(key.id, "tpm", 1000, rate, 1.0, 0.0, t0) == 0.0
    rng = random.Random(1)
    for i in range(40):  # all at t0: no refill between them
        store.record(LedgerRow(f"r{i}", key.id, "m", "a", "a", i % 2 == 0, 200, rng.randint(1, 9), rng.randint(0, 9),
                               cost=rng.random() / 100, time=t0), store.find_key(secret))
    rows = store.ledger(key.id)
    assert store.find_key(secret).spend == pytest.approx(sum(r["cost"] for r in rows), abs=1e-12)
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    wait = store.take(key.id, "tpm", 1000, rate, 1000 + 1.0, 0.0, t0)  # how far the bucket is from full + 1
    assert wait == pytest.approx((tokens + 1.0) / rate, rel=1e-9)
    [total] = store.usage([])
    assert total["requests"] == 40 and total["prompt_tokens"] + total["completion_tokens"] == tokens
    assert store.revoke_key(key.id).revoked is not None
    with pytest.raises(LondiniumError, match="no key 'key_nope'"):
        store.revoke_key("key_nope")
    store.close()


def test_the_classifier_beats_the_majority_baseline_on_held_out_examples(tmp_path) -> None:
    pytest.importorskip("sklearn")
    from londinium.gateway.classifier import Classifier, train_router

    rng = random.Random(0)
    period = "thou thee hath doth lord king heaven sword crown mercy honour grace".split()
    modern = "server request python function install error network database configure upload".split()
    examples = [{"text": " ".join(rng.choice(words) for _ in range(12)), "label": label, "group": f"{label}{i // 3}"}
                for label, words in (("domain", period), ("general", modern)) for i in range(150)]
    examples += [{"text": " ".join(rng.choice(period) for _ in range(12)), "label": "domain", "group": f"x{i}"} for i in range(100)]
    report = train_router(examples, tmp_path / "router.json", seed=0)
    assert report["accuracy"] > report["majority_baseline"] and report["majority_label"] == "domain"
    classifier = Classifier.load(tmp_path / "router.json")
    assert classifier.predict("the king hath mercy upon thee")[0] == "domain"
    label, p = classifier.predict("configure the database server and install python")
    assert label == "general" and 0.5 < p <= 1
    (tmp_path / "bad.json").write_text('{"format": "pickle"}')
    with pytest.raises(LondiniumError, match="not a router file"):
        Classifier.load(tmp_path / "bad.json")
