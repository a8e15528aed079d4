"""`londinium serve` as a real process: it starts, streams to the openai SDK, and on SIGTERM lets a
running stream finish, refuses new work, and exits 0; a wrong run name fails before it listens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest
from serve_helpers import SLOW_RUN, free_port, slow_run, wait_healthy

from londinium.tokenizer.codec import eot_id, load_tokenizer

@pytest.fixture(scope="module")
def ws(tiny_workspace):
    slow_run(tiny_workspace)
    return tiny_workspace


def serve_cmd(ws, run: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", run, "--checkpoint", "latest",
            "--port", str(port), "--model-name", "tiny", "--set", "serve.shutdown_timeout_s=30", *extra]


# SIGHUP is what a closed terminal sends; it drains the same way. Both streams are 400 tokens: 100 finished
# 0.09 s after the signal on a quiet CI machine, too soon to show that the stream was still running.
@pytest.mark.parametrize("sig, tokens", [(signal.SIGTERM, 400), (signal.SIGHUP, 400)], ids=["SIGTERM", "SIGHUP"])
def test_serve_process_streams_and_drains_on_sigterm(ws, tmp_path, sig, tokens) -> None:
    port, log = free_port(), tmp_path / "requests.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(serve_cmd(ws, SLOW_RUN, port, "--set", f"serve.request_log={log}"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout=90)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        empty = client.completions.create(model="tiny", prompt="", max_tokens=1, temperature=0)
        assert empty.usage.prompt_tokens == 1  # an empty prompt starts from end-of-text
        eos = eot_id(load_tokenizer(ws))
        stream = client.completions.create(model="tiny", prompt="Thou art", max_tokens=tokens, temperature=0, stream=True,
                                           stream_options={"include_usage": True}, logit_bias={str(eos): -100})
        chunks = iter(stream)
        next(chunks)
        proc.send_signal(sig)
        signalled = time.time()
        time.sleep(0.2)
        with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):
            client.completions.create(model="tiny", prompt="Thou", max_tokens=2)  # no new work while draining
        rest = list(chunks)
        assert rest[-1].choices == [] and rest[-1].usage.completion_tokens == tokens  # the stream ran to its end
        assert rest[-2].choices[0].finish_reason == "length"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert "Traceback" not in out and f"{sig.name}: draining" in out, out
    [streamed] = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("completion_tokens") == tokens]
    assert streamed["status"] == 200 and streamed["time"] > signalled + 0.1  # it was still running at SIGTERM


def test_serve_unknown_run_fails_before_listening(ws) -> None:
    r = subprocess.run(serve_cmd(ws, "no-such-run", free_port()), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no-such-run" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("port, host, says", [(70000, "127.0.0.1", "serve.port = 70000"), (8000, "", "serve.host = ''")])
def test_serve_flags_are_held_to_the_config_rules(ws, port, host, says) -> None:
    # --port and --host are applied after the config is loaded: the same rules must still hold.
    cmd = serve_cmd(ws, SLOW_RUN, port, "--host", host)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in r.stderr, r.stderr
