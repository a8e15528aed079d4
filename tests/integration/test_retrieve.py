"""The vector index stage, retrieve() and ask on the tiny workspace: up-to-date and tamper checks,
citations checked against the corpus, refusal, and bad input as one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from londinium.config import load_config
from londinium.errors import LondiniumError
from londinium.retrieve.answer import REFUSAL, ask
from londinium.retrieve.evaluate import calibrate, make_queries, score_modes
from londinium.retrieve.retriever import Retriever
from londinium.retrieve.vectors import RetrieveError, VectorIndex, build_vectors
from londinium.workspace import Workspace

from tests.integration.rag_helpers import OVERRIDES, rag_workspace

OUT_OF_CORPUS = "How does a lithium-ion battery store electric charge?"


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory) -> Workspace:
    return rag_workspace(tiny_workspace, tmp_path_factory)


@pytest.fixture(scope="module")
def retriever(ws) -> Retriever:
    return Retriever.load(ws, load_config(overrides=OVERRIDES))


def a_line(retriever: Retriever) -> tuple[str, str]:
    """(document id, its first sentence) of a val document."""
    doc = next(d for d in retriever.index.documents if d.split == "val")
    return doc.id, doc.text.split(".")[0]


def test_vector_stage_is_up_to_date_and_reruns_when_its_settings_change(ws, tmp_path):
    said = []
    cfg = load_config(overrides=OVERRIDES)
    build_vectors(ws, cfg, log=said.append)
    assert any("up to date" in m for m in said)
    meta = VectorIndex.load(ws).meta
    assert meta["documents"] == 144 and meta["embedder"] == "corpus" and meta["dim"] == 32
    # searching settings (mode, weights) are not the stage's: changing them re-runs nothing
    said.clear()
    build_vectors(ws, load_config(overrides=[*OVERRIDES, "retrieve.vector_weight=0.9", "retrieve.k=3"]), log=said.append)
    assert any("up to date" in m for m in said)


def test_a_tampered_or_stale_vector_index_is_one_line_naming_the_fix(ws, tmp_path):
    import shutil

    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    emb = np.load(copy.vectors_embeddings)
    emb[0, 0] += 0.5
    np.save(copy.vectors_embeddings, emb)
    with pytest.raises(RetrieveError, match=r"damaged: .*embeddings.npy changed since the vectors stage wrote it.*londinium index vectors"):
        VectorIndex.load(copy)
    shutil.copy(ws.vectors_embeddings, copy.vectors_embeddings)  # back as recorded: it loads
    VectorIndex.load(copy)
    with open(copy.corpus_split("test"), "a", encoding="utf-8") as f:  # the corpus moves on
        f.write('{"id": "tiny/new", "text": "A new document.", "source": "tiny"}\n')
    copy.adopt("corpus", [copy.corpus_split(s) for s in ("train", "val", "test")])
    with pytest.raises(RetrieveError, match=r"built from another .*test.jsonl.*londinium index vectors"):
        VectorIndex.load(copy)
    (copy.vectors_meta).unlink()
    with pytest.raises(RetrieveError, match="no vector index"):
        VectorIndex.load(copy)


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_every_passage_is_the_documents_text_at_its_offsets(retriever, mode):
    doc_id, line = a_line(retriever)
    passages = retriever.retrieve(line, k=5, mode=mode)
    assert passages and [p.rank for p in passages] == list(range(1, len(passages) + 1))
    for p in passages:
        assert retriever.index.get(p.id).text[p.start:p.end] == p.text
        assert 0 <= p.support <= 1
    if mode != "vector":  # a whole sentence cut from the document finds it
        assert doc_id in [p.id for p in passages]


def test_filters_hold_in_every_mode(retriever):
    doc_id, line = a_line(retriever)
    for mode in ("bm25", "vector", "hybrid"):
        assert {p.split for p in retriever.retrieve(line, k=10, mode=mode, split="test")} == {"test"}


def test_ask_quotes_the_corpus_with_valid_citations(retriever):
    doc_id, line = a_line(retriever)
    answer = ask(retriever, line)
    assert not answer.refused and answer.citations
    c = answer.citations[0]
    assert c.valid and retriever.index.get(c.id).text[c.start:c.end] == c.quote and c.quote in answer.text
    assert answer.support >= answer.min_support


def test_ask_refuses_what_the_corpus_does_not_say(retriever):
    answer = ask(retriever, OUT_OF_CORPUS)
    assert answer.refused and answer.text == REFUSAL and answer.citations == []
    assert answer.support < answer.min_support


def test_bad_input_is_a_clear_error(retriever):
    for kwargs, message in (({"query": ""}, "query is empty"), ({"query": "  "}, "query is empty"),
                            ({"query": "king", "k": 0}, "k = 0"), ({"query": "king", "k": 101}, "k = 101"),
                            ({"query": "king", "source": "nope"}, "source filter 'nope'.*sources: tiny"),
                            ({"query": "king", "split": "dev"}, "split filter 'dev'"),
                            ({"query": "king", "period_from": 1700, "period_to": 1600}, "period_from"),
                            ({"query": "king", "mode": "semantic"}, "mode 'semantic'"),
                            ({"query": "king", "fusion": "max"}, "fusion 'max'")):
        with pytest.raises(LondiniumError, match=message):
            retriever.retrieve(**kwargs)


def test_eval_queries_score_and_calibrate(retriever):
    queries = make_queries(retriever.index, per_kind=8)
    kinds = {q.kind for q in queries}
    assert {"line", "misquote", "unanswerable"} <= kinds  # the tiny corpus has no rare words for keyword questions
    assert all(q.gold for q in queries if q.kind != "unanswerable")
    table = score_modes(retriever, queries, modes=("bm25", "hybrid"))
    assert table["bm25"]["line"]["recall@10"] >= 0.75  # lines cut from the documents are found
    refusal = calibrate(retriever, queries)
    assert 0 < refusal["threshold"] < 1 and refusal["held_out"]["refusal"] >= 0.9


def test_cli_ask_answers_and_refuses_through_the_real_command(ws):
    doc = next(d for d in Retriever.load(ws, load_config()).index.documents if d.split == "val")
    cmd = [sys.executable, "-m", "londinium", "ask", "-w", str(ws.root), "--set", "retrieve.mode=bm25"]
    ok = subprocess.run([*cmd, doc.text.split(".")[0], "--format", "json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    answer = json.loads(ok.stdout)
    assert not answer["refused"] and answer["citations"][0]["valid"]
    bad = subprocess.run([*cmd, ""], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "query is empty" in bad.stderr


def test_a_corpus_of_technical_documentation_answers_with_citations_and_refuses(tmp_path):
    """Not period English: code-heavy Markdown and HTML pages (tests/helpers/docs_corpus.py), through the
    real `ask` command in hybrid mode; its corpus-learned embedder is learned from these pages alone."""
    from helpers.docs_corpus import write_docs_corpus

    from londinium.corpus.build import build_corpus
    from londinium.index.build import build_index

    pages = write_docs_corpus(tmp_path)
    overrides = [f"corpus.sources={pages.registry}", f"corpus.cache_dir={tmp_path / 'cache'}", "retrieve.mode=hybrid"]
    ws, cfg = Workspace(tmp_path / "ws"), load_config(overrides=overrides)
    build_corpus(ws, cfg.corpus)
    build_index(ws, cfg, log=lambda m: None, show_progress=False)
    build_vectors(ws, cfg, log=lambda m: None)
    cmd = [sys.executable, "-m", "londinium", "ask", "-w", str(ws.root), *(a for o in overrides for a in ("--set", o)), "--format", "json"]
    answered = subprocess.run([*cmd, "iterate over a copy"], capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0, answered.stderr
    answer = json.loads(answered.stdout)
    [first, *_] = answer["citations"]
    assert not answer["refused"] and first["valid"] and first["id"].startswith("docs/guide/loops.md")
    assert "iterate over a copy" in first["quote"]
    retriever = Retriever.load(ws, cfg)
    assert first["quote"] == retriever.index.get(first["id"]).text[first["start"]:first["end"]]
    assert ask(retriever, "Who was the Prince of Denmark?").refused
