"""The tokenizer never loses a character, and control tokens fire only when asked."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tok_fixtures import corpus_texts
from tokenizers import Tokenizer

from londinium.config import TokenizerConfig
from londinium.errors import ConfigError, LondiniumError
from londinium.tokenizer import (
    EOT,
    PAD,
    SPECIAL_TOKENS,
    decode,
    encode,
    encode_batch,
    eot_id,
    load_tokenizer,
    special_token_ids,
    tokenizer_sha256,
    train_bpe,
)
from londinium.tokenizer.train import save_tokenizer, validate_config
from londinium.workspace import Workspace

VOCAB = 600


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("tok") / "ws")
    save_tokenizer(train_bpe(corpus_texts() * 3, VOCAB, min_frequency=2), ws)
    return ws


@pytest.fixture(scope="module")
def tok(saved: Workspace) -> Tokenizer:
    return load_tokenizer(saved)


SPECIFIC = [
    "",
    " ",
    "  two spaces",
    "trailing spaces   ",
    "\t",
    "\t\tindented\n",
    "\r\n",
    "line\r\nline\rline\n",
    "\n\n\n",
    "ſ",
    "the Queſtion",
    unicodedata.normalize("NFC", "é"),
    unicodedata.normalize("NFD", "é"),
    unicodedata.normalize("NFD", "Café naïve"),
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈 flag",
    "\U000E0000",
    "\U0010FFFF",
    "\x00 nul and \x7f del",
    "\ufeffBOM",
    "ﬁ ligature, Ⅻ numeral, ｆｕｌｌ width",
    "<|endoftext|>",
    "<|endoftext",
    "vpon   thee, quoth he",
]


@pytest.mark.parametrize("text", SPECIFIC, ids=[repr(t)[:30] for t in SPECIFIC])
def test_decode_round_trips_awkward_text(tok: Tokenizer, text: str):
    assert decode(tok, encode(tok, text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_decode_round_trips_any_unicode(tok: Tokenizer, text: str):
    assert decode(tok, encode(tok, text)) == text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), min_size=1))
def test_decode_round_trips_any_code_point_including_unassigned(tok: Tokenizer, text: str):
    assert decode(tok, encode(tok, text)) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(), max_size=8))
def test_batch_encoding_equals_one_at_a_time(tok: Tokenizer, texts: list[str]):
    assert encode_batch(tok, texts) == [encode(tok, t) for t in texts]


def test_special_tokens_in_user_text_stay_text_by_default(tok: Tokenizer):
    text = f"before {EOT} after"
    ids = encode(tok, text)
    assert eot_id(tok) not in ids
    assert decode(tok, ids) == text
    assert eot_id(tok) not in encode_batch(tok, [text])[0]
    # The tokenizers object itself is in the safe mode too, for code that calls it directly.
    assert eot_id(tok) not in tok.encode(text).ids


def test_special_tokens_become_control_ids_only_when_allowed(tok: Tokenizer, saved: Workspace):
    text = f"Thou art.{EOT}<|user|>Quoth he{PAD}"
    ids = encode(tok, text, allow_special=True)
    specials = special_token_ids(tok)
    assert [i for i in ids if i in specials.values()] == [specials[EOT], specials["<|user|>"], specials[PAD]]
    assert decode(tok, ids) == text
    # Same ids as the Hugging Face convention (specials parsed) applied by a fresh tokenizers object.
    plain = Tokenizer.from_file(str(saved.tokenizer_file))
    assert plain.encode(text, add_special_tokens=False).ids == ids


def test_special_tokens_have_the_first_ids_and_domain_words_are_not_special(tok: Tokenizer):
    assert special_token_ids(tok) == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert eot_id(tok) == 0
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    assert added == set(SPECIAL_TOKENS)
    assert not any(w in added for w in ("<|thou|>", "<|quoth|>", "thou"))


def test_frequent_period_words_are_learnt_as_single_tokens(tok: Tokenizer):
    # "hath" and "vpon" are frequent in the fixture corpus: BPE learns them, nothing is hard-coded.
    assert len(encode(tok, " hath")) == 1
    assert len(encode(tok, " vpon")) == 1
    assert len(encode(tok, " the")) == 1


def test_training_is_deterministic():
    a = train_bpe(corpus_texts(), 400, show_progress=False)
    b = train_bpe(corpus_texts(), 400, show_progress=False)
    assert a.to_str() == b.to_str()


def test_tokenizer_json_loads_with_plain_tokenizers(saved: Workspace, tok: Tokenizer):
    plain = Tokenizer.from_file(str(saved.tokenizer_file))
    assert plain.get_vocab_size() == tok.get_vocab_size() <= VOCAB
    text = "Shall I compare thee to a summer's day?"
    assert plain.encode(text).ids == encode(tok, text)
    assert len(tokenizer_sha256(saved)) == 64


def test_transformers_tokenizer_has_bos_eos_pad_and_round_trips(saved: Workspace, tok: Tokenizer):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(saved.tokenizer_hf_dir))
    assert hf.bos_token == hf.eos_token == EOT and hf.bos_token_id == hf.eos_token_id == eot_id(tok)
    assert hf.pad_token == PAD and hf.pad_token_id == special_token_ids(tok)[PAD]
    assert set(hf.all_special_tokens) == set(SPECIAL_TOKENS)
    for text in SPECIFIC[:-3]:  # without the literal special tokens (transformers parses those)
        ids = hf(text, add_special_tokens=True)["input_ids"]
        assert ids == encode(tok, text)
        assert hf.decode(ids) == text
    # transformers' convention: control-token text is parsed (chat templates rely on it).
    chat = "<|user|>Quoth he<|end|>"
    assert hf(chat)["input_ids"] == encode(tok, chat, allow_special=True)


def test_vocab_size_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size = 100"):
        validate_config(TokenizerConfig(vocab_size=100))
    with pytest.raises(ConfigError, match="min_frequency"):
        validate_config(TokenizerConfig(min_frequency=0))


def test_missing_or_foreign_tokenizer_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(LondiniumError, match="londinium tokenizer train"):
        load_tokenizer(Workspace(tmp_path / "empty"))
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(LondiniumError, match=str(broken)):
        load_tokenizer(broken)
    foreign = tmp_path / "foreign.json"
    from tokenizers import models

    Tokenizer(models.BPE()).save(str(foreign))
    with pytest.raises(LondiniumError, match="lacks the special tokens"):
        load_tokenizer(foreign)
