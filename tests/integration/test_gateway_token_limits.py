"""Token limits in a served gateway, through the official openai client: a prompt over the route's
length limit is a 400 naming it, and the route's tokens per minute, used up by one key, refuse another
key with a 429 and Retry-After; the refusals are in the ledger and /metrics."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from gateway_helpers import Upstream, gateway_server, upstream_server, write_config


def test_a_served_gateway_refuses_long_prompts_and_a_spent_route_by_name(tmp_path) -> None:
    upstream = Upstream(words=20)
    with upstream_server(upstream) as base:
        cfg = write_config(tmp_path / "gw.toml", [{"name": "fake", "base_url": base, "model": "fake"}],
                           [{"alias": "m", "backends": ["fake"], "max_prompt_tokens": 8, "tpm": 25}],
                           chain=["auth", "usage", "limits", "route", "token_limits", "upstream"])
        with gateway_server(cfg) as (url, gw):
            clients = [openai.OpenAI(base_url=url + "/v1", api_key=gw.store.create_key(name)[1], max_retries=0, timeout=30)
                       for name in ("alice", "bob")]
            with pytest.raises(openai.BadRequestError) as e:
                clients[0].chat.completions.create(model="m", messages=[{"role": "user", "content": "Speak the speech, I pray you, as I pronounced it"}])
            assert e.value.code == "prompt_too_long" and "max_prompt_tokens of route 'm' is 8" in e.value.message
            clients[0].chat.completions.create(model="m", messages=[{"role": "user", "content": "Speak"}])  # 1 + 20 tokens of 25
            clients[0].chat.completions.create(model="m", messages=[{"role": "user", "content": "Again"}])  # admitted at 4 left
            with pytest.raises(openai.RateLimitError) as e:
                clients[1].chat.completions.create(model="m", messages=[{"role": "user", "content": "Me too"}])
            assert "route 'm' used its 25 tokens per minute" in e.value.message and int(e.value.response.headers["Retry-After"]) >= 1
            assert upstream.calls == 2
            rows = gw.store.ledger()
            metrics = httpx.get(url + "/metrics").text
    assert sorted(json.loads(r["outcome"]).get("token_limit", "-") for r in rows) == ["-", "-", "max_prompt_tokens", "route_tpm"]
    assert 'londinium_gateway_token_limit_total{limit="route_tpm",model="m"} 1.0' in metrics
