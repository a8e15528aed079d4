"""Streaming text: whole UTF-8 characters only, equal to `tokenizer.decode`, stop strings never shown."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tok_fixtures import corpus_texts

from londinium.infer.text import TextStream, token_bytes_table
from londinium.tokenizer.codec import decode, encode
from londinium.tokenizer.train import train_bpe


@pytest.fixture(scope="module")
def tok():
    return train_bpe(corpus_texts() * 3, 400, show_progress=False)


@pytest.fixture(scope="module")
def table(tok):
    return token_bytes_table(tok)


def pieces(table, ids, stop=()):
    stream = TextStream(table, stop)
    out = []
    for t in ids:
        text, stopped = stream.push(t)
        out.append(text)
        if stopped:
            return out, stream, True
    out.append(stream.finish())
    return out, stream, False


def test_token_bytes_decode_exactly_as_the_tokenizer_does(tok, table) -> None:
    for text in corpus_texts() + ["<|endoftext|> literal", "Zwölf Boxkämpfer 🤺"]:
        for ids in (encode(tok, text), encode(tok, text, allow_special=True)):
            out, stream, _ = pieces(table, ids)
            assert "".join(out) == stream.text == decode(tok, ids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=40))
def test_streamed_pieces_are_whole_characters_of_any_unicode_text(tok, table, text: str) -> None:
    out, stream, _ = pieces(table, encode(tok, text))
    assert "".join(out) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in p for p in out)  # no half characters on the way


def test_a_multibyte_character_split_over_tokens_appears_once_complete(tok, table) -> None:
    text = "Emoji 👩‍👩‍👧 and ſ"
    ids = encode(tok, text)
    assert len(ids) > len(text.split())  # the rare characters are spread over byte tokens
    out, _, _ = pieces(table, ids)
    assert "".join(out) == text and "\ufffd" not in "".join(out)


def test_an_incomplete_character_at_the_end_becomes_a_replacement_like_decode(tok, table) -> None:
    ids = encode(tok, "ok 👩")
    cut = ids[:-1]
    assert decode(tok, cut).endswith("\ufffd")
    out, stream, _ = pieces(table, cut)
    assert "".join(out) == decode(tok, cut)


@pytest.mark.parametrize("stop", ["e lo", "lovely", "Thou art m", "y and", "\ufffd"])
def test_a_stop_string_across_tokens_ends_the_text_before_it(tok, table, stop: str) -> None:
    text = "Thou art more lovely and more temperate"
    out, stream, stopped = pieces(table, encode(tok, text), [stop, "never"])
    if stop in text:
        assert stopped and stream.text == text[:text.index(stop)]
        assert "".join(out) == stream.text  # nothing of the stop string was released
    else:
        assert not stopped and "".join(out) == text


def test_text_that_might_start_a_stop_string_is_held_back_then_released(tok, table) -> None:
    stream = TextStream(table, ["ab!"])
    shown = []
    for t in encode(tok, "xa") + encode(tok, "b") + encode(tok, "c"):
        shown.append(stream.push(t)[0])
    # "a" and "ab" could begin "ab!": held until "c" rules it out
    assert "".join(shown) == "xabc" and shown[-1].endswith("abc")


def test_control_tokens_other_than_end_of_text_show_as_their_text(tok, table) -> None:
    ids = encode(tok, "<|user|>hi", allow_special=True)
    out, _, _ = pieces(table, ids)
    assert "".join(out) == "<|user|>hi"
