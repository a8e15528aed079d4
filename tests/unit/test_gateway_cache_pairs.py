"""The semantic cache's labelled question pairs (gateway/cache_pairs.py): the wordings held out of
fine-tuning are never in its triplets, the held-out pairs use nothing else, and each triplet is a
question, its paraphrase and one of its own near-misses."""

from __future__ import annotations

import random

import pytest

from londinium.gateway.cache_pairs import ALL, EXTRA, HELD_OUT, NOISE, PAIRS, TUNING, Wordings, make_pairs, make_triplets

TRAINING = TUNING["training"]


def _docs() -> list[dict]:
    rng = random.Random(3)
    words = "thou art the king of heaven and earth whose mercy endureth for ever unto the night sword crown".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(7, 12))).capitalize() for _ in range(300)]
    return [{"text": "\n".join(lines[i::6]), "title": f"Genesis {i + 1}"} for i in range(6)]


def _templates(w: Wordings) -> set[str]:
    return {*(t for ts in w.tasks.values() for t in ts), *w.titles}


def _wordings_of(text: str, subject: str, templates: set[str]) -> set[str]:
    """The templates that, filled with `subject` and given at most one noise, make `text`."""
    return {t for t in templates for noise in [lambda s: s, *NOISE] if noise(t.format(x=subject)) == text}


def test_held_out_wordings_are_never_trained_on():
    assert _templates(HELD_OUT).isdisjoint(_templates(TRAINING))
    assert _templates(HELD_OUT) | _templates(TRAINING) == _templates(ALL) | _templates(EXTRA)
    assert _templates(EXTRA).isdisjoint(_templates(ALL))  # training-only wordings: no benchmark pair is asked in them
    assert _templates(TUNING["all"]) == _templates(ALL) | _templates(EXTRA) and PAIRS["held-out"] is HELD_OUT
    with pytest.raises(ValueError, match="two templates"):
        Wordings({"a": ["x {x}"], "b": ["y {x}", "z {x}"]}, ["t {x}", "u {x}"])


def test_held_out_pairs_use_only_held_out_wordings():
    pairs = make_pairs(_docs(), 120, random.Random(0), HELD_OUT)
    assert {p["kind"] for p in pairs} == {"paraphrase", "other-line", "other-task", "one-word", "other-title"}
    for p in pairs:
        assert _wordings_of(p["a"], p["group"], _templates(HELD_OUT)), p
        if p["kind"] in ("paraphrase", "other-task"):  # the same subject on both sides
            assert _wordings_of(p["b"], p["group"], _templates(HELD_OUT)), p


def test_triplets_are_a_question_its_paraphrase_and_its_near_miss():
    rows = make_triplets(_docs(), 60, random.Random(1), TRAINING)
    assert {r["kind"] for r in rows} == {"other-line", "other-task", "one-word", "other-title"}
    # The longest fixed piece of each held-out wording (quotes and end punctuation aside) appears in no row.
    pieces = {max(t.replace("\"", "").split("{x}"), key=len).strip(" .?:").lower() for t in _templates(HELD_OUT)}
    for r in rows:
        assert r["anchor"] != r["positive"] and r["anchor"] != r["negative"] and r["positive"] != r["negative"]
        for text in (r["anchor"], r["positive"], r["negative"]):
            assert not any(piece in text.lower().replace("\"", "") for piece in pieces), (text, "a held-out wording in training")
    # The paraphrase is about the anchor's own line: every word of it is in the paraphrase.
    for r in rows:
        if r["kind"] != "other-title":
            assert _subject_of(r["anchor"]).lower() in r["positive"].lower().replace("\"", ""), r


def _subject_of(question: str) -> str:
    """The line a training wording was filled with."""
    for t in _templates(TRAINING):
        before, after = t.split("{x}")
        if question.startswith(before) and question.endswith(after):
            return question[len(before):len(question) - len(after)]
    raise AssertionError(f"{question!r} has no training wording")
