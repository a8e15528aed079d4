"""`/v1/embeddings` and the `<model>+rag` alias on a real `londinium serve` process, through the
official `openai` client, LangChain's `OpenAIEmbeddings`, and `londinium ask --base-url`."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from londinium.config import load_config
from londinium.retrieve.answer import REFUSAL
from londinium.retrieve.embedders import open_embedder
from londinium.retrieve.retriever import Retriever
from londinium.workspace import Workspace

from tests.integration.rag_helpers import OVERRIDES, rag_workspace
from tests.integration.serve_helpers import EXTRA, free_port, serve_process, stop, wait_healthy
from tests.integration.train_helpers import cli_in_process, train_args

SETTINGS = [x for o in OVERRIDES for x in ("--set", o)]
OUT_OF_CORPUS = "How does a lithium-ion battery store electric charge?"


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory) -> Workspace:
    return rag_workspace(tiny_workspace, tmp_path_factory)


@pytest.fixture(scope="module")
def server(ws):
    run = "rag-tiny"  # a few steps: the plumbing is under test, not the prose
    if not ws.checkpoints_dir(run).is_dir():
        rc, _, err = cli_in_process(train_args(ws, run, 4, *EXTRA))
        assert rc == 0, err
    port = free_port()
    proc = serve_process(ws, run, port, *SETTINGS)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def line(ws) -> str:
    doc = next(d for d in Retriever.load(ws, load_config()).index.documents if d.split == "val")
    return " ".join(doc.text.split()[:6])  # short: the tiny model's context (128) must hold the passages too


def test_openai_sdk_embeddings_equal_the_embedder_in_process(ws, server):
    import openai

    client = openai.OpenAI(base_url=server, api_key="none")
    texts = ["Thus saith the Lord.", "The king and the queen"]
    expected = open_embedder(ws, load_config(overrides=OVERRIDES)).embed(texts)
    got = client.embeddings.create(model="corpus", input=texts)  # the SDK asks for base64 and decodes it
    assert [d.index for d in got.data] == [0, 1] and got.model == "corpus" and got.usage.total_tokens == 9
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), expected, atol=1e-6)
    floats = client.embeddings.create(model="corpus", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], atol=1e-6)
    short = client.embeddings.create(model="corpus", input=texts[0], dimensions=8).data[0].embedding
    assert len(short) == 8 and np.linalg.norm(short) == pytest.approx(1, abs=1e-5)


def test_langchain_openai_embeddings_against_the_server(ws, server):
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: LangChain otherwise sends tiktoken ids, which this server refuses (below)
    lc = OpenAIEmbeddings(model="corpus", base_url=server, api_key="none", check_embedding_ctx_length=False)
    docs = lc.embed_documents(["Thus saith the Lord.", "The night is fair."])
    query = lc.embed_query("Thus saith the Lord.")
    assert len(docs) == 2 and len(docs[0]) == 32
    np.testing.assert_allclose(query, docs[0], atol=1e-6)


def test_embeddings_refuse_token_ids_empty_text_and_other_models(server):
    for body, status, param in (({"model": "corpus", "input": [1, 2, 3]}, 400, "input"),
                                ({"model": "corpus", "input": ["ok", ""]}, 400, "input"),
                                ({"model": "corpus", "input": "ok", "encoding_format": "int8"}, 400, "encoding_format"),
                                ({"model": "corpus", "input": "ok", "dimensions": 999}, 400, "dimensions"),
                                ({"model": "text-embedding-3-small", "input": "ok"}, 404, "model")):
        r = httpx.post(f"{server}/embeddings", json=body, timeout=30)
        assert r.status_code == status, r.text
        assert r.json()["error"]["param"] == param
    assert "check_embedding_ctx_length=False" in httpx.post(f"{server}/embeddings", json={"model": "corpus", "input": [[5, 6]]}, timeout=30).text


def test_rag_alias_answers_with_valid_citations_and_refuses(ws, server, line):
    import openai

    client = openai.OpenAI(base_url=server, api_key="none")
    grounded = client.chat.completions.create(model="tiny+rag", messages=[{"role": "user", "content": line}], max_tokens=8)
    extra = grounded.model_extra
    assert grounded.model == "tiny+rag" and extra["refused"] is False and extra["citations"]
    index = Retriever.load(ws, load_config()).index
    for c in extra["citations"]:
        assert c["valid"] and index.get(c["id"]).text[c["start"]:c["end"]] == c["quote"]
    refused = client.chat.completions.create(model="tiny+rag", messages=[{"role": "user", "content": OUT_OF_CORPUS}])
    assert refused.choices[0].message.content == REFUSAL and refused.model_extra["refused"] is True
    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": line}], max_tokens=4)
    assert "citations" not in (plain.model_extra or {})  # the alias only
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.chat.completions.create(model="tiny+rag", messages=[{"role": "user", "content": line}], stream=True)


def test_ask_generates_through_an_openai_compatible_server(ws, server, line):
    # one short passage and a few tokens: the tiny model's context is 128 tokens
    cmd = [sys.executable, "-m", "londinium", "ask", line, "-w", str(ws.root), "--base-url", server, "--model", "tiny",
           "--format", "json", "--mode", "bm25", "--k", "1", "--set", "index.snippet_chars=60", "--set", "generate.max_tokens=4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"OPENAI_API_KEY": "none", "PATH": ""})
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["mode"] == "generate" and not answer["refused"]
    assert answer["citations"] and all(c["valid"] for c in answer["citations"])


def test_the_trained_model_embeds_by_mean_pooling_its_hidden_states(ws, server):
    from londinium.retrieve.embedders import model_embedder

    embedder = model_embedder(ws, "rag-tiny")  # the run the server fixture trained
    texts = ["Thus saith the Lord.", "The king and the queen", "Thus saith the Lord."]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, embedder.dim) and embedder.name == "model:rag-tiny"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)  # the same text, the same vector
    assert vectors[0] @ vectors[1] < 0.9999
