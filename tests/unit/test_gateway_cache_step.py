"""The exact cache alone (gateway/cache.py): the `cache` step in a chain of the real `route` step and a
canned upstream whose every answer is new, so a wrong hit shows as another request's answer. The
key's property test, TTL, the size bounds, who bypasses, and stream replay."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from londinium.gateway.cache import HEADER, Cache, cache_key, deterministic
from londinium.gateway.cache_store import MemoryStore
from londinium.gateway.chain import Chain, Exchange, Reply
from londinium.gateway.runtime import Gateway
from londinium.gateway.settings import parse_settings
from londinium.gateway.steps import Route
from londinium.serve.errors import APIError
from londinium.serve.sse import sse


class Canned:
    """Stands where `upstream` would: each call answers `answer-<n>`, as JSON or as a stream of words."""

    name = "upstream"

    def __init__(self):
        self.calls = 0

    async def __call__(self, ex: Exchange, call_next) -> Reply:
        self.calls += 1
        text = f"answer-{self.calls}"
        if not ex.stream:
            return Reply(200, body={"id": f"c{self.calls}", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        return Reply(200, events=self._events(text))

    async def _events(self, text: str):
        for part in (text[:3], text[3:], ""):
            yield {"id": "s", "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": "stop" if not part else None}]}
        yield {"id": "s", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


@pytest.fixture
def gateway(tmp_path):
    def make(**cache) -> tuple[Gateway, Cache, Canned, Chain]:
        data = {"gateway": {"database": str(tmp_path / "gw.db"), "chain": ["route", "cache", "upstream"]},
                "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}],
                "routes": [{"alias": "m", "backends": ["a"]}, {"alias": "n", "backends": ["a"]},
                           {"alias": "off", "backends": ["a"], "cache": False},
                           {"alias": "sampled", "backends": ["a"], "cache_sampled": True}],
                "cache": cache}
        gw = Gateway(parse_settings(data, "gw.toml"))
        route, step, _ = gw.chain.steps  # the gateway's own steps; a canned answer where `upstream` would call
        assert isinstance(route, Route) and isinstance(step, Cache)
        made.append(gw)
        canned = Canned()
        return gw, step, canned, Chain([route, step, canned])

    made: list[Gateway] = []
    yield make
    for gw in made:
        gw.store.close()


def answer(reply: Reply) -> str:
    """The text the client gets, from a JSON answer or a stream."""
    if reply.events is None:
        return reply.body["choices"][0]["message"]["content"]

    async def read():
        return "".join(c["choices"][0]["delta"]["content"] for c in [x async for x in reply.events] if c["choices"])

    return asyncio.run(read())


def ask(chain: Chain, body: dict, key=None, endpoint: str = "chat") -> tuple[str, str]:
    ex = Exchange(endpoint, copy.deepcopy(body), key=key)
    reply = asyncio.run(chain(ex))
    return reply.headers[HEADER], answer(reply)


# Every field of a request that can change its answer, each with a strategy for its value.
TEXT = st.text(max_size=12)
FIELDS = {
    "model": st.sampled_from(["m", "n"]),
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT}),
                         min_size=1, max_size=3),
    "temperature": st.sampled_from([0, 0.0, 0.2, 1, 1.5]),
    "seed": st.integers(-2**40, 2**40),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 4096),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=3)),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(st.integers(0, 50_000).map(str), st.integers(-100, 100), max_size=2),
    "n": st.integers(1, 4),
    "stream": st.booleans(),
    "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.from_regex(r"[a-z_]{1,8}", fullmatch=True), "parameters": st.dictionaries(TEXT, st.sampled_from(["string", "integer"]), max_size=2)})}),
        max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "response_format": st.one_of(st.just({"type": "text"}), st.just({"type": "json_object"}), st.builds(
        lambda props: {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "properties": props}}},
        st.dictionaries(TEXT, st.just({"type": "string"}), max_size=3))),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "user": TEXT,
}
OPTIONAL = sorted(set(FIELDS) - {"model", "messages", "seed"})  # the seed keeps every request cacheable


@st.composite
def request_pair(draw) -> tuple[dict, dict, int, int]:
    """A request, another that differs from it in one field (a value changed, or an optional field
    added or left out) or only in its tenant, and the two tenants."""
    body = {"model": draw(FIELDS["model"]), "messages": draw(FIELDS["messages"]), "seed": draw(FIELDS["seed"])}
    for name in draw(st.lists(st.sampled_from(OPTIONAL), unique=True, max_size=6)):
        body[name] = draw(FIELDS[name])
    other = copy.deepcopy(body)
    field = draw(st.sampled_from(sorted(FIELDS) + ["tenant"]))
    tenant, other_tenant = 0, 0
    if field == "tenant":
        other_tenant = 1
    elif field in body and field in OPTIONAL and draw(st.booleans()):
        del other[field]
    else:
        other[field] = draw(FIELDS[field].filter(lambda v: json.dumps(v) != json.dumps(body.get(field))))
    return body, other, tenant, other_tenant


def test_requests_that_differ_in_any_field_never_share_an_entry_and_identical_ones_do(gateway) -> None:
    gw, step, canned, chain = gateway()
    keys = [gw.store.create_key(f"tenant{i}")[0] for i in range(2)]
    seen = {"wrong hits": 0, "pairs": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(request_pair())
    def check(pair) -> None:
        body, other, t1, t2 = pair
        asyncio.run(step.store.close())  # an empty cache for each example
        first = ask(chain, body, keys[t1])
        second = ask(chain, other, keys[t2])
        assert first[0] == "miss"
        if second[0] != "miss" or second[1] == first[1]:
            seen["wrong hits"] += 1
        assert ask(chain, body, keys[t1]) == ("hit", first[1])  # identical: the same entry
        assert ask(chain, other, keys[t2]) == ("hit", second[1])
        seen["pairs"] += 1

    check()
    assert seen["wrong hits"] == 0 and seen["pairs"] >= 300


def test_the_key_ignores_only_stream_options_and_the_order_of_request_fields() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0}
    reordered = dict(reversed(list(body.items())))
    assert cache_key("chat", body, "t") == cache_key("chat", reordered, "t")
    assert cache_key("chat", body, "t") == cache_key("chat", {**body, "stream_options": {"include_usage": True}}, "t")
    assert cache_key("chat", body, "t") != cache_key("completion", body, "t")
    assert cache_key("chat", body, "t") != cache_key("chat", {**body, "x_new_param": 1}, "t")  # unknown fields are in it
    schema = {"type": "object", "properties": {"a": {}, "b": {}}}
    flipped = {"type": "object", "properties": {"b": {}, "a": {}}}  # may steer the output's order: not the same request
    assert cache_key("chat", {**body, "response_format": schema}, "t") != cache_key("chat", {**body, "response_format": flipped}, "t")


def test_only_deterministic_requests_are_cached_unless_the_route_opts_in(gateway) -> None:
    assert deterministic({"temperature": 0}) and deterministic({"temperature": 0.9, "seed": 7})
    assert not deterministic({}) and not deterministic({"temperature": 0.5}) and not deterministic({"temperature": False})
    gw, step, canned, chain = gateway()
    sampled = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0.8}
    assert ask(chain, sampled) == ("bypass", "answer-1") and ask(chain, sampled) == ("bypass", "answer-2")
    assert ask(chain, {**sampled, "model": "sampled"}) == ("miss", "answer-3")
    assert ask(chain, {**sampled, "model": "sampled"}) == ("hit", "answer-3")
    greedy = {**sampled, "temperature": 0, "model": "off"}
    assert ask(chain, greedy)[0] == ask(chain, greedy)[0] == "bypass" and canned.calls == 5
    metrics = gw.telemetry.metrics.render().decode()
    assert 'londinium_gateway_cache_total{decision="bypass",model="m",reason="sampled"} 2.0' in metrics
    assert 'londinium_gateway_cache_total{decision="bypass",model="off",reason="route-off"} 2.0' in metrics
    assert 'londinium_gateway_cache_total{decision="hit",model="sampled",reason="found"} 1.0' in metrics


def test_a_key_named_in_bypass_keys_never_uses_the_cache(gateway) -> None:
    gw, step, canned, chain = gateway(bypass_keys=["batch"])
    batch, other = gw.store.create_key("batch")[0], gw.store.create_key("other")[0]
    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0}
    assert [ask(chain, body, batch)[0] for _ in range(2)] == ["bypass", "bypass"]
    assert [ask(chain, body, other)[0] for _ in range(2)] == ["miss", "hit"]


def test_an_entry_expires_after_its_ttl() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=10, max_bytes=1000, clock=lambda: now[0])

    async def run():
        await store.put("k", b"v", ttl_s=5)
        now[0] = 4.9
        assert await store.get("k") == b"v"
        now[0] = 5.0
        assert await store.get("k") is None and len(store) == 0 and store.bytes == 0

    asyncio.run(run())


def test_the_route_ttl_reaches_the_store(gateway) -> None:
    gw, step, canned, chain = gateway()
    now = [0.0]
    step.store = MemoryStore(10, 10**6, clock=lambda: now[0])
    step.routes["n"].cache_ttl_s = 2.0
    body = {"model": "n", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0}
    assert ask(chain, body)[0] == "miss" and ask(chain, body)[0] == "hit"
    now[0] = 2.5  # past the route's 2 s, well within cache.ttl_s (3600 s)
    assert ask(chain, body) == ("miss", "answer-2")


def test_the_store_evicts_the_least_recently_used_past_its_entry_and_byte_bounds() -> None:
    async def run():
        by_count = MemoryStore(max_entries=2, max_bytes=10**6)
        for k in "abc":
            await by_count.put(k, b"x", 60)
            if k == "b":
                await by_count.get("a")  # a is now more recent than b
        assert [k for k in "abc" if await by_count.get(k)] == ["a", "c"]
        by_bytes = MemoryStore(max_entries=100, max_bytes=10)
        for k in "abc":
            await by_bytes.put(k, b"12345", 60)
        assert [k for k in "abc" if await by_bytes.get(k)] == ["b", "c"] and by_bytes.bytes == 10
        await by_bytes.put("big", b"x" * 11, 60)  # larger than the whole store: not kept, nothing evicted
        assert await by_bytes.get("big") is None and len(by_bytes) == 2

    asyncio.run(run())


def test_an_answer_over_max_entry_kb_is_not_stored(gateway) -> None:
    gw, step, canned, chain = gateway(max_entry_kb=0.05)  # 51 bytes: smaller than any answer here
    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0}
    for stream in (False, True):
        ex = Exchange("chat", {**body, "stream": stream})
        reply = asyncio.run(chain(ex))
        answer(reply)
        assert ex.outcome == {"cache": "miss", "cache_reason": "too-large"}
    assert ask(chain, body)[0] == "miss"


def test_a_stream_is_replayed_as_the_same_chunks_and_framing(gateway) -> None:
    gw, step, canned, chain = gateway()
    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0, "stream": True}

    def framed() -> tuple[str, list[str]]:
        ex = Exchange("chat", dict(body))
        reply = asyncio.run(chain(ex))

        async def read():
            return [sse(c) async for c in reply.events]

        return reply.headers[HEADER], asyncio.run(read())

    (first, original), (second, replayed) = framed(), framed()
    assert (first, second) == ("miss", "hit") and replayed == original and canned.calls == 1
    assert any('"usage"' in frame for frame in replayed)  # the usage chunk is kept: the app drops it if not asked


def test_a_stream_broken_off_is_not_stored(gateway) -> None:
    gw, step, canned, chain = gateway()
    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0, "stream": True}
    ex = Exchange("chat", dict(body))
    reply = asyncio.run(chain(ex))

    async def read_one_and_leave():
        events = reply.events
        await events.__anext__()
        await events.aclose()  # the client went away

    asyncio.run(read_one_and_leave())
    assert ex.outcome["cache_reason"] == "not-ok" and ask(chain, body)[0] == "miss"


def test_an_error_is_not_stored_and_still_carries_the_decision(gateway) -> None:
    gw, step, canned, chain = gateway()

    class Failing:
        name = "upstream"

        async def __call__(self, ex, call_next):
            raise APIError(503, "every backend failed")

    body = {"model": "m", "messages": [{"role": "user", "content": "Thou"}], "temperature": 0}
    for sent, decision in ((body, "miss"), ({**body, "temperature": 0.5}, "bypass")):
        ex = Exchange("chat", dict(sent))
        with pytest.raises(APIError) as e:
            asyncio.run(Chain([chain.steps[0], step, Failing()])(ex))
        assert e.value.headers[HEADER] == decision and ex.outcome["cache"] == decision
    assert ex.outcome["cache_reason"] == "sampled" and ask(chain, body) == ("miss", "answer-1")
