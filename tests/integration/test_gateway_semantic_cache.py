"""The semantic cache in a served gateway, behind the exact cache, in front of the small real upstream of
gateway_helpers, through the official openai client: a reworded question answered from the cache,
with its decision in the header, the ledger (0 tokens, $0), the request log and /metrics."""

from __future__ import annotations

import json
import random

import httpx
import openai
import tomli_w
from gateway_helpers import Upstream, gateway_server, upstream_server, write_config

from londinium.retrieve.static import train_static

WORDS = ("thus saith the lord king queen heaven earth night day light love death sword crown blood grace mercy "
         "what line follows which comes after where does this come from who speaks").split()


def test_a_served_gateway_answers_a_reworded_question_from_the_semantic_cache(tmp_path) -> None:
    rng = random.Random(0)
    train_static([" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(300)], dim=32).save(tmp_path / "embedder.npz")
    upstream = Upstream(words=3)
    with upstream_server(upstream) as base:
        cfg = write_config(tmp_path / "gw.toml", [{"name": "fake", "base_url": base, "model": "fake"}], [{"alias": "m", "backends": ["fake"]}],
                           chain=["auth", "usage", "limits", "route", "cache", "semantic_cache", "upstream"],
                           request_log=str(tmp_path / "requests.jsonl"))
        cfg.write_text(cfg.read_text() + "\n" + tomli_w.dumps({"semantic_cache": {"embedder_path": "embedder.npz"}}))
        with gateway_server(cfg, exporter="memory") as (url, gw):
            _, secret = gw.store.create_key("reader")
            c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)
            asked = ['What line follows "Thus saith the Lord"?', "what line follows thus saith the lord", 'Who speaks "love and mercy"?']
            raws = [c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": q}], temperature=0)
                    for q in asked]
            assert [(r.headers["x-londinium-cache"], r.headers["x-londinium-semantic-cache"]) for r in raws] == \
                [("miss", "miss"), ("miss", "hit"), ("miss", "miss")]
            first, again, other = (r.parse().choices[0].message.content for r in raws)
            assert again == first and upstream.calls == 2
            rows = gw.store.ledger()
            metrics = httpx.get(url + "/metrics").text
            gw.telemetry.provider.force_flush()
            spans = gw.telemetry.memory.get_finished_spans()
    hit = [r for r in rows if json.loads(r["outcome"]).get("semantic_cache") == "hit"]
    assert len(hit) == 1 and (hit[0]["completion_tokens"], hit[0]["cost"], hit[0]["usage_source"]) == (0, 0, "cache")
    logged = [json.loads(line)["outcome"] for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [o["semantic_cache_reason"] for o in logged] == ["stored", "similar", "stored"]
    assert 'londinium_gateway_semantic_cache_total{decision="hit",model="m",reason="similar"} 1.0' in metrics
    assert "londinium_gateway_semantic_similarity_bucket" in metrics
    served = [dict(s.attributes) for s in spans if s.name == "chat m"]
    assert sorted(a["londinium.gateway.semantic_cache"] for a in served) == ["hit", "miss", "miss"]
    assert {s.name for s in spans} >= {"gateway.cache", "gateway.semantic_cache"}  # each step is a span of its own
    assert not any("lord" in str(v).lower() for a in served for v in a.values())  # no question text in a span
    assert (tmp_path / "semantic-cache.npz").is_file()  # saved on shutdown, beside the config


def test_two_gateways_share_semantic_hits_through_a_real_redis(tmp_path) -> None:
    from gateway_helpers import redis_server

    rng = random.Random(0)
    train_static([" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(300)], dim=32).save(tmp_path / "embedder.npz")
    upstream = Upstream(words=3)
    chain = ["auth", "usage", "limits", "route", "semantic_cache", "upstream"]
    with redis_server() as redis_url, upstream_server(upstream) as base:
        configs = []
        for name in ("a", "b"):
            cfg = write_config(tmp_path / f"{name}.toml", [{"name": "fake", "base_url": base, "model": "fake"}],
                               [{"alias": "m", "backends": ["fake"]}], chain=chain)
            cfg.write_text(cfg.read_text() + "\n" + tomli_w.dumps({"semantic_cache": {"embedder_path": "embedder.npz", "redis_url": redis_url}}))
            configs.append(cfg)
        with gateway_server(configs[0]) as (url_a, gw_a), gateway_server(configs[1]) as (url_b, _):
            _, secret = gw_a.store.create_key("shared")  # one database beside both configs: the same key, the same tenant
            ask = lambda url, q: openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30).chat.completions \
                .with_raw_response.create(model="m", messages=[{"role": "user", "content": q}], temperature=0)  # noqa: E731
            first = ask(url_a, 'What line follows "Thus saith the Lord"?')
            again = ask(url_b, "what line follows thus saith the lord")  # the other gateway: a hit on what gateway a stored
            other = ask(url_b, 'What line follows "Thus saith the King"?')  # the same words but one of the quote: not a hit
            assert [r.headers["x-londinium-semantic-cache"] for r in (first, again, other)] == ["miss", "hit", "miss"]
            assert again.parse().choices[0].message.content == first.parse().choices[0].message.content and upstream.calls == 2
            assert ask(url_a, "what line follows: thus saith the king").headers["x-londinium-semantic-cache"] == "hit"  # b's, in a
    assert not (tmp_path / "semantic-cache.npz").exists()  # with Redis the stream is the cache's memory, not a file
