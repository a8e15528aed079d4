"""Pieces of the MCP service that need no model: token offsets, document URIs, the [index] and [mcp] config."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from londinium.config import Config, load_config
from londinium.errors import ConfigError
from londinium.index.build import validate_config
from londinium.mcp.server import add_document_resource
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


@pytest.fixture(scope="module")
def echo_server():
    """A real MCPServer with the corpus-document resource of `londinium mcp`, whose reader answers
    with the id the SDK decoded from the URI: what reaches the index's look-up."""
    from mcp.server import MCPServer

    server = MCPServer("ids")
    add_document_resource(server, lambda doc_id: doc_id)
    return server


@settings(max_examples=150, deadline=None)
@given(doc_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
       | st.lists(st.sampled_from(["%", "25", "%2F", "/", "#", "?", "..", " ", "{", "}", "+", "&", "=", "é", "\x00"]),
                  min_size=1, max_size=8).map("".join))
def test_every_document_id_round_trips_through_its_resource_uri(echo_server, doc_id):
    uri = document_uri(doc_id)
    assert uri.startswith("londinium://corpus/") and "/" not in uri[len("londinium://corpus/"):]
    [content] = asyncio.run(echo_server.read_resource(uri))
    assert content.content == doc_id  # decoded once: '%25' stays '%25', '%2F' stays '%2F'


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
