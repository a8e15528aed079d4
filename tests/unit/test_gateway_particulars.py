"""A question's particulars (gateway/particulars.py): what the semantic cache requires two questions to
share besides a close embedding. Rarity comes from wordfreq's general English list."""

from __future__ import annotations

from londinium.gateway.particulars import agree, frames, particulars


def same(a: str, b: str, rare_zipf: float = 4.0) -> bool:
    return agree(particulars(a, rare_zipf), particulars(b, rare_zipf))


def test_a_quoted_line_must_occur_word_for_word_in_the_other_question_quoted_or_not() -> None:
    line = 'What line follows "Vpon this blasted heath you stop our way"?'
    assert same(line, 'Which line comes after "vpon this blasted heath, you stop our way"?')  # case and commas aside
    assert same(line, "Give me the next line after: Vpon this blasted heath you stop our way")
    assert not same(line, 'What line follows "Vpon this blasted hill you stop our way"?')  # one word of the line
    assert not same(line, 'What line follows "Vpon this blasted heath you stop"?')  # part of it
    assert not same(line, "What line follows?")


def test_names_and_rare_words_must_occur_in_both_and_common_words_need_not() -> None:
    assert not same("Summarise the play about Macbeth.", "Summarise the play about Hamlet.")  # rare words
    assert not same("Who is John?", "Who is Mark?")  # common words, but names inside a sentence
    assert same("Tell me briefly what Hamlet is about.", "what happens in hamlet")  # case aside; "briefly" is common
    assert same("What happens in the play?", "Tell me what occurs in the play.")  # nothing particular: the embedding decides
    assert same("Who is John?", "Who Is John?")  # the start of a sentence is capitalised anyway, "I" is no name


def test_without_rare_words_only_quotes_and_names_count() -> None:
    assert same("Is the heath blasted?", "Is the heath withered?", rare_zipf=0)
    assert not same("Is the heath blasted?", "Is the heath withered?")  # both rarer than Zipf 4
    assert not same("Is Banquo there?", "Is Fleance there?", rare_zipf=0)


def test_a_frame_is_the_question_without_the_passage_and_names_the_two_share() -> None:
    line = 'What line follows "Vpon this blasted heath you stop our way"?'
    assert frames(line, 'Which work is "vpon this blasted heath, you stop our way" from?', 4.0) == \
        ("what line follows this text", "which work is this text from")  # another task, about the same line
    assert frames("Give me the next line after: Vpon this blasted heath you stop our way", line, 4.0) == \
        ("give me the next line after this text", "what line follows this text")  # the passage unquoted: a shared run
    assert frames("Tell me briefly what Hamlet is about.", "What happens in Hamlet?", 4.0) == \
        ("tell me briefly what this text is about", "what happens in this text")  # a name
    assert frames("What line follows?", "Which line comes after?", 4.0) == ("what line follows", "which line comes after")  # "line" alone is wording
    assert frames(line, line.lower(), 4.0) == ("this text", "this text")
