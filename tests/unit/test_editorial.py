"""Editorial front and back matter of an edition is found and taken out; the author's text stays."""

from __future__ import annotations

from londinium.corpus.blocks import join
from londinium.corpus.clean import normalise_blocks
from londinium.corpus.editorial import apparatus, is_heading, split

VERSE = """\
    Before the starry threshold of Jove's court
    My mansion is, where those immortal shapes
    Of bright aerial spirits live insphered
    In regions mild of calm and serene air,                          5"""
LETTER = """\
It was a special favour, when you lately bestowed upon me here the first
taste of your acquaintance, though no longer than to make me know that I
wanted more time to value it, and to enjoy it rightly."""
# Modelled on the 1891 edition of Comus in the default corpus (miltondata/texts/comus_gut.txt).
EDITION = f"""\
MILTON'S COMUS

  WITH
  INTRODUCTION AND NOTES

  BY
  WILLIAM BELL, M.A.

  London
  MACMILLAN AND CO
  1891

  [_All rights reserved_]


CONTENTS.

                                             PAGE
  INTRODUCTION,                               vii
  COMUS,                                        7
  NOTES,                                       38


INTRODUCTION.

Few poems have been more variously designated than _Comus_. Milton
himself describes it simply as "A Mask"; by others it has been criticised.

THE OCCASION.

The masque was presented at Ludlow Castle in 1634, before the Earl.


FOOTNOTES:

{{16:A}} It is noteworthy that Lamb employs almost the exact words.


  COMUS.

  A MASK PRESENTED AT LUDLOW CASTLE, 1634.

_The Copy of a Letter written by Sir Henry Wotton to the Author._

{LETTER}

                                         HENRY WOTTON.

PREFACE

Our author's own word to the reader, as the first edition printed it.

THE PERSONS.

  The ATTENDANT SPIRIT.
  COMUS, with his Crew.

{VERSE}

Notes:
5 serene] sereine 1645

Transcriber's note: the line numbers are the editor's.

{VERSE.replace("Jove", "Iove")}


NOTES.

~discovers~, exhibits, displays. The usual sense of 'discover' is to find out.

1022, 3. ~if Virtue feeble were~, etc. A triumphant expression.


INDEX TO THE NOTES.

A.

Acheron, 604.

Y.

Ye, 216.

GLASGOW: PRINTED BY ROBERT MACLEHOSE AT THE UNIVERSITY PRESS."""


def test_the_edition_s_matter_goes_and_the_work_stays():
    kept, sections = split(normalise_blocks(EDITION))
    text = join(kept)
    for gone in ("WILLIAM BELL", "MACMILLAN", "rights reserved", "CONTENTS", "variously designated", "Ludlow Castle in 1634",
                 "Lamb employs", "sereine", "line numbers are the editor's", "exhibits, displays", "Acheron", "GLASGOW"):
        assert gone not in text, gone
    for stays in ("COMUS.", "Sir Henry Wotton", "lately bestowed upon me", "HENRY WOTTON.", "Our author's own word",
                  "THE PERSONS.", "starry threshold of Jove's", "starry threshold of Iove's"):
        assert stays in text, stays
    assert text.startswith("  COMUS.")


def test_each_section_says_what_it_is_and_where_it_started():
    _, sections = split(normalise_blocks(EDITION))
    assert [(s.what, s.heading) for s in sections] == [
        ("title page", "MILTON'S COMUS"),
        ("transcriber's or producer's note", "[_All rights reserved_]"),
        ("contents", "CONTENTS."),
        ("introduction", "INTRODUCTION."),  # runs over its own sub-heading, THE OCCASION, to the next editorial one
        ("notes", "FOOTNOTES:"),
        ("note", "Notes:"),
        ("transcriber's or producer's note", "Transcriber's note: the line numbers are the editor's."),
        ("notes", "NOTES."),
        ("index", "INDEX TO THE NOTES."),  # to the end, past its letter headings
    ]
    assert all(s.chars == sum(len(b.text) for b in s.blocks) > 0 for s in sections)


def test_a_text_without_an_editor_is_left_whole():
    text = f"PARADISE REGAINED\n\nTHE FIRST BOOK\n\n{VERSE}\n\nPREFACE\n\n{LETTER}\n\nAPPENDIX.\n\n{VERSE}"
    kept, sections = split(normalise_blocks(text))
    assert sections == [] and join(kept) == join(normalise_blocks(text))


def test_headings_and_apparatus_are_told_apart():
    assert is_heading("THE PERSONS.") and is_heading("IX") and is_heading("TO THE RIGHT HONOURABLE{22:A}")
    assert not is_heading("H. C. B.") and not is_heading("Exit.") and not is_heading("A.")
    assert apparatus("PREFACE by the Rev. H. C. Beeching, M. A.") == "preface"
    assert apparatus("PREFACE") is None  # an author's preface
    assert apparatus("INDEX TO THE NOTES.") == "index" and apparatus("Notes:") == "notes"
    assert apparatus("Note him good Charmian, 'tis the man; but note him.") is None
