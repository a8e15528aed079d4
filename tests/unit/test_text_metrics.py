"""Text metrics of samples: distinct-n, repetition, period vocabulary, anachronisms, BLEU, ROUGE."""

from __future__ import annotations

import pytest

from londinium.errors import LondiniumError
from londinium.eval.text_metrics import (
    bleu,
    distinct_n,
    find_anachronisms,
    first_words,
    load_word_list,
    mean_repetition,
    period_share,
    repetition_rate,
    rouge,
    words,
)


def test_words_lowercase_and_keep_inner_apostrophes():
    assert words("Heav'n, O'er the HILLS; 'tis — thou’rt!") == ["heav'n", "o'er", "the", "hills", "tis", "thou'rt"]


def test_distinct_n_is_unique_over_total_ngrams_pooled():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # ab ba ab + ab: {ab, ba} of 4
    assert distinct_n([], 2) == 0.0


def test_repetition_rate_is_share_of_repeated_ngrams_within_one_text():
    assert repetition_rate("the king the king the king", n=2) == pytest.approx(1 - 2 / 5)
    assert repetition_rate("to be or not to be", n=2) == pytest.approx(1 - 4 / 5)
    assert repetition_rate("short", n=4) == 0.0
    assert mean_repetition(["a a a a a", "a b c d e", "x"], n=2) == pytest.approx((0.75 + 0.0) / 2)


def test_period_share_counts_words_in_the_vocabulary():
    assert period_share(["Thou art the king", "Hath he come"], ["thou", "art", "hath"]) == pytest.approx(3 / 7)
    assert period_share([""], ["thou"]) == 0.0


def test_anachronisms_match_whole_words_and_inflections_case_insensitively():
    texts = ["The Railways came; he telegraphed. Okay!", "radiology is not radio", "a locomotive\nengine"]
    found = find_anachronisms(texts, ["railway", "telegraph", "okay", "radio", "locomotive engine", "internet"])
    assert found == {"railway": 1, "telegraph": 1, "okay": 1, "radio": 1, "locomotive engine": 1}


def test_embedded_anachronism_list_is_absent_from_period_lines_and_catches_modern_ones():
    from importlib import resources

    entries = load_word_list(resources.files("londinium") / "data_files" / "anachronisms.txt")
    period = ["Now is the winter of our discontent Made glorious summer by this son of York",
              "Of Mans First Disobedience, and the Fruit Of that Forbidden Tree",
              "And God said, Let there be light: and there was light."]
    assert not find_anachronisms(period, entries)
    assert set(find_anachronisms(["Okay, take the railway and telephone me."], entries)) == {"okay", "railway", "telephone"}


def test_word_list_ignores_comments_blank_lines_and_duplicates(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("# period words\nThou\n\nhath   # a comment\nthou\n", encoding="utf-8")
    assert load_word_list(p) == ["thou", "hath"]


def test_a_word_list_with_no_words_is_accepted_as_empty(tmp_path):
    p = tmp_path / "none.txt"
    p.write_text("# switched off for this corpus\n", encoding="utf-8")
    assert load_word_list(p) == []


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"\xff\xfe", "not UTF-8")])
def test_bad_word_list_is_a_clear_error_naming_the_file(tmp_path, content, message):
    p = tmp_path / "list.txt"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(LondiniumError, match=message) as e:
        load_word_list(p)
    assert str(p) in str(e.value)


def test_bleu_and_rouge_are_perfect_on_identity_and_low_on_unrelated_text():
    refs = ["the king is dead and the queen is fled", "now is the winter of our discontent made glorious"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert rouge(refs, refs) == {"rouge1": pytest.approx(1.0), "rouge2": pytest.approx(1.0), "rougeL": pytest.approx(1.0)}
    other = ["a railway station in the rain", "telegraph wires hum over fields"]
    assert bleu(other, refs) < 5.0
    assert rouge(other, refs)["rouge2"] == 0.0


def test_rouge_matches_rouge_score_for_one_pair():
    from rouge_score import rouge_scorer

    hyp, ref = "the king hath fled the field", "the king is fled from the field"
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure
    assert rouge([hyp], [ref])["rougeL"] == pytest.approx(expected)


def test_first_words_cuts_at_whitespace():
    assert first_words("a  b\nc d", 3) == "a b c"
