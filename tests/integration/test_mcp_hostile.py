"""`londinium mcp` over stdio against what a broken or hostile host sends: raw lines written to a real
server process (no client library to tidy them up), on a workspace whose search index is damaged.

Every line that asks for an answer gets one (a result, or the JSON-RPC error for what is wrong with
it), and the server goes on answering; a damaged index does not stop the server, whose search tools
say which file is damaged and how to rebuild it.
"""

from __future__ import annotations

import itertools
import json
import queue
import shutil
import subprocess
import sys
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from londinium.workspace import Workspace

from tests.integration.mcp_helpers import mcp_workspace, server_args, server_env, stop

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWER_TIMEOUT = 30  # seconds: generous on a loaded machine; a hang shows as this timeout, not as a wait forever


class RawStdio:
    """A `londinium mcp` process spoken to line by line; its answers are collected by a thread."""

    def __init__(self, ws: Workspace, log):
        self.proc = subprocess.Popen([sys.executable, *server_args(ws)], env=server_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log)
        self.answers: queue.Queue = queue.Queue()
        self.ids = itertools.count()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(line)

    def send(self, line: bytes) -> None:
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def collect(self, ids: set, timeout: float = ANSWER_TIMEOUT) -> list[dict]:
        """Answers until one has come for each of `ids`; each answer must be one JSON-RPC message."""
        got: list[dict] = []
        while not ids <= {a.get("id") for a in got}:
            try:
                line = self.answers.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no answer for {ids - {a.get('id') for a in got}} within {timeout} s; got {got}") from None
            answer = json.loads(line)
            assert answer["jsonrpc"] == "2.0" and ("result" in answer) != ("error" in answer), answer
            got.append(answer)
        return got

    def request(self, method: str, params: dict | None = None, timeout: float = ANSWER_TIMEOUT) -> dict:
        request_id = f"req-{next(self.ids)}"
        self.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}).encode())
        return next(a for a in self.collect({request_id}, timeout) if a["id"] == request_id)


@pytest.fixture(scope="module")
def server(tiny_workspace, tmp_path_factory):
    """The server on a copy of the MCP workspace whose BM25 score array was cut short, initialized."""
    ws = mcp_workspace(tiny_workspace, tmp_path_factory)
    damaged = Workspace(tmp_path_factory.mktemp("hostile") / "ws")
    shutil.copytree(ws.root, damaged.root)
    scores = damaged.index_bm25_dir / "data.csc.index.npy"
    scores.write_bytes(scores.read_bytes()[:100])
    with open(damaged.root / "server.log", "wb") as log:
        raw = RawStdio(damaged, log)
        try:
            hello = raw.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                               "clientInfo": {"name": "raw", "version": "0"}}, timeout=120)  # loads torch and the model
            assert hello["result"]["serverInfo"]["name"] == "londinium", hello
            raw.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
            yield raw
        finally:
            stop(raw.proc)


def test_a_damaged_index_leaves_the_server_up_and_search_says_how_to_rebuild_it(server):
    search = server.request("tools/call", {"name": "search_corpus", "arguments": {"query": "lord"}})["result"]
    text = search["content"][0]["text"]
    assert search["isError"] and "data.csc.index.npy" in text and "londinium index build" in text, text
    info = server.request("tools/call", {"name": "model_info", "arguments": {}})["result"]
    assert not info["isError"] and info["structuredContent"]["run"] == "mcp"


def test_a_line_over_the_size_limit_is_refused_unread_and_the_server_goes_on(server):
    server.send(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * (4 << 20) + b'"}}')
    [answer] = server.collect({None})
    assert answer["error"]["code"] == -32600 and "more than 4,194,304 bytes" in answer["error"]["message"]
    assert server.request("ping")["result"] == {}


# ---- hostile lines ---------------------------------------------------------------------------------

surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(max_size=6) | st.tuples(st.text(max_size=3), surrogate).map("".join)  # json.dumps escapes a lone surrogate
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
methods = st.sampled_from(["ping", "tools/list", "tools/call", "prompts/get", "prompts/list", "resources/read",
                           "resources/list", "notifications/initialized", "completion/complete"]) | texts | values
params = values | st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["search_corpus", "get_document", "model_info", "explain_phrase_sources", "nope"]) | values,
    "arguments": st.dictionaries(st.sampled_from(["query", "id", "phrase", "k", "temprature"]) | texts, values, max_size=3) | values,
    "uri": st.sampled_from(["londinium://corpus/tiny%2F2-0", "londinium://corpus/%", "londinium://reports/eval"]) | values})
