"""`londinium mcp` through the real protocol: the official `mcp` client against the server as a
subprocess, over stdio and over streamable HTTP on 127.0.0.1, on a tiny trained run.

One stdio session makes every call (starting a server costs an interpreter, torch and the model),
and the tests below check what it answered; the HTTP test starts its own server and always stops it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from londinium.config import load_config
from londinium.workspace import Workspace

from tests.integration.mcp_helpers import (ODD_ID, ODD_TEXT, PASSAGE, RUN, free_port, mcp_workspace, server_args, server_env,
                                           stop, text_of, wait_for_port)

TOOLS = {"generate", "score_text", "compare_continuations", "search_corpus", "ask", "get_document", "model_info"}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory) -> Workspace:
    return mcp_workspace(tiny_workspace, tmp_path_factory)


async def stdio_session(ws: Workspace) -> dict:
    """Everything one client session over stdio asks, and what came back."""
    from mcp import Client, StdioServerParameters

    out: dict = {}
    params = StdioServerParameters(command=sys.executable, args=server_args(ws), env=server_env())
    async with Client(params, read_timeout_seconds=120) as c:
        out["server_info"] = c.server_info
        out["instructions"] = c.instructions
        out["tools"] = {t.name: t for t in (await c.list_tools()).tools}
        out["resources"] = {str(r.uri): r for r in (await c.list_resources()).resources}
        out["templates"] = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
        out["prompts"] = {p.name: p for p in (await c.list_prompts()).prompts}
        call = c.call_tool
        out["generate"] = await call("generate", {"prompt": "Thou art", "max_tokens": 8, "temperature": 0.7, "seed": 3})
        out["generate_again"] = await call("generate", {"prompt": "Thou art", "max_tokens": 8, "temperature": 0.7, "seed": 3})
        out["generate_alone"] = await call("generate", {"prompt": "Thou art", "max_tokens": 6, "temperature": 0.9, "seed": 3})
        out["generate_concurrent"] = await asyncio.gather(*[
            call("generate", {"prompt": p, "max_tokens": 6, "temperature": 0.9, "seed": s})
            for p, s in [("Thou art", 3), ("The king", 4), ("Thou art", 3), ("The sea", 5)]])
        out["score"] = await call("score_text", {"text": PASSAGE, "top": 3})
        out["compare"] = await call("compare_continuations", {"prompt": "Thus saith the", "continuations": [" Lord.", " sausage."]})
        out["search"] = await call("search_corpus", {"query": "Thus saith the Lord", "k": 3, "split": "val"})
        doc_id = out["search"].structured_content["hits"][0]["id"]
        out["document"] = await call("get_document", {"id": doc_id})
        out["model_info"] = await call("model_info", {})
        out["ask"] = await call("ask", {"question": out["document"].structured_content["text"].split(".")[0], "k": 3})
        out["ask_refused"] = await call("ask", {"question": "How does a lithium-ion battery store electric charge?"})
        out["ask_empty"] = await call("ask", {"question": " "})
        out["read"] = {uri: (await c.read_resource(uri)).contents[0].text for uri in out["resources"]}
        out["read_document"] = (await c.read_resource(out["search"].structured_content["hits"][0]["uri"])).contents[0].text
        out["prompt"] = await c.get_prompt("explain_phrase_sources", {"phrase": "saith the Lord"})
        out["odd_search"] = await call("search_corpus", {"query": "zounds parchment", "k": 1})
        odd_uri = out["odd_search"].structured_content["hits"][0]["uri"]
        out["odd_read"] = (await c.read_resource(odd_uri)).contents[0].text
        out["odd_document"] = await call("get_document", {"id": ODD_ID})
        out["errors"] = {
            "unknown_document": await call("get_document", {"id": "tiny/no-such-doc"}),
            "empty_prompt": await call("generate", {"prompt": "   "}),
            "long_prompt": await call("generate", {"prompt": "thou " * 5000}),
            "prompt_over_context": await call("generate", {"prompt": "thou " * 200, "max_tokens": 4}),
            "bad_top_p": await call("generate", {"prompt": "Thou", "top_p": 1.5}),
            "bad_max_tokens": await call("generate", {"prompt": "Thou", "max_tokens": 0}),
            "same_continuations": await call("compare_continuations", {"prompt": "Thus", "continuations": [" a", " a"]}),
            "unknown_source": await call("search_corpus", {"query": "lord", "source": "homer"}),
            "misspelt_argument": await call("generate", {"prompt": "Thou", "max_tokens": 2, "temprature": 0.5}),
            "unknown_arguments": await call("search_corpus", {"query": "lord", "limit": 2, "kk": 1}),
        }
        for name, (prompt, args) in {"unknown_prompt": ("explain_everything", {"phrase": "x"}),
                                     "missing_prompt_argument": ("explain_phrase_sources", {}),
                                     "unknown_prompt_argument": ("continue_in_period_style", {"passage": "x", "style": "y"})}.items():
            try:
                await c.get_prompt(prompt, args)
                out["errors"][name] = None
            except Exception as e:  # the SDK raises the JSON-RPC error
                out["errors"][name] = (getattr(e, "code", None), str(e))
        try:
            await c.read_resource("londinium://corpus/no-such-doc")
            out["errors"]["unknown_resource"] = None
        except Exception as e:  # the SDK raises the JSON-RPC error
            out["errors"]["unknown_resource"] = str(e)
        out["after_errors"] = await call("model_info", {})
    return out


@pytest.fixture(scope="module")
def session(ws) -> dict:
    return asyncio.run(stdio_session(ws))


def test_ask_quotes_the_corpus_with_checked_citations_or_refuses(session, ws):
    from londinium.index.search import CorpusIndex

    answer = session["ask"].structured_content
    assert not session["ask"].is_error and not answer["refused"] and answer["citations"]
    index = CorpusIndex.load(ws)
    for c in answer["citations"]:
        assert c["valid"] and index.get(c["id"]).text[c["start"]:c["end"]] == c["quote"] and c["quote"] in answer["text"]
    refused = session["ask_refused"].structured_content
    assert refused["refused"] and refused["citations"] == [] and "does not say" in text_of(session["ask_refused"])
    assert session["ask_empty"].is_error and "question is empty" in text_of(session["ask_empty"])


def test_initialize_and_list_everything(session):
    assert session["server_info"].name == "londinium"
    assert set(session["tools"]) == TOOLS
    for tool in session["tools"].values():
        assert tool.description and tool.input_schema["type"] == "object" and tool.output_schema
        assert tool.input_schema["additionalProperties"] is False  # an argument it does not list is refused
    gen = session["tools"]["generate"].input_schema
    assert gen["required"] == ["prompt"] and {"max_tokens", "temperature", "top_p", "seed", "stop"} <= set(gen["properties"])
    # the tiny workspace's corpus was written directly, not by the corpus stage: no data card to list
    assert set(session["resources"]) == {"londinium://reports/tokenizer", "londinium://reports/eval", "londinium://reports/model-card"}
    assert session["templates"] == ["londinium://corpus/{id}"]
    assert set(session["prompts"]) == {"continue_in_period_style", "explain_phrase_sources"}
    # the corpus has the period-london profile: its language and its spelling folding are named
    assert "the English of London, 1590-1670" in session["instructions"] and "any spelling" in session["instructions"]
    assert "London, 1590-1670" in gen["properties"]["prompt"]["description"]
    assert "'vpon' finds 'upon'" in session["tools"]["search_corpus"].input_schema["properties"]["query"]["description"]


def test_generate_is_seeded_and_safe_under_concurrent_calls(session):
    r = session["generate"]
    assert not r.is_error
    s = r.structured_content
    assert s["completion_tokens"] >= 1 and s["finish_reason"] in ("stop", "length") and s["prompt_tokens"] >= 1
    assert s["text"] in text_of(r)
    assert session["generate_again"].structured_content["text"] == s["text"]
    first, second, third, fourth = (x.structured_content for x in session["generate_concurrent"])
    # same prompt and seed, decoded while other calls ran: what it gives alone
    assert first == third == session["generate_alone"].structured_content
    assert all(not x.is_error for x in session["generate_concurrent"])


def test_score_text_equals_eval_of_the_same_text(session, ws):
    results = json.loads(ws.eval_results(RUN).read_text(encoding="utf-8"))
    [(path, want)] = results["perplexity"]["texts"].items()
    got = session["score"].structured_content
    assert (got["tokens"], got["bytes"]) == (want["tokens"], want["bytes"])
    assert got["loss"] == want["loss"] and got["perplexity"] == want["perplexity"]
    assert got["bits_per_byte"] == want["bits_per_byte"] and got["log_likelihood"] == -want["nll"]
    worst = got["surprising"]
    assert len(worst) == 3 and worst[0]["nll"] >= worst[1]["nll"] >= worst[2]["nll"]
    for t in worst:
        assert PASSAGE[t["start"]:t["end"]] == t["token"]


def test_compare_continuations_ranks_by_log_likelihood(session):
    r = session["compare"].structured_content
    ranking = r["ranking"]
    assert [x["rank"] for x in ranking] == [1, 2] and ranking[0]["logprob"] >= ranking[1]["logprob"]
    assert r["best"] == ranking[0]["continuation"]
    # the tiny corpus says "Thus saith the Lord." over and over; six steps are enough to prefer it
    assert r["best"] == " Lord."


def test_search_and_get_document_carry_provenance(session, ws):
    hits = session["search"].structured_content["hits"]
    assert hits and all(h["split"] == "val" for h in hits)
    assert "saith" in hits[0]["snippet"].lower()
    doc = session["document"].structured_content
    assert doc["id"] == hits[0]["id"] and doc["source"] == "tiny" and doc["split"] == "val"
    assert doc["text"][hits[0]["snippet_start"]:hits[0]["snippet_end"]] == hits[0]["snippet"]
    assert session["read_document"] == doc["text"]
    corpus = [json.loads(line) for line in ws.corpus_split("val").read_text(encoding="utf-8").splitlines()]
    assert doc["text"] == next(r["text"] for r in corpus if r["id"] == doc["id"])


def test_model_info_and_resources(session, ws):
    info = session["model_info"].structured_content
    assert info["run"] == RUN and info["step"] == 6 and info["parameters"] > 0
    assert info["training_tokens"] == 6 * 512 and info["architecture"]["n_layer"] == 2
    assert info["architecture"]["transformers_class"] == "GPT2LMHeadModel"
    assert info["eval"]["perplexity"]["val"]["bits_per_byte"] > 0
    cloze = json.loads(ws.eval_results(RUN).read_text(encoding="utf-8"))["cloze"]["summary"]["overall"]
    assert info["eval"]["cloze"]["accuracy"] == cloze["accuracy"] and "probes" not in info["eval"]  # eval.probes = false
    assert f"cloze set: {cloze['accuracy']:.1%} ± {cloze['accuracy_se']:.1%} correct of {cloze['n']}" in text_of(session["model_info"])
    read = session["read"]
    assert read["londinium://reports/tokenizer"] == ws.tokenizer_report_md.read_text(encoding="utf-8")
    assert read["londinium://reports/eval"] == ws.eval_report_md(RUN).read_text(encoding="utf-8")
    assert read["londinium://reports/model-card"].startswith("# Model card")
    assert "search_corpus" in session["prompt"].messages[0].content.text
    assert "saith the Lord" in session["prompt"].messages[0].content.text


def test_bad_input_is_a_tool_error_and_the_session_goes_on(session):
    e = session["errors"]
    expected = {
        "unknown_document": "no document with id 'tiny/no-such-doc'",
        "empty_prompt": "prompt is empty",
        "long_prompt": "mcp.max_prompt_chars",
        "prompt_over_context": "context",
        "bad_top_p": "top_p",
        "bad_max_tokens": "max_tokens",
        "same_continuations": "must all differ",
        "unknown_source": "no such source",
        "misspelt_argument": "generate: unknown argument 'temprature'; it takes max_tokens, prompt, seed, stop, temperature, top_p",
        "unknown_arguments": "search_corpus: unknown arguments 'kk', 'limit'; it takes k, period_from,",
    }
    for name, phrase in expected.items():
        assert e[name].is_error, name
        assert phrase in text_of(e[name]), (name, text_of(e[name]))
    assert "no document with id 'no-such-doc'" in e["unknown_resource"]
    assert not session["after_errors"].is_error


def test_prompt_errors_are_invalid_params_naming_the_prompt_and_argument(session):
    e = session["errors"]
    assert e["unknown_prompt"] == (-32602, "unknown prompt 'explain_everything'; this server has: "
                                           "continue_in_period_style, explain_phrase_sources")
    assert e["missing_prompt_argument"] == (-32602, "prompt 'explain_phrase_sources' needs the argument 'phrase'; it takes phrase")
    assert e["unknown_prompt_argument"] == (-32602, "prompt 'continue_in_period_style': unknown argument 'style'; it takes passage")


def test_a_document_id_with_percent_signs_round_trips_through_its_uri(session):
    [hit] = session["odd_search"].structured_content["hits"]
    assert hit["id"] == ODD_ID and session["odd_read"] == ODD_TEXT
    assert session["odd_document"].structured_content["uri"] == hit["uri"]


@pytest.mark.slow  # a second server start (~6 s); the stdio tests above cover the tools
def test_streamable_http_with_an_api_key(ws):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    port, key = free_port(), "test-key-123"
    proc = subprocess.Popen([sys.executable, *server_args(ws, "--http", "--host", "127.0.0.1", "--port", str(port), "--api-key", key)],
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(proc, port)
        url = f"http://127.0.0.1:{port}/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        refused = httpx2.post(url, json=body, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and "API key" in refused.text
        assert httpx2.post(url, json=body).status_code == 401
        # a body that is not one JSON-RPC message gets the error JSON-RPC names (the SDK alone answered
        # some of these -32602, and read a float id as a notification: 202 and never an answer)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        for hostile, code, request_id in [(b"garbage", -32700, None), (b"[" * 5000, -32700, None), (b"[]", -32600, None),
                                          (b'{"jsonrpc": "2.0", "id": 7.5, "method": "ping"}', -32600, None),
                                          (b'{"jsonrpc": "2.0", "id": 4, "method": 123}', -32600, 4),
                                          (b'{"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"x": "\\ud800"}}', -32700, None),
                                          (b" " * (4 << 20) + b"{}", -32600, None)]:
            r = httpx2.post(url, content=hostile, headers=headers)
            assert r.status_code in (400, 413) and (r.json()["error"]["code"], r.json()["id"]) == (code, request_id), (hostile[:60], r.text)

        async def talk() -> dict:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
                async with Client(streamable_http_client(url, http_client=http)) as c:
                    return {
                        "tools": {t.name for t in (await c.list_tools()).tools},
                        "generate": await c.call_tool("generate", {"prompt": "Thou art", "max_tokens": 8, "temperature": 0.7, "seed": 3}),
                        "search": await c.call_tool("search_corpus", {"query": "saith the Lord", "k": 2}),
                        "error": await c.call_tool("get_document", {"id": "nope"}),
                        "card": (await c.read_resource("londinium://reports/tokenizer")).contents[0].text,
                    }

        got = asyncio.run(talk())
        assert got["tools"] == TOOLS
        assert not got["generate"].is_error and got["generate"].structured_content["completion_tokens"] >= 1
        assert len(got["search"].structured_content["hits"]) == 2
        assert got["error"].is_error and "no document with id 'nope'" in text_of(got["error"])
        assert got["card"] == ws.tokenizer_report_md.read_text(encoding="utf-8")
    finally:
        stop(proc)


def test_without_an_index_the_search_tools_say_how_to_build_it_and_the_rest_work(ws, tmp_path):
    """In process (the SDK's client takes the server object): a workspace whose index was never built."""
    from mcp import Client

    from londinium.mcp.server import build_server
    from londinium.mcp.service import ModelService

    bare = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, bare.root, ignore=shutil.ignore_patterns("index"))
    cfg = load_config(overrides=[f"serve.run={RUN!r}", "serve.checkpoint='latest'"])
    server = build_server(ModelService.load(bare, cfg))

    async def talk():
        async with Client(server) as c:
            return (await c.call_tool("search_corpus", {"query": "lord"}), await c.call_tool("get_document", {"id": "x"}),
                    await c.call_tool("score_text", {"text": PASSAGE}))

    search, document, score = asyncio.run(talk())
    for r in (search, document):
        assert r.is_error and "londinium index build" in text_of(r)
    assert not score.is_error and score.structured_content["tokens"] > 0
