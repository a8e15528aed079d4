"""Load and soak: 64 concurrent clients against a `londinium serve` process for SOAK_S seconds,
mixed streaming and not, completions and chat, every fifth stream cancelled mid-way. Nothing fails
but the deliberate 429s (the waiting queue is sized below the load), every completed response has
exactly the tokens it asked for (our tokenizer's count of the prompt, max_tokens of completion),
the server's memory after the run is what it was after warm-up, and the queue and running gauges
return to 0. Slow (~70 s): run with `-m slow`."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import free_port, metric, trained_run, wait_healthy

from londinium.infer.chat_template import END_OF_TURN
from londinium.serve.prompts import encode_chat
from londinium.tokenizer.codec import encode, eot_id, load_tokenizer

pytestmark = pytest.mark.slow

CLIENTS, SOAK_S, WARM_S = 64, 60.0, 8.0  # the issue asks for 60 s of load
MODEL = "tiny"
PROMPTS = ["Thou art", "The river", "In the year of our Lord", "London", "My lord, the king", "Upon the bridge"]


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def client(i: int, url: str, until: float, tok, bias: dict, tally: collections.Counter, problems: list[str]) -> None:
    """One user: requests back to back until `until`, each checked; the kind varies with the client and the round."""
    rng = random.Random(i)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        k = 0
        while time.monotonic() < until:
            k += 1
            chat, stream = (i + k) % 2 == 0, (i // 2 + k) % 2 == 0
            cancel = stream and (i + k) % 5 == 0
            prompt, max_tokens = rng.choice(PROMPTS), rng.randint(8, 40)
            body: dict = {"model": MODEL, "max_tokens": max_tokens, "temperature": 1.0, "seed": i * 1000 + k, "logit_bias": bias}
            if chat:
                messages = [{"role": "user", "content": prompt}]
                body["messages"], want_prompt = messages, len(encode_chat(tok, messages)[0])
            else:
                body["prompt"], want_prompt = prompt, len(encode(tok, prompt))
            path = "/v1/chat/completions" if chat else "/v1/completions"
            what = f"client {i} round {k} {path} stream={stream}"
            try:
                if not stream:
                    r = await http.post(path, json=body)
                    if r.status_code == 429:
                        tally["429"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    if r.status_code != 200:
                        problems.append(f"{what}: {r.status_code} {r.text[:200]}")
                        continue
                    usage = r.json()["usage"]
                else:
                    body |= {"stream": True, "stream_options": {"include_usage": True}}
                    usage, chunks = None, 0
                    async with http.stream("POST", path, json=body) as r:
                        if r.status_code == 429:
                            tally["429"] += 1
                            await asyncio.sleep(0.2)
                            continue
                        if r.status_code != 200:
                            problems.append(f"{what}: {r.status_code} {(await r.aread())[:200]!r}")
                            continue
                        async for line in r.aiter_lines():
                            if not line.startswith("data: {"):
                                continue
                            event = json.loads(line[6:])
                            if "error" in event:
                                problems.append(f"{what}: error event {event}")
                                break
                            chunks += 1
                            if cancel and chunks == 2:
                                break  # leaving the block closes the connection: the server cancels
                            if event.get("usage"):
                                usage = event["usage"]
                    if cancel and chunks == 2:
                        tally["cancelled"] += 1
                        continue
                    if usage is None:
                        problems.append(f"{what}: no usage chunk")
                        continue
                if usage["completion_tokens"] != max_tokens or usage["prompt_tokens"] != want_prompt:
                    problems.append(f"{what}: usage {usage}, asked {max_tokens} tokens on a {want_prompt}-token prompt")
                tally["completed"] += 1
                tally["tokens"] += usage["completion_tokens"]
            except httpx.HTTPError as e:
                problems.append(f"{what}: {type(e).__name__}: {e}")


async def load(url: str, seconds: float, tok, bias: dict) -> tuple[collections.Counter, list[str]]:
    tally: collections.Counter = collections.Counter()
    problems: list[str] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(i, url, until, tok, bias, tally, problems) for i in range(CLIENTS)))
    return tally, problems


def test_64_clients_for_a_soak_lose_nothing_and_leak_nothing(tiny_workspace, capsys) -> None:
    ws, port = tiny_workspace, free_port()
    run, tok = trained_run(ws), load_tokenizer(ws)
    # No end-of-text, no end of turn: every completion runs to max_tokens, so its count is known.
    bias = {str(eot_id(tok)): -100, str(tok.token_to_id(END_OF_TURN)): -100}
    cmd = [sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", run, "--checkpoint", "latest",
           "--port", str(port), "--model-name", MODEL, "--set", "serve.max_waiting=40", "--set", "serve.threads=1",
           "--set", "serve.request_log=/dev/null"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=90)
        warm, warm_problems = asyncio.run(load(url, WARM_S, tok, bias))
        assert warm_problems == [] and warm["completed"] > 0
        rss_warm = rss_kb(proc.pid)
        t0 = time.monotonic()
        tally, problems = asyncio.run(load(url, SOAK_S, tok, bias))
        held = time.monotonic() - t0
        rss_after = rss_kb(proc.pid)
        deadline = time.monotonic() + 15
        while metric(url, "londinium_running_sequences") or metric(url, "londinium_waiting_requests"):
            assert time.monotonic() < deadline, "the gauges did not return to 0"
            time.sleep(0.1)
        served_499 = metric(url, 'londinium_requests_total{endpoint="/v1/completions",status="499"}', default=0.0) + \
            metric(url, 'londinium_requests_total{endpoint="/v1/chat/completions",status="499"}', default=0.0)
        fives = sum(metric(url, f'londinium_requests_total{{endpoint="{e}",status="{s}"}}', default=0.0)
                    for e in ("/v1/completions", "/v1/chat/completions") for s in (500, 503))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with capsys.disabled():
        print(f"\nsoak: {CLIENTS} clients for {held:.0f} s: {tally['completed']} completed ({tally['tokens']} tokens), "
              f"{tally['cancelled']} cancelled mid-stream, {tally['429']} deliberate 429s, {len(problems)} errors; "
              f"server RSS {rss_warm / 1024:.1f} MB after warm-up, {rss_after / 1024:.1f} MB after")
    assert problems == [], problems[:10]
    assert tally["completed"] >= CLIENTS and tally["cancelled"] > 0 and fives == 0
    assert 0 < served_499 <= tally["cancelled"] + warm["cancelled"]
    assert rss_after <= rss_warm * 1.05, f"server RSS grew from {rss_warm} kB to {rss_after} kB"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()
