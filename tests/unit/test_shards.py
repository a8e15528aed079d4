"""Shards hold exactly the encoded documents, each followed by <|endoftext|>, and know their tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tok_fixtures import adopt_corpus, write_corpus

from londinium.config import DataConfig, TokenizerConfig
from londinium.data.loader import open_shard
from londinium.data.shards import META_KEYS, encode_split, prepare_shards, shard_dtype
from londinium.errors import LondiniumError
from londinium.files import read_jsonl
from londinium.tokenizer import EOT, encode, eot_id, load_tokenizer, tokenizer_sha256
from londinium.tokenizer.train import train_tokenizer
from londinium.workspace import SPLITS, Workspace

QUIET = dict(log=lambda m: None)


def _tok_cfg(vocab: int = 600) -> TokenizerConfig:
    return TokenizerConfig(vocab_size=vocab, compare_gpt2=False, compare_sources=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("shards") / "ws")
    write_corpus(ws)
    train_tokenizer(ws, _tok_cfg(), **QUIET)
    prepare_shards(ws, DataConfig(encode_batch_docs=5), **QUIET)  # small batches: several flushes
    return ws


def test_shard_is_each_document_encoded_then_eot(prepared: Workspace):
    tok = load_tokenizer(prepared)
    for split in SPLITS:
        docs = [row["text"] for row in read_jsonl(prepared.corpus_split(split))]
        expected = [i for text in docs for i in (*encode(tok, text), eot_id(tok))]
        shard = open_shard(prepared, split)
        assert shard.meta["tokens"] == sum(len(encode(tok, t)) for t in docs) + len(docs) == len(shard.tokens)
        assert shard.tokens.tolist() == expected


def test_meta_records_what_training_needs(prepared: Workspace):
    tok = load_tokenizer(prepared)
    docs = [row["text"] for row in read_jsonl(prepared.corpus_split("train"))]
    meta = json.loads(prepared.shard_meta("train").read_text())
    assert tuple(meta) == META_KEYS
    assert meta == {
        "dtype": "uint16",
        "vocab_size": tok.get_vocab_size(),
        "tokens": meta["tokens"],
        "documents": len(docs),
        "text_bytes": sum(len(t.encode("utf-8")) for t in docs),
        "tokenizer_sha256": tokenizer_sha256(prepared),
        "eot_id": eot_id(tok),
        "split": "train",
    }


def test_literal_endoftext_in_a_document_does_not_split_it(prepared: Workspace):
    tok = load_tokenizer(prepared)
    rows = list(read_jsonl(prepared.corpus_split("val")))
    assert any(EOT in r["text"] for r in rows)  # the fixture has one
    shard = open_shard(prepared, "val")
    assert int((np.asarray(shard.tokens) == eot_id(tok)).sum()) == len(rows)


def test_vocabulary_over_65536_switches_shards_to_uint32(tmp_path: Path):
    from londinium.tokenizer import train_bpe

    tok = train_bpe(["a tiny corpus"] * 4, 300, show_progress=False)
    tok.add_tokens([f"zz{i}" for i in range(66_000)])  # pushes ids past the uint16 range
    high = tok.token_to_id("zz65999")
    assert high > 65535 and shard_dtype(tok.get_vocab_size()) == np.uint32
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"text": "zz65999 a"}) + "\n")
    meta = encode_split(tok, src, tmp_path / "train.bin", tmp_path / "train.meta.json", "train", "h" * 64)
    ids = np.fromfile(tmp_path / "train.bin", dtype=meta["dtype"])
    assert meta["dtype"] == "uint32" and high in ids.tolist()
    assert shard_dtype(65536) == np.uint16 and shard_dtype(65537) == np.uint32


def test_stage_skips_when_up_to_date_and_reruns_for_a_new_tokenizer(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    train_tokenizer(ws, _tok_cfg(400), **QUIET)
    assert prepare_shards(ws, DataConfig(), **QUIET) is True
    assert prepare_shards(ws, DataConfig(), **QUIET) is False
    old_hash = open_shard(ws, "train").meta["tokenizer_sha256"]
    train_tokenizer(ws, _tok_cfg(500), **QUIET)
    # Stale shards refuse to load against the workspace's new tokenizer...
    with pytest.raises(LondiniumError, match=old_hash):
        open_shard(ws, "train")
    # ...and the stage notices the new tokenizer by itself.
    assert prepare_shards(ws, DataConfig(), **QUIET) is True
    assert open_shard(ws, "train").meta["tokenizer_sha256"] == tokenizer_sha256(ws) != old_hash


def test_missing_inputs_say_which_stage_to_run(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(LondiniumError, match="londinium corpus build"):
        prepare_shards(ws, DataConfig(), **QUIET)
    write_corpus(ws, train_per_source=2)
    with pytest.raises(LondiniumError, match="londinium tokenizer train"):
        prepare_shards(ws, DataConfig(), **QUIET)


def test_malformed_corpus_line_is_named(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    train_tokenizer(ws, _tok_cfg(400), **QUIET)
    with open(ws.corpus_split("test"), "a", encoding="utf-8") as f:
        f.write('{"id": "x", "txt": "no text field"}\n')
    adopt_corpus(ws)
    n = len(ws.corpus_split("test").read_text().splitlines())
    with pytest.raises(LondiniumError, match=f"test.jsonl:{n}: .*'text'"):
        prepare_shards(ws, DataConfig(), **QUIET)
    # Nothing half-written is left behind, and the stage is not recorded as done.
    assert not ws.shard_meta("test").exists() and not ws.shard_bin("test").exists()
    assert not list(ws.shards_dir.glob(".*.tmp"))
    assert "shards" not in ws.manifest()


def test_empty_split_gives_an_empty_shard(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=4)
    ws.corpus_split("test").write_text("")
    adopt_corpus(ws)
    train_tokenizer(ws, _tok_cfg(400), **QUIET)
    prepare_shards(ws, DataConfig(), **QUIET)
    shard = open_shard(ws, "test")
    assert len(shard) == 0 and shard.meta["documents"] == 0
