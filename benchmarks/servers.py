"""Starting and stopping the servers a serving benchmark compares (londinium serve, transformers
serve, llama.cpp's server) as real processes on 127.0.0.1; shared by serve_throughput.py and
serve_peers.py (run them from the repository root: `python benchmarks/<script>.py`)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, threads: int, timeout: float = 180, ready: str = "/v1/models",
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `cmd` with `threads` OpenMP/MKL threads (and `env` added to the environment) and wait
    until GET url+ready answers 200."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}{ready}", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{cmd[0]} did not start; its log: {log}\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def start_litellm(litellm: str, config_yaml: str, work: Path) -> tuple[subprocess.Popen, str]:
    """LiteLLM's proxy (its `litellm` command) on a free port with this config, one worker, its bundled
    cost map, no telemetry: (the process, its /v1 base URL)."""
    port = free_port()
    (work / "litellm.yaml").write_text(config_yaml)
    quiet = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    proc = start([litellm, "--config", str(work / "litellm.yaml"), "--port", str(port), "--num_workers", "1"],
                 f"http://127.0.0.1:{port}", work / "litellm.log", 1, timeout=300, ready="/health/liveliness", env=quiet)
    return proc, f"http://127.0.0.1:{port}/v1"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
