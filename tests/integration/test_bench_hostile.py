"""`londinium bench serve` against a hostile server: a real HTTP server on 127.0.0.1 (a thread of this
process) that trickles bytes, sends a line of hundreds of megabytes, or streams chunks of any shape.
The benchmark always completes: each bad answer is a failed request with its reason, never a crash
or a hang, and no figure comes from a usage that cannot be true."""

from __future__ import annotations

import asyncio
import json
import socketserver
import threading
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_helpers import cli_in_process

from londinium.bench.serve_bench import BenchPrompt, BenchSpec, bench_serve_async
from londinium.workspace import Workspace

PROMPT = "Thou art"  # 8 bytes: a server may count at most 8 + 16 special tokens for it
MAX_TOKENS = 8
Write = Callable[[bytes], None]


class HostileServer(socketserver.ThreadingTCPServer):
    """GET /v1/models lists one model; POST /v1/completions is answered by `script(write, stopping)`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: Callable[[Write, threading.Event], None] = lambda write, stopping: None
        self.models: Callable[[Write, threading.Event], None] = lambda write, stopping: write(
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"data": [{"id": "m"}]}')
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline()
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.rfile.read(length)
        script = self.server.models if request.startswith(b"GET") else self.server.script
        try:
            script(self._write, self.server.stopping)
        except OSError:  # the client hung up, as it should on a bad answer
            pass

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def stream(lines: list[bytes]) -> Callable[[Write, threading.Event], None]:
    """An event stream of these `data:` payloads, then [DONE]."""
    def script(write: Write, stopping: threading.Event) -> None:
        write(SSE_HEAD + b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n")
    return script


@pytest.fixture(scope="module")
def hostile():
    server = HostileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT}) + "\n", encoding="utf-8")
    return path


def bench(hostile: HostileServer, prompts, ws: Workspace, *flags: str) -> tuple[int, str, list[dict]]:
    rc, out, err = cli_in_process(["bench", "serve", "-w", str(ws.root), "--base-url", hostile.url, "--prompts", str(prompts),
                                   "--num-prompts", "2", "--warmup", "0", "--output-len", str(MAX_TOKENS), "--name", "hostile", *flags])
    assert "Traceback" not in err, err
    levels = json.loads(ws.bench_results("hostile").read_text())["levels"] if rc == 0 else []
    return rc, err, levels


def test_a_trickling_server_fails_each_request_at_its_deadline(hostile, prompts, tmp_path) -> None:
    def trickle(write: Write, stopping: threading.Event) -> None:
        write(SSE_HEAD)
        while not stopping.wait(0.1):  # a byte at a time, never a whole line: every read succeeds
            write(b" ")

    hostile.script = trickle
    rc, err, [level] = bench(hostile, prompts, Workspace(tmp_path / "ws"), "--model", "m", "--timeout", "0.5")
    assert rc == 0, err
    assert level["failed"] == 2 and level["errors"] == {"no complete answer within 0.5 s (--timeout)": 2}
    listing, hostile.models = hostile.models, trickle  # and without --model, listing the models has the deadline too
    try:
        rc, err, _ = bench(hostile, prompts, Workspace(tmp_path / "ws"), "--timeout", "0.5")
    finally:
        hostile.models = listing
    assert rc == 2 and "cannot list the models" in err and "no answer within 0.5 s" in err, err


def test_a_model_list_that_is_not_one_is_a_one_line_error(hostile, prompts, tmp_path) -> None:
    """A redirect (httpx's text for it spans three lines) or a body that is not JSON: one line naming the URL."""
    listing = hostile.models
    for answer, said in ((b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/v1/models\r\n", "302 Found"),
                         (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", "JSONDecodeError")):
        hostile.models = lambda write, stopping, answer=answer: write(answer + b"Content-Length: 6\r\nConnection: close\r\n\r\n<html>")
        try:
            rc, err, _ = bench(hostile, prompts, Workspace(tmp_path / "ws"), "--timeout", "5")
        finally:
            hostile.models = listing
        last = err.strip().splitlines()[-1]
        assert rc == 2 and last.startswith("londinium: error: cannot list the models at") and said in last, err
        assert last.endswith("; pass --model NAME"), err


def test_a_300_mb_line_fails_the_request_after_its_first_megabyte(hostile, prompts, tmp_path) -> None:
    def huge(write: Write, stopping: threading.Event) -> None:
        write(SSE_HEAD + b"data: ")
        block = b"x" * (1 << 20)
        for _ in range(300):  # the client stops reading after one MiB; the write then fails
            write(block)

    hostile.script = huge
    rc, err, [level] = bench(hostile, prompts, Workspace(tmp_path / "ws"), "--model", "m", "--timeout", "60")
    assert rc == 0, err
    assert level["failed"] == 2 and level["errors"] == {"malformed stream: a stream line ran past 1 MiB": 2}


# ---- chunks of any shape -------------------------------------------------------------------------

texts = st.text(max_size=5)
good_choice = st.fixed_dictionaries({"text": texts}, optional={"finish_reason": st.none() | st.sampled_from(["length", "stop"]),
                                                               "index": st.just(0)})
good_chunks = st.one_of(
    st.builds(lambda c: {"choices": [c]}, good_choice),
    st.builds(lambda p, c: {"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}},
              st.integers(0, len(PROMPT) + 16), st.integers(0, MAX_TOKENS)),
).map(lambda chunk: json.dumps(chunk).encode())
anything = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
not_a_count = (st.none() | st.booleans() | st.floats(allow_nan=False) | texts | st.lists(st.integers(), max_size=2)
               | st.integers(max_value=-1) | st.integers(min_value=10**6))
bad_chunks = st.one_of(
    st.builds(lambda n: {"choices": [], "usage": {"prompt_tokens": n, "completion_tokens": 1}}, not_a_count).map(json.dumps),
    st.builds(lambda n: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n}}, not_a_count).map(json.dumps),
    st.sampled_from(['{"choices": [], "usage": {"prompt_tokens": NaN, "completion_tokens": 1}}',
                     '{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": Infinity}}']),
    st.builds(lambda u: {"usage": u}, st.text(min_size=1, max_size=5) | st.lists(st.integers(), min_size=1, max_size=2)).map(json.dumps),
    st.builds(lambda c: {"choices": c}, st.text(min_size=1, max_size=5) | st.lists(texts | st.integers(), min_size=1, max_size=2)
              | st.dictionaries(texts, anything, min_size=1, max_size=2)).map(json.dumps),
    st.builds(lambda t: {"choices": [{"text": t}]}, st.integers() | st.lists(texts, min_size=1, max_size=2) | st.booleans()).map(json.dumps),
    st.builds(lambda f: {"choices": [{"text": "a", "finish_reason": f}]}, st.integers() | st.lists(texts, min_size=1, max_size=1)).map(json.dumps),
    # another choice than the one asked for (n = 1): an index other than 0, or several choices
    st.builds(lambda i: {"choices": [{"text": "a", "index": i}]}, anything.filter(lambda v: not (type(v) is int and v == 0))).map(json.dumps),
    st.builds(lambda n: {"choices": [{"text": "a", "index": 0}] * n}, st.integers(2, 4)).map(json.dumps),
    st.builds(lambda e: {"error": e}, anything).map(json.dumps),
    anything.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    st.text(min_size=1, max_size=10).filter(lambda t: "\n" not in t and "\r" not in t and t.strip() != "[DONE]" and not _an_object(t)),
).map(lambda line: line.encode() if isinstance(line, str) else line)
def _an_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


bad_bytes = st.binary(min_size=1, max_size=8).map(lambda b: b"\xff" + b.replace(b"\n", b""))  # not UTF-8


@pytest.mark.slow  # ~11 s: 40 drawn chunk shapes; the named cases stay in the default run
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(before=st.lists(good_chunks, max_size=3), bad=st.none() | bad_chunks | bad_bytes, after=st.lists(good_chunks, max_size=3))
def test_any_chunk_shape_completes_the_run_with_the_reason_recorded(hostile, before, bad, after) -> None:
    """Well-formed chunks around at most one malformed one: the sweep completes; a malformed chunk
    fails its request with the reason; without one, a request fails only for carrying no text (and
    says so). (The library's sweep, not the CLI: the report's plots would cost a second an example;
    the tests above run the CLI.)"""
    hostile.script = stream([*before, *([bad] if bad is not None else []), *after])
    spec = BenchSpec(base_url=hostile.url, model="m", num_prompts=2, warmup=0, output_len=MAX_TOKENS, timeout_s=30).validate()
    [level] = asyncio.run(bench_serve_async(spec, [BenchPrompt(PROMPT, MAX_TOKENS)] * 2))["levels"]
    requests: list[dict[str, Any]] = level["requests"]
    assert len(requests) == 2 and level["completed"] + level["failed"] == 2
    has_choice = any(b'"choices": [{' in line for line in before)
    for r in requests:
        if bad is not None:
            assert not r["success"] and r["error"].startswith(("malformed stream: ", "error in stream: ")), (bad, r["error"])
        elif has_choice or any(b'"choices": [{' in line for line in after):
            assert r["success"] and 0 <= r["output_tokens"] <= MAX_TOKENS and r["error"] == "", r
        else:
            assert not r["success"] and r["error"] == "the stream ended without a completion chunk"