messages = st.fixed_dictionaries({}, optional={"jsonrpc": st.just("2.0") | values, "id": scalars, "method": methods,
                                               "params": params, "result": values, "error": values})
lines = st.one_of(
    messages.map(json.dumps).map(str.encode),
    values.map(json.dumps).map(str.encode),
    messages.map(lambda m: json.dumps(m)[:-1].encode()),  # cut short
    st.tuples(messages, st.sampled_from(["NaN", "Infinity", "-Infinity"])).map(
        lambda mc: json.dumps({**mc[0], "x": 0}).replace("0}", mc[1] + "}").encode()),
    st.integers(150, 5000).map(lambda d: b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": ' + b"[" * d + b"]" * d + b"}}"),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)


def must_answer(line: bytes) -> tuple[bool, Any]:
    """(whether the line must be answered, and the id a request's answer has), from JSON-RPC 2.0 alone:
    anything but an object without an id (a notification) or with an id and no method (a response)
    is answered. A request's answer has its id, or is an error with a null id where the message
    cannot be read (what is JSON is the server's parser's call: how deep it nests, say)."""
    try:
        msg = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return bool(line.strip()), None  # not JSON: a parse error (a blank line is no message)
    if not isinstance(msg, dict):
        return True, None
    if "id" not in msg or "method" not in msg:
        return False, None  # a notification or a response: answered only when malformed
    request_id = msg["id"]
    return True, request_id if type(request_id) in (int, str) else None


def test_every_hostile_line_is_answered_and_the_server_keeps_serving(server):
    pings = itertools.count()

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(line=lines)
    def each(line: bytes) -> None:
        must, request_id = must_answer(line)
        ping = f"ping-{next(pings)}"
        server.send(line)
        server.send(json.dumps({"jsonrpc": "2.0", "id": ping, "method": "ping"}).encode())
        got = server.collect({ping})  # the server goes on answering
        assert {"jsonrpc": "2.0", "id": ping, "result": {}} in got
        refused = any(a["id"] is None and a["error"]["code"] in (-32700, -32600) for a in got)  # answered before the next line
        if must and not refused:
            assert request_id is not None, (line, got)
            server.collect({request_id} - {a["id"] for a in got})  # a request may be answered after the ping

    each()


# ---- tool arguments of the wrong JSON type ---------------------------------------------------------

# Near misses of the probe's kind ("0.5" for a number, true for an integer) and other JSON values
# (text without lone surrogates: those make the line itself unreadable, a case of the test above).
clean = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=6), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=6)
WRONG = st.sampled_from(["yes", "0.5", "2", "", True, False, 2.5, -1.5, 10**30, [1], ["a"], {}, {"a": 1}]) | clean
VALID = {"prompt": "Thou", "text": "Thou art", "query": "lord", "id": "tiny/x", "continuations": [" a", " b"],
         "question": "Who is lord?"}  # every required argument of every tool (ask came with the rag work)


def json_types(schema: dict) -> set:
    """The JSON types an argument's published schema names (an optional one: its type or null)."""
    return {schema["type"]} if "type" in schema else {s.get("type") for s in schema.get("anyOf", [])}


def conforms(value: Any, types: set) -> bool:
    kinds = {"string": str, "boolean": bool, "array": list, "object": dict, "null": type(None)}
    if type(value) is int and ("integer" in types or "number" in types):
        return True
    if type(value) is float and ("number" in types or ("integer" in types and value.is_integer())):
        return True
    return any(type(value) is kinds[t] for t in types if t in kinds)


def test_tool_arguments_of_the_wrong_type_are_refused_by_name(server):
    """The SDK's argument models coerce: "0.5" ran as a temperature of 0.5, true searched from the
    year 1. Every argument of every tool, given a value its published schema's type excludes, is a
    tool error naming the tool and the argument; nothing runs."""
    tools = {t["name"]: t["inputSchema"] for t in server.request("tools/list")["result"]["tools"]}
    takes = sorted((name, arg) for name, schema in tools.items() for arg in schema.get("properties", {}))

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def each(data) -> None:
        name, arg = data.draw(st.sampled_from(takes), label="argument")
        types = json_types(tools[name]["properties"][arg])
        value = data.draw(WRONG.filter(lambda v: not conforms(v, types)), label="value")
        arguments = {a: VALID[a] for a in tools[name].get("required", [])} | {arg: value}
        result = server.request("tools/call", {"name": name, "arguments": arguments})["result"]
        text = result["content"][0]["text"]
        assert result["isError"] and text.startswith(f"{name}: argument '{arg}': ") and "\n" not in text, (arguments, text)

    each()
