"""The `token_limits` step after the real `route` step, with the gateway's real SQLite store and an
upstream that answers with fixed usage: prompt and completion length limits per route and per key
(the smaller wins, the error names it), and a route's tokens per minute shared by every key."""

from __future__ import annotations

import asyncio
import copy

import pytest

from londinium.errors import ConfigError
from londinium.gateway.chain import Chain, Exchange, Reply
from londinium.gateway.runtime import Gateway
from londinium.gateway.settings import parse_settings
from londinium.serve.errors import APIError


class Counted:
    """Answers with usage of 20 tokens (JSON, or a stream whose last chunk carries it) and keeps the requests."""

    name = "upstream"

    def __init__(self):
        self.requests = []

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        self.requests.append(copy.deepcopy(ex.body))
        usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
        if not ex.stream:
            return Reply(200, body={"choices": [{"index": 0, "message": {"role": "assistant", "content": "ay"}}], "usage": usage})

        async def events():
            yield {"choices": [{"index": 0, "delta": {"content": "ay"}, "finish_reason": "stop"}]}
            yield {"choices": [], "usage": usage}
        return Reply(200, events=events())


class Key:
    def __init__(self, id: str, name: str):
        self.id, self.name = id, name


@pytest.fixture
def chain(tmp_path):
    data = {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "token_limits", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
            "routes": [{"alias": "short", "backends": ["a"], "max_prompt_tokens": 10, "max_completion_tokens": 50},
                       {"alias": "metered", "backends": ["a"], "tpm": 30}],
            "token_limits": {"keys": {"tight": {"max_prompt_tokens": 5, "max_completion_tokens": 8}}}}
    gw = Gateway(parse_settings(data, "gw.toml"))
    route, step, _ = gw.chain.steps
    upstream = Counted()
    yield Chain([route, step, upstream]), upstream, gw
    asyncio.run(gw.close())


def call(chain: Chain, model: str, text: str, key=None, drain: bool = True, **extra) -> Exchange:
    ex = Exchange("chat", {"model": model, "messages": [{"role": "user", "content": text}], **extra}, key=key)
    reply = asyncio.run(chain(ex))
    if reply.events is not None and drain:
        async def read():
            return [c async for c in reply.events]
        asyncio.run(read())
    return ex


def refused(chain: Chain, *args, **kwargs) -> APIError:
    with pytest.raises(APIError) as e:
        call(chain, *args, **kwargs)
    return e.value


def test_length_limits_name_the_limit_whose_it_is_and_the_count(chain) -> None:
    c, upstream, _ = chain
    call(c, "short", "Who art thou", max_tokens=50)  # ~3 tokens at 4 bytes a token
    e = refused(c, "short", "Who art thou that standest there in the night?")
    assert (e.status, e.code, e.param) == (400, "prompt_too_long", "messages")
    assert "the prompt has 12 tokens (estimated at 4 bytes a token); max_prompt_tokens of route 'short' is 10" in e.message
    e = refused(c, "short", "Who art thou, good sirrah?", key=Key("k1", "tight"))
    assert "max_prompt_tokens of key 'tight' is 5" in e.message  # the key's is the smaller
    e = refused(c, "short", "Who", max_tokens=51)
    assert (e.status, e.code, e.param) == (400, "max_tokens_too_large", "max_tokens") and "max_completion_tokens of route 'short' (50)" in e.message
    call(c, "short", "Who")
    assert upstream.requests[-1]["max_tokens"] == 50  # no max_tokens asked: the limit is asked for
    assert refused(c, "short", "Who", key=Key("k1", "tight"), max_completion_tokens=9).param == "max_completion_tokens"


def test_a_route_tokens_per_minute_is_shared_by_every_key_and_streams_are_debited(chain) -> None:
    c, upstream, gw = chain
    call(c, "metered", "one", key=Key("k1", "a"), stream=True)  # 20 of 30 tokens
    call(c, "metered", "two", key=Key("k2", "b"))  # the bucket was positive: admitted, now -10
    e = refused(c, "metered", "three", key=Key("k3", "c"))
    assert (e.status, e.code) == (429, "rate_limit_exceeded") and "route 'metered' used its 30 tokens per minute" in e.message
    assert int(e.headers["Retry-After"]) >= 1
    assert len(upstream.requests) == 2
    assert gw.telemetry.metrics.registry.get_sample_value("londinium_gateway_token_limit_total",
                                                           {"model": "metered", "limit": "route_tpm"}) == 1


def test_bad_key_limits_are_one_line_naming_the_field() -> None:
    base = {"backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}], "routes": [{"alias": "m", "backends": ["a"]}]}
    for keys, message in [({"p": {"max_prompt": 5}}, "token_limits.keys.p.max_prompt: unknown limit"),
                          ({"p": {"max_prompt_tokens": -1}}, "token_limits.keys.p.max_prompt_tokens = -1: must be a whole number")]:
        with pytest.raises(ConfigError, match=message):
            parse_settings({**base, "token_limits": {"keys": keys}}, "gw.toml")
