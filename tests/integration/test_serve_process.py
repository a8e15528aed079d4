"""`londinium serve` as a real process: it starts, streams to the openai SDK, and on SIGTERM lets a
running stream finish, refuses new work, and exits 0; a wrong run name fails before it listens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from serve_helpers import free_port, trained_run, wait_healthy


def serve_cmd(ws, run: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", run, "--checkpoint", "latest",
            "--port", str(port), "--model-name", "tiny", "--set", "serve.shutdown_timeout_s=20", *extra]


def test_serve_process_streams_and_drains_on_sigterm(tiny_workspace) -> None:
    run = trained_run(tiny_workspace)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(serve_cmd(tiny_workspace, run, port), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout=90)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        empty = client.completions.create(model="tiny", prompt="", max_tokens=1, temperature=0)
        assert empty.usage.prompt_tokens == 1  # an empty prompt starts from end-of-text
        stream = client.completions.create(model="tiny", prompt="Thou art", max_tokens=100, temperature=0, stream=True,
                                           stream_options={"include_usage": True})
        chunks = iter(stream)
        first = next(chunks)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):
            client.completions.create(model="tiny", prompt="Thou", max_tokens=2)
        rest = list(chunks)
        assert rest[-1].usage is not None and rest[-1].choices == []  # the stream ran to its end
        assert rest[-2].choices[0].finish_reason in ("stop", "length")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert "Traceback" not in out, out


def test_serve_unknown_run_fails_before_listening(tiny_workspace) -> None:
    r = subprocess.run(serve_cmd(tiny_workspace, "no-such-run", free_port()), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no-such-run" in r.stderr and "Traceback" not in r.stderr
