"""Where the agent's model answers: an OpenAI-compatible URL as given, or a trained run of the
workspace served for the length of the run by a `londinium serve` process on a free local port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

from londinium.agent.toolbus import AgentError


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _model_id(base_url: str, api_key: str) -> str:
    import openai

    try:
        models = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30).models.list().data
    except openai.OpenAIError as e:
        raise AgentError(f"--model {base_url}: GET /models failed ({e}); give --model-name, or check the URL") from None
    if not models:
        raise AgentError(f"--model {base_url}: the server lists no models; give --model-name")
    return models[0].id


@contextmanager
def model_endpoint(spec: str, serve_args: Sequence[str], model_name: str | None = None, api_key: str = "unused",
                   ready_timeout_s: float = 600) -> Iterator[tuple[str, str]]:
    """(base URL, model id) for `spec`, a URL or a run name; `serve_args` are `londinium serve`'s
    workspace and config options, used for a run. The process it starts is always stopped."""
    if is_url(spec):
        base = spec.rstrip("/")
        yield base, model_name or _model_id(base, api_key)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = model_name or spec
    proc = subprocess.Popen([sys.executable, "-m", "londinium", "serve", *serve_args, "--run", spec, "--port", str(port),
                             "--model-name", name, "--api-key", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", ready_timeout_s, spec)
        yield f"http://127.0.0.1:{port}/v1", name
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, run: str) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
            raise AgentError(f"--model {run}: `londinium serve` exited with {proc.returncode}: "
                             f"{said[-1] if said else 'no message'}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AgentError(f"--model {run}: the server did not become ready within {timeout_s:.0f} s")
