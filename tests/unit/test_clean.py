"""Normalisation keeps the period language; quality scores separate period English from junk."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from londinium.config import CorpusConfig
from londinium.corpus.blocks import parse
from londinium.corpus.clean import normalise
from londinium.corpus.quality import explain, foreign_paragraph, rejection_reason, score

FOLIO = (
    "  Gon. I haue great comfort from this fellow: methinks he hath no drowning\n"
    "marke vpon him, his complexion is perfect Gallowes: stand fast good Fate to his\n"
    "hanging, make the rope of his destiny our cable, for our owne doth little\n"
    "aduantage: If he be not borne to bee hang'd, our case is miserable.\n"
)
KJV = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
       "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. "
       "And God said, Let there be light: and there was light. And God saw the light, that it was good: "
       "and God divided the light from the darkness.")
LATIN = ("Quales aerii montis de vertice nubes\nCum surgunt, et jam Boreae tumida ora quierunt,\n"
         "Caeruleum in pelagus tumidis jam fluctibus aequor\nVolvitur, et magno resonant nunc litora motu.\n"
         "Tres tria, sed longe distantia, saecula vates\nOstentant tribus e gentibus eximios,\n"
         "Graecia Maeonidem, jactat sibi Roma Maronem,\nAnglia Miltonum jactat utrique parem.\n"
         "Partubus ex binis Natura exhausta, coacta est,\nTertia sed nullo crescere digna modo.")


# ---- normalisation --------------------------------------------------------------------------------


def test_period_spelling_and_letters_are_untouched():
    text = "Thou deseruing haue vpon the ſhore, with æ and œ, the ﬁrst ﬂower; ‘quoth’ he, “Æneas” — naïve Cæsar."
    assert normalise(text) == text


def test_folio_text_survives_normalisation_except_line_endings():
    assert normalise(FOLIO.replace("\n", "\r\n")) == FOLIO.rstrip()


def test_mojibake_is_repaired_without_uncurling_quotes():
    assert normalise("Donâ€™t thou â€œfearâ€\x9d") == "Don’t thou “fear”"


def test_decomposed_accents_are_composed_to_nfc():
    out = normalise("Cafe\u0301 and nai\u0308ve")
    assert out == "Café and naïve" and unicodedata.is_normalized("NFC", out)


def test_runaway_whitespace_collapses_but_verse_lines_stay():
    text = "Full fadom fiue   thy Father lies,\t\t  \nOf his bones are Corrall made:\n\n\n\n\n\nThose are pearles\u00a0that were his eies,"
    assert normalise(text) == "Full fadom fiue thy Father lies,\nOf his bones are Corrall made:\n\n\nThose are pearles that were his eies,"


def test_indentation_is_capped_not_removed():
    text = "                           POEMS\n  Gon. Good,\n\tyet remember"
    assert normalise(text) == "    POEMS\n  Gon. Good,\n    yet remember"


def test_control_characters_and_zero_width_marks_go():
    assert normalise("thou\x00 art\u200b more\x07 lovely\x0cthan") == "thou art more lovely\n\nthan"


def test_period_letters_that_look_like_mojibake_are_kept_and_real_mojibake_is_repaired():
    # "æœœ" is also the UTF-8 of "朜" read as Windows-1252: ftfy alone would "repair" it.
    assert normalise("Cæsar æœœ") == "Cæsar æœœ"
    assert normalise("Thou art â€™twas CafÃ©") == "Thou art ’twas Café"


def test_html_entities_in_plain_text_are_left_as_written():
    assert normalise("Rosencrantz &amp; Guildenstern") == "Rosencrantz &amp; Guildenstern"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_normalise_is_idempotent(text):
    once = normalise(text)
    assert normalise(once) == once


CODE = "def f(x):\n    if x  ==  1:\n        return   [x,\tx]\n\n\n    return None"


def test_code_and_tables_keep_every_space_while_the_prose_around_them_is_normalised():
    table = "| a   | b |\n|-----|---|\n| 1   | 2 |"
    text = f"Some   prose\u00a0here.\r\n\r\n```\n{CODE}\n```\n\n\n\n\n    >>> x  =  1\n    >>> x\n\n{table}\n\nEnd   of   prose."
    assert normalise(text) == f"Some prose here.\n\n```\n{CODE}\n```\n\n\n    >>> x  =  1\n    >>> x\n\n{table}\n\nEnd of prose."


def test_whitespace_keep_keeps_the_spaces_of_prose_too_but_still_repairs_letters():
    text = "Name:\t\tvalue   here\n\n\n\n     indented   line\nDonâ€™t"
    assert normalise(text, "keep") == "Name:\t\tvalue   here\n\n\n\n     indented   line\nDon’t"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab x=():>.`|-\u00a0\t\n ")), max_size=300), st.sampled_from(["normalise", "keep"]))
def test_normalise_is_idempotent_on_code_and_tables(text, whitespace):
    once = normalise(text, whitespace)
    assert normalise(once, whitespace) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzſæœ’‘ ,.;:\n")), max_size=300))
def test_normalise_never_changes_the_words(text):
    # only whitespace may change: the sequence of non-space characters is exactly preserved
    assert "".join(normalise(text).split()) == "".join(text.split())


# ---- quality scores and filters -------------------------------------------------------------------

CFG = CorpusConfig()


def test_period_english_passes_every_filter():
    for text in (FOLIO * 3, KJV):
        s = score(text)
        assert rejection_reason(s, CFG) is None, s


def test_latin_fails_the_english_check():
    s = score(LATIN)
    assert s.english < 0.05
    assert rejection_reason(s, CFG) == "not-english"


def test_short_text_is_rejected():
    assert rejection_reason(score("Thou art."), CFG) == "too-short"


def test_ocr_noise_is_scored_and_rejected():
    noisy = " ".join(["th3", "w@s", "1Well", "b|ue", "aaaa", "the", "and", "of"] * 40)
    s = score(noisy)
    assert s.noise > 0.5
    assert rejection_reason(s, CFG) == "ocr-noise"
    assert score(FOLIO).noise == 0.0  # apostrophes, colons and old spellings are not noise


def test_boilerplate_lines_are_scored_and_rejected():
    licence = "\n".join([
        "This eBook is for the use of anyone anywhere at no cost and with",
        "almost no restrictions whatsoever. You may copy it under the terms of",
        "the Project Gutenberg License included with this eBook or online at",
        "www.gutenberg.org. Please donate to support the work.",
        "and the earth was without form and void of all",
    ] * 10)
    s = score(licence)
    assert s.boilerplate >= 0.6
    assert rejection_reason(s, CFG) == "boilerplate"


def test_tables_of_numbers_fail_the_alphabetic_share():
    table = "\n".join(f"{i} {i * 7} {i * 13}.5 -- {i % 3}" for i in range(100))
    assert rejection_reason(score(table), CFG) == "few-alphabetic-words"


def test_warrant_in_a_play_is_not_licence_boilerplate():
    assert score("I warrant thee, my lord, and thou shalt see.\n" * 10).boilerplate == 0.0


def test_foreign_paragraphs_inside_english_books_are_caught_but_english_verse_is_not():
    assert foreign_paragraph(LATIN, CFG.min_english_paragraph) is not None
    dense_verse = ("Dead life, blind sight, poor mortal living ghost, Woe's scene, world's shame, grave's due by life "
                   "usurp'd, Brief abstract and record of tedious days, Rest thy unrest on England's lawful earth, "
                   "Unlawfully made drunk with innocent blood.")
    assert foreign_paragraph(dense_verse, CFG.min_english_paragraph) is None
    assert foreign_paragraph("Et tu, Brute?", CFG.min_english_paragraph) is None  # too short to judge


def test_code_is_judged_apart_so_a_page_of_prose_with_code_is_not_dropped_as_not_english():
    prose = ("Both of the tools that are described here let you attach to the markers in a running program, and "
             "they can be used to find out where the time of a process is spent, and which of its functions are called.")
    output = "\n".join(f"  {i} python(8274):  => __getitem__ Lib/os.py:{i}" for i in range(40))
    text = f"{prose}\n\n```\n{output}\n```\n\n{prose}"
    s = score(text, parse(text))
    assert s.code > 0.8 and s.english > 0.3 and rejection_reason(s, CFG) is None
    assert rejection_reason(score(text), CFG) == "not-english"  # judged whole, the code drowns the prose
    assert score(f"```\n{output}\n```", parse(f"```\n{output}\n```")).english is None  # all code: not judged


def test_a_rejection_says_which_score_failed_against_which_setting():
    s = score(LATIN)
    assert explain("not-english", s, CFG) == f"share of words that are English function words {s.english:.2f}, against corpus.min_english = 0.25"
