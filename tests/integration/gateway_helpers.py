"""Shared pieces of the gateway tests: a small real OpenAI-compatible server whose failures the test
chooses, a gateway.toml writer, a gateway served by uvicorn on 127.0.0.1, and private PostgreSQL and
Redis servers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import tomli_w
from serve_helpers import free_port, live_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Upstream:
    """What the small server does, set by the test: `mode` is ok, 500, 429, stall, trickle, drop
    (a stream broken off after two chunks), no-usage (never reports usage), or echo (answers with the
    prompt's last text, three characters per chunk). Its answer is otherwise `words` one word per
    chunk; usage counts a word as a token and the prompt's words likewise."""

    def __init__(self, name: str = "fake", words: int = 5, context: int = 1000):
        self.name, self.words, self.context = name, words, context
        self.mode = "ok"
        self.calls = 0
        self.bodies: list[dict] = []

    def text(self) -> list[str]:
        if self.mode == "echo":
            last = self.bodies[-1]
            said = last["messages"][-1]["content"] if "messages" in last else last["prompt"]
            return [said[i:i + 3] for i in range(0, len(said), 3)]
        return [f"{self.name}{i} " for i in range(self.words)]

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model", "max_model_len": self.context}]})

        async def complete(request: Request) -> Response:
            body = await request.json()
            self.calls += 1
            self.bodies.append(body)
            chat = request.url.path.endswith("/chat/completions")
            if self.mode in ("500", "429"):
                return JSONResponse({"error": {"message": f"{self.name} says {self.mode}", "type": "server_error",
                                               "param": None, "code": None}}, status_code=int(self.mode),
                                    headers={"Retry-After": "1"} if self.mode == "429" else None)
            if self.mode == "stall":
                await asyncio.sleep(1.5)  # well past the tests' timeout_s of 0.6 s
            prompt = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": self.words,
                     "total_tokens": len(prompt.split()) + self.words}
            if self.mode == "trickle" and not body.get("stream"):
                return StreamingResponse(self._trickle(), media_type="application/json")
            if not body.get("stream"):
                choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(self.text())}, "finish_reason": "length"}
                          if chat else {"index": 0, "text": "".join(self.text()), "finish_reason": "length"})
                out = {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
                       "model": body["model"], "choices": [choice]}
                if self.mode != "no-usage":
                    out["usage"] = usage
                return JSONResponse(out)
            return StreamingResponse(self._events(body, chat, usage), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/models", models), Route("/v1/completions", complete, methods=["POST"]),
                                 Route("/v1/chat/completions", complete, methods=["POST"])])

    async def _trickle(self):
        for _ in range(10):  # a byte of white space (or an SSE comment) every 0.15 s: every read is quick
            yield " "
            await asyncio.sleep(0.15)
        yield "{}"

    async def _events(self, body: dict, chat: bool, usage: dict):
        if self.mode == "trickle":
            async for byte in self._trickle():
                yield ":"
        include = (body.get("stream_options") or {}).get("include_usage") and self.mode != "no-usage"
        base = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0, "model": body["model"]}
        for i, word in enumerate(self.text()):
            if self.mode == "drop" and i == 2:
                raise ConnectionResetError("dropped")  # uvicorn closes the connection mid-body
            choice = {"index": 0, "delta": {"content": word}, "finish_reason": None} if chat else \
                {"index": 0, "text": word, "finish_reason": None}
            yield f"data: {json.dumps({**base, 'choices': [choice], **({'usage': None} if include else {})})}\n\n"
            await asyncio.sleep(0)
        last = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else {"index": 0, "text": "", "finish_reason": "length"}
        yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n"
        if include:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"


@contextmanager
def upstream_server(upstream: Upstream) -> Iterator[str]:
    """The small server on a free port; yields its /v1 base URL."""
    with live_server(upstream.app(), wait_ready=False) as url:
        yield url + "/v1"


def write_config(path: Path, backends: list[dict], routes: list[dict], **gateway: Any) -> Path:
    """A gateway.toml with these tables; the database beside it unless given."""
    data = {"gateway": {"health_interval_s": 0, "backoff_s": 0.01, **gateway}, "backends": backends, "routes": routes}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


@contextmanager
def gateway_server(config: Path, **telemetry: Any) -> Iterator[tuple[str, Any]]:
    """The gateway of `config` under uvicorn on a thread; yields (base URL, the Gateway)."""
    from londinium.gateway.app import create_app
    from londinium.gateway.runtime import Gateway
    from londinium.gateway.settings import load_settings

    settings = load_settings(config)
    for k, v in telemetry.items():
        setattr(settings.telemetry, k, v)
    gateway = Gateway(settings)
    with live_server(create_app(gateway), wait_ready=True) as url:
        yield url, gateway


# ---- PostgreSQL: a private cluster from the system packages ---------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A PostgreSQL server started for the test session in a temporary folder on a free port of
    127.0.0.1 (trust auth, no fsync); yields its URL; always stopped. As root, it runs as the
    `postgres` user (initdb refuses root). Missing PostgreSQL: a skip, or a failure under CI."""
    pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    bindir = _pg_bin()
    if bindir is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="londinium-pg-"))
    data = folder / "data"
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(folder, "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "londinium", "--auth=trust", "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        yield f"postgresql://londinium@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# ---- Redis: a private server from the system packages ----------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server started in a temporary folder on a free port of 127.0.0.1 (no persistence);
    yields its URL; always stopped. Missing redis-server or redis-py: a skip, or a failure under CI."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    missing = ("redis-server is not installed (apt-get install -y redis-server)" if binary is None else
               "redis-py is not installed (pip install -e '.[redis]')" if importlib.util.find_spec("redis") is None else None)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    import redis

    folder = Path(tempfile.mkdtemp(prefix="londinium-redis-"))
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                             "--appendonly", "no", "--daemonize", "no", "--logfile", str(folder / "log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):  # up to ~10 s on a busy machine
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {(folder / 'log').read_text(errors='replace')[-500:]}") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
