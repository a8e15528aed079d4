"""Shared pieces of the server tests: one tiny trained run, and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
from train_helpers import cli_in_process, train_args

from londinium.workspace import Workspace

RUN = "serve-tiny"
# Context 128, so a test can ask for ~100 tokens: long enough to cancel a stream in the middle.
EXTRA = ["--set", "model.context=128", "--set", "train.batch_size=4", "--set", "train.eval_every=10"]
_trained: dict[str, str] = {}


def trained_run(ws: Workspace) -> str:
    """Train the tiny run once per session (a few seconds), whichever test module asks first."""
    if str(ws.root) not in _trained:
        rc, out, err = cli_in_process(train_args(ws, RUN, 20, *EXTRA))
        assert rc == 0, err
        _trained[str(ws.root)] = RUN
    return RUN


SLOW_RUN = "serve-slow"


def slow_run(ws: Workspace) -> str:
    """A random-weight GPT wide enough that a few hundred tokens take seconds to decode, saved as a
    checkpoint: for tests that need a request still running when they act (cancel, a full queue,
    SIGTERM). The plumbing is under test there, not the prose."""
    import torch

    from londinium.checkpoint import save_checkpoint
    from londinium.config import Config, ModelConfig, to_toml
    from londinium.model.gpt import GPT
    from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

    if not ws.checkpoints_dir(SLOW_RUN).is_dir():
        cfg = Config()
        cfg.model = ModelConfig(n_layer=4, n_head=4, n_embd=256, context=512, vocab_size=load_tokenizer(ws).get_vocab_size())
        torch.manual_seed(0)
        save_checkpoint(ws.checkpoints_dir(SLOW_RUN), 1, GPT(cfg.model), {"step": 1}, to_toml(cfg),
                        {"run": SLOW_RUN, "tokenizer_sha256": tokenizer_sha256(ws)})
    return SLOW_RUN


ROPE_RUN = "rope-64"


def rope_run(ws: Workspace) -> str:
    """An untrained rotary model with a 64-token context, saved as a checkpoint (plumbing under test,
    not prose)."""
    import torch

    from londinium.checkpoint import save_checkpoint
    from londinium.config import Config, ModelConfig, to_toml
    from londinium.model.gpt import GPT
    from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

    if not ws.checkpoints_dir(ROPE_RUN).is_dir():
        cfg = Config()
        cfg.model = ModelConfig(n_layer=1, n_head=2, n_embd=32, context=64, positions="rope", norm="rmsnorm", mlp="swiglu",
                                bias=False, vocab_size=load_tokenizer(ws).get_vocab_size())
        torch.manual_seed(0)
        save_checkpoint(ws.checkpoints_dir(ROPE_RUN), 1, GPT(cfg.model), {"step": 1}, to_toml(cfg),
                        {"run": ROPE_RUN, "tokenizer_sha256": tokenizer_sha256(ws)})
    return ROPE_RUN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Any, wait_ready: bool = True, send_buffer: int | None = None) -> Iterator[str]:
    """Run `app` under uvicorn on a thread, on a free port of 127.0.0.1; yield its base URL; always stop it.
    `send_buffer` fixes the kernel's send buffer of every connection (accepted sockets inherit it
    from the listening one), as a slow network would: a client that stops reading blocks the
    server's writes after a few KB instead of the megabytes loopback buffers by default."""
    import uvicorn

    sock = socket.socket()
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        if wait_ready:
            wait_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_healthy(url: str, timeout: float = 60, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become healthy"
        time.sleep(0.05)


def metric(url: str, name: str, headers: dict | None = None, default: float | None = None) -> float:
    """The value of a metric line in /metrics (`name` with its labels, or the sum over them); a
    metric that has no line yet is `default` if given, else an error."""
    total, found = 0.0, False
    for line in httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10).text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found and default is not None:
        return default
    assert found, f"{name} not in /metrics"
    return total


def serve_process(ws: Workspace, run: str, port: int, *extra: str, model: str = "tiny", **popen: Any) -> subprocess.Popen:
    """`londinium serve` as a real process on 127.0.0.1:`port` (stdout and stderr together in one
    text pipe, unless `popen` says otherwise); the caller stops it."""
    cmd = [sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", run, "--checkpoint", "latest",
           "--port", str(port), "--model-name", model, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, **({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True} | popen))


@contextmanager
def served(ws: Workspace, run: str, *extra: str) -> Iterator[str]:
    """`serve_process` on a free port, healthy; yield its base URL; always stop it."""
    port = free_port()
    proc = serve_process(ws, run, port, *extra)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """End a server process the test started, whatever state it is in."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
