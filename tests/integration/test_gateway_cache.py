"""The exact cache in a served gateway, in front of the small real upstream of gateway_helpers: a
stream replayed as the same bytes, the decision in the header, the ledger, the request log and
/metrics; then the Redis store through a real redis-server (skipped without one, except under CI):
two gateways sharing its entries, TTLs set in Redis, and a Redis that goes away turning into bypasses."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from gateway_helpers import Upstream, gateway_server, redis_server, upstream_server, write_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Who art thou"}], "temperature": 0, "max_tokens": 5}


def config(tmp_path, url: str, name: str = "gw.toml", **cache) -> object:
    routes = [{"alias": "m", "backends": ["fake"]}, {"alias": "brief", "backends": ["fake"], "cache_ttl_s": 0.2}]
    cfg = write_config(tmp_path / name, [{"name": "fake", "base_url": url, "model": "fake"}], routes,
                       chain=["auth", "usage", "limits", "route", "cache", "upstream"], request_log=str(tmp_path / "requests.jsonl"))
    if cache:
        cfg.write_text(cfg.read_text() + "\n[cache]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in cache.items()))
    return cfg


def stream_bytes(url: str, secret: str, body: dict) -> tuple[str, bytes]:
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True},
                      headers={"Authorization": f"Bearer {secret}"}, timeout=30) as r:
        assert r.status_code == 200
        return r.headers["x-londinium-cache"], r.read()


def test_a_served_gateway_replays_a_stream_byte_for_byte_and_accounts_the_hit(tmp_path) -> None:
    upstream = Upstream(words=4)
    with upstream_server(upstream) as base, gateway_server(config(tmp_path, base)) as (url, gw):
        _, secret = gw.store.create_key("reader")
        c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)
        raws = [c.chat.completions.with_raw_response.create(**CHAT) for _ in range(2)]
        assert [r.headers["x-londinium-cache"] for r in raws] == ["miss", "hit"]
        first, again = (r.parse() for r in raws)
        assert again.choices[0].message.content == first.choices[0].message.content == "fake0 fake1 fake2 fake3 "
        assert again.usage.completion_tokens == first.usage.completion_tokens == 4  # the client sees the answer's usage

        (miss, original), (hit, replayed) = stream_bytes(url, secret, CHAT), stream_bytes(url, secret, CHAT)
        assert (miss, hit) == ("miss", "hit") and replayed == original and original.endswith(b"data: [DONE]\n\n")
        asked = list(c.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
        assert asked[-1].usage.completion_tokens == 4  # a hit still gives the usage chunk to a client that asks
        sampled = c.chat.completions.with_raw_response.create(**{**CHAT, "temperature": 0.7})
        assert sampled.headers["x-londinium-cache"] == "bypass"
        assert upstream.calls == 3  # one JSON, one stream, one sampled: every hit came from the cache
        rows = gw.store.ledger()
        metrics = httpx.get(url + "/metrics").text
    for r in rows:
        r["outcome"] = json.loads(r["outcome"])  # the ledger keeps it as JSON text
    decided = [(r["outcome"].get("cache"), r["stream"], r["completion_tokens"], r["usage_source"]) for r in rows]
    assert sorted(decided) == sorted([("miss", False, 4, "upstream"), ("hit", False, 0, "cache"), ("miss", True, 4, "upstream"),
                                      ("hit", True, 0, "cache"), ("hit", True, 0, "cache"), ("bypass", False, 4, "upstream")])
    assert all(r["cost"] == 0 for r in rows if r["outcome"]["cache"] == "hit")
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert sorted(r["outcome"]["cache_reason"] for r in logged) == ["found"] * 3 + ["sampled"] + ["stored"] * 2
    assert 'londinium_gateway_cache_total{decision="hit",model="m",reason="found"} 3.0' in metrics
    assert 'londinium_gateway_cache_total{decision="miss",model="m",reason="stored"} 2.0' in metrics


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


def test_two_gateways_share_entries_in_a_real_redis_with_their_ttl(redis_url, tmp_path) -> None:
    import redis

    upstream = Upstream(words=3)
    with upstream_server(upstream) as base, \
            gateway_server(config(tmp_path, base, "a.toml", store="redis", redis_url=redis_url, ttl_s=600)) as (url_a, gw_a), \
            gateway_server(config(tmp_path, base, "b.toml", store="redis", redis_url=redis_url, ttl_s=600)) as (url_b, gw_b):
        key, secret = gw_a.store.create_key("shared")  # one database beside both configs: the same key and tenant
        assert gw_b.store.find_key(secret).id == key.id
        a = openai.OpenAI(base_url=url_a + "/v1", api_key=secret, max_retries=0, timeout=30)
        b = openai.OpenAI(base_url=url_b + "/v1", api_key=secret, max_retries=0, timeout=30)
        assert a.chat.completions.with_raw_response.create(**CHAT).headers["x-londinium-cache"] == "miss"
        from_b = b.chat.completions.with_raw_response.create(**CHAT)
        assert from_b.headers["x-londinium-cache"] == "hit" and from_b.parse().choices[0].message.content == "fake0 fake1 fake2 "
        (miss, original), (hit, replayed) = stream_bytes(url_a, secret, CHAT), stream_bytes(url_b, secret, CHAT)
        assert (miss, hit) == ("miss", "hit") and replayed == original
        assert upstream.calls == 2

        client = redis.Redis.from_url(redis_url)
        ttls = [client.pttl(k) for k in client.scan_iter("londinium:cache:*")]
        assert len(ttls) == 2 and all(0 < t <= 600_000 for t in ttls)
        brief = {**CHAT, "model": "brief"}
        assert a.chat.completions.with_raw_response.create(**brief).headers["x-londinium-cache"] == "miss"
        assert sorted(0 < client.pttl(k) <= 200 for k in client.scan_iter("londinium:cache:*")) == [False, False, True]
        time.sleep(0.3)  # past the route's 0.2 s: Redis has dropped the entry
        assert a.chat.completions.with_raw_response.create(**brief).headers["x-londinium-cache"] == "miss"
        client.close()


def test_a_redis_that_goes_away_turns_into_bypasses_not_errors(tmp_path) -> None:
    import redis

    upstream = Upstream(words=2)
    with redis_server() as url, upstream_server(upstream) as base, \
            gateway_server(config(tmp_path, base, store="redis", redis_url=url)) as (gw_url, gw):
        _, secret = gw.store.create_key("k")
        c = openai.OpenAI(base_url=gw_url + "/v1", api_key=secret, max_retries=0, timeout=30)
        assert c.chat.completions.with_raw_response.create(**CHAT).headers["x-londinium-cache"] == "miss"
        redis.Redis.from_url(url).shutdown(nosave=True)
        raw = c.chat.completions.with_raw_response.create(**CHAT)
        assert raw.status_code == 200 and raw.headers["x-londinium-cache"] == "bypass"
        assert raw.parse().choices[0].message.content == "fake0 fake1 " and upstream.calls == 2
        assert json.loads(gw.store.ledger()[-1]["outcome"]) == {"cache": "bypass", "cache_reason": "store-unavailable"}
