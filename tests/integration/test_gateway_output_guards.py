"""The output guardrails in a served gateway, in front of the small real upstream of gateway_helpers,
through the official openai client: a response_format answer that cannot be repaired is a 502 after
exactly two backend calls; a stream is masked and ended with content_filter as it streams; the
decisions reach the ledger and /metrics."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import tomli_w
from gateway_helpers import Upstream, gateway_server, upstream_server, write_config

SCHEMA = {"type": "object", "properties": {"book": {"type": "string"}, "chapter": {"type": "integer"}}, "required": ["book", "chapter"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ref", "schema": SCHEMA}}


def test_a_served_gateway_checks_schemas_and_filters_streams(tmp_path) -> None:
    upstream = Upstream(words=6)
    with upstream_server(upstream) as base:
        cfg = write_config(tmp_path / "gw.toml", [{"name": "fake", "base_url": base, "model": "fake"}], [{"alias": "m", "backends": ["fake"]}],
                           chain=["auth", "usage", "limits", "route", "output_filter", "response_schema", "upstream"])
        cfg.write_text(cfg.read_text() + "\n" + tomli_w.dumps({"output_filter": {
            "actions": {"WORD": "mask", "STOP": "block"}, "deny_lists": {"WORD": ["fake1"]}, "patterns": {"STOP": "fake[4-9]"}}}))
        with gateway_server(cfg) as (url, gw):
            _, secret = gw.store.create_key("reader")
            c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)
            upstream.mode = "echo"  # answers with the request's last message
            ref = '{"book": "Genesis", "chapter": 7}'
            streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": ref}], response_format=FORMAT, stream=True) if ch.choices)
            assert json.loads(streamed) == {"book": "Genesis", "chapter": 7}
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Genesis 7"}], response_format=FORMAT)
            assert e.value.status_code == 502 and e.value.code == "invalid_response_schema"
            assert upstream.calls == 3  # the stream once, the invalid answer and its one repair

            upstream.mode = "ok"  # "fake0 fake1 fake2 fake3 fake4 fake5 ", a word a chunk
            chunks = [ch for ch in c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Speak"}], stream=True) if ch.choices]
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "fake0 [WORD] fake2 fake3 "
            assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["content_filter"]
            rows = gw.store.ledger()
            metrics = httpx.get(url + "/metrics").text
    outcomes = [json.loads(r["outcome"]) for r in rows]
    assert sorted(o.get("response_schema", "-") for o in outcomes) == ["-", "invalid", "valid"]
    assert [o["output_found"] for o in outcomes if o.get("output_filter") == "blocked"] == ["STOP=1,WORD=1"]
    assert 'londinium_gateway_output_filter_total{decision="blocked",model="m"} 1.0' in metrics
    assert 'londinium_gateway_response_schema_total{decision="invalid",model="m"} 1.0' in metrics
