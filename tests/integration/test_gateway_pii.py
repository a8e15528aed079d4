"""The PII guardrail in a served gateway, in front of the small real upstream of gateway_helpers set to
echo what it was sent: through the official openai client, the upstream receives placeholders only and
the client gets its own values back, as JSON and as a stream (echoed three characters a chunk, so
placeholders arrive split); a blocked entity is a 400 naming its type; and no value is written to the
request log (prompts logged on purpose), the ledger or /metrics. Then (slow) a real `londinium serve`
behind it: its own request log shows it was asked with placeholders only."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest
from gateway_helpers import Upstream, gateway_server, upstream_server, write_config

pytest.importorskip("presidio_analyzer")

VALUES = {"email": "mary.hart@globe.co.uk", "phone": "+44 20 7946 0958", "card": "4111-1111-1111-1111", "ip": "10.20.30.40"}
TEXT = f"Thou mayst write to {VALUES['email']} or ring {VALUES['phone']}; the server at {VALUES['ip']} keeps it."


def test_a_served_gateway_masks_on_the_way_in_and_unmasks_on_the_way_out_logging_no_value(tmp_path) -> None:
    upstream = Upstream()
    upstream.mode = "echo"
    with upstream_server(upstream) as base:
        cfg = write_config(tmp_path / "gw.toml", [{"name": "fake", "base_url": base, "model": "fake"}],
                           [{"alias": "m", "backends": ["fake"]}],
                           chain=["auth", "usage", "limits", "route", "pii", "upstream"],
                           request_log=str(tmp_path / "requests.jsonl"), log_prompts=True)
        cfg.write_text(cfg.read_text() + '\n[pii.actions]\nEMAIL_ADDRESS = "mask"\nPHONE_NUMBER = "mask"\n'
                                          'IP_ADDRESS = "log"\nCREDIT_CARD = "block"\n')
        with gateway_server(cfg) as (url, gw):
            _, secret = gw.store.create_key("reader")
            c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)
            chat = {"model": "m", "messages": [{"role": "user", "content": TEXT}], "max_tokens": 50}
            assert c.chat.completions.create(**chat).choices[0].message.content == TEXT
            streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**chat, stream=True) if ch.choices)
            assert streamed == TEXT
            assert c.completions.create(model="m", prompt=TEXT, max_tokens=50).choices[0].text == TEXT
            with pytest.raises(openai.BadRequestError) as blocked:
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"card {VALUES['card']}"}])
            metrics = httpx.get(url + "/metrics").text
            rows = gw.store.ledger()
    assert "CREDIT_CARD" in str(blocked.value) and VALUES["card"] not in str(blocked.value)
    assert len(upstream.bodies) == 3  # the blocked request never left the gateway
    for body in upstream.bodies:
        sent = json.dumps(body)
        assert VALUES["email"] not in sent and VALUES["phone"] not in sent and VALUES["ip"] in sent  # the IP is log-only
        assert "<EMAIL_ADDRESS_1>" in sent and "<PHONE_NUMBER_1>" in sent
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [r["outcome"]["pii"] for r in logged] == ["masked"] * 3 + ["blocked"]
    assert all("<EMAIL_ADDRESS_1>" in r["prompt"] and "<IP_ADDRESS_1>" in r["prompt"] for r in logged[:3])
    assert sorted(json.loads(r["outcome"])["pii"] for r in rows) == ["blocked"] + ["masked"] * 3
    assert 'londinium_gateway_pii_total{decision="masked",model="m"} 3.0' in metrics
    assert 'londinium_gateway_pii_entities_total{action="block",entity="CREDIT_CARD",model="m"} 1.0' in metrics
    for path in tmp_path.iterdir():  # the request log, the ledger's database (and its journal): no value anywhere
        if path.is_file():
            data = path.read_bytes()
            assert not any(v.encode() in data for v in VALUES.values()), path.name


@pytest.mark.slow  # a real `londinium serve` process (~10-20 s to start here)
def test_a_real_londinium_serve_behind_the_gateway_logs_only_placeholders(tiny_workspace, tmp_path) -> None:
    """The quickstart-style model on `londinium serve` (its own request log with prompts on): what it was
    asked holds placeholders, never the values; the client gets an answer through the openai client."""
    from serve_helpers import free_port, serve_process, stop, trained_run, wait_healthy

    served_log = tmp_path / "served.jsonl"
    port = free_port()
    proc = serve_process(tiny_workspace, trained_run(tiny_workspace), port, "--set", "serve.log_prompts=true",
                         "--set", f"serve.request_log={served_log}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        cfg = write_config(tmp_path / "gw.toml", [{"name": "tiny", "base_url": f"http://127.0.0.1:{port}/v1", "model": "tiny"}],
                           [{"alias": "london", "backends": ["tiny"]}], keys_required=False,
                           chain=["auth", "usage", "limits", "route", "pii", "upstream"])
        with gateway_server(cfg) as (url, gw):
            c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
            answer = c.chat.completions.create(model="london", messages=[{"role": "user", "content": TEXT}], max_tokens=4, temperature=0)
            assert answer.choices[0].message.content is not None
    finally:
        stop(proc)
    asked = [json.loads(line)["prompt"] for line in served_log.read_text().splitlines() if "prompt" in line]
    assert asked and all("<EMAIL_ADDRESS_1>" in p and "<PHONE_NUMBER_1>" in p for p in asked)
    assert not any(VALUES["email"] in p or VALUES["phone"] in p for p in asked)
