"""Contamination: the share of an item's word n-grams found in the training text, and its flag."""

from __future__ import annotations

import pytest

from londinium.errors import ConfigError
from londinium.eval.contamination import check_contamination, summarize

TRAIN = [
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "Now is the winter of our discontent Made glorious summer by this son of York;",
]


def _by_id(results):
    return {r.id: r for r in results}


def test_verbatim_training_text_is_flagged_and_unseen_text_is_not():
    items = {
        "seen": "In the beginning God created the heaven and the earth.",
        "unseen": "The railway carriage rattled north through the smoke of the mills at dusk.",
    }
    r = _by_id(check_contamination(items, TRAIN, n=4, threshold=0.5))
    assert r["seen"].share == 1.0 and r["seen"].flagged
    assert r["unseen"].found == 0 and r["unseen"].share == 0.0 and not r["unseen"].flagged


def test_share_counts_the_n_grams_found_and_the_threshold_decides_the_flag():
    # 8 words -> 5 distinct 4-grams; the first 5 words are in training: 2 of the 4-grams are found
    item = {"half": "Now is the winter of thy merry heart"}
    (r,) = check_contamination(item, TRAIN, n=4, threshold=0.5)
    assert (r.ngrams, r.found) == (5, 2)
    assert r.share == pytest.approx(0.4) and not r.flagged
    (r,) = check_contamination(item, TRAIN, n=4, threshold=0.4)
    assert r.flagged


def test_case_and_punctuation_do_not_hide_a_match_but_spelling_does():
    items = {"case": "NOW IS THE WINTER, OF OUR DISCONTENT!", "spelling": "Now is the Winter of our Discontent made glorious Summer by this Sonne of Yorke"}
    r = _by_id(check_contamination(items, TRAIN, n=4, threshold=0.5))
    assert r["case"].share == 1.0
    assert 0.0 < r["spelling"].share < 1.0  # the Folio spellings differ in the last words


def test_ngrams_do_not_span_documents():
    # "void. Now is the" would exist only if the two training documents were glued together
    (r,) = check_contamination({"x": "and void now is"}, TRAIN, n=4, threshold=0.5)
    assert r.found == 0


def test_items_shorter_than_n_are_matched_whole():
    r = _by_id(check_contamination({"short": "the heaven and", "absent": "heaven earth"}, TRAIN, n=8, threshold=0.5))
    assert r["short"].ngrams == 1 and r["short"].flagged
    assert r["absent"].found == 0


def test_empty_item_is_never_flagged():
    (r,) = check_contamination({"empty": "  ...  "}, TRAIN, n=4, threshold=0.5)
    assert r.ngrams == 0 and not r.flagged


def test_summary_counts_flagged_items_per_kind():
    probes = check_contamination({"a": TRAIN[0], "b": "nothing of the sort here at all"}, TRAIN, n=4, threshold=0.5)
    refs = check_contamination({"r": TRAIN[1]}, TRAIN, n=4, threshold=0.5, kind="reference")
    s = summarize(probes + refs)
    assert s["probe"] == {"items": 2, "flagged": 1, "mean_share": pytest.approx(0.5)}
    assert s["reference"]["flagged"] == 1


@pytest.mark.parametrize("n, threshold", [(0, 0.5), (8, 0.0), (8, 1.5)])
def test_bad_settings_name_the_config_key(n, threshold):
    with pytest.raises(ConfigError, match=r"eval\.contamination_"):
        check_contamination({"a": "x"}, TRAIN, n=n, threshold=threshold)


def test_the_training_text_is_read_once_as_a_stream():
    reads = []

    def stream():
        for t in TRAIN:
            reads.append(t)
            yield t

    check_contamination({"a": "the heaven and the earth", "b": "winter of our discontent"}, stream(), n=3)
    assert reads == TRAIN


def test_several_kinds_are_checked_in_one_pass_and_keep_their_kind_even_with_equal_ids():
    from londinium.eval.contamination import check_groups

    reads = []

    def stream():
        for t in TRAIN:
            reads.append(t)
            yield t

    rs = check_groups({"probe": {"x": TRAIN[0]}, "reference": {"x": "unrelated words entirely, nothing shared"}}, stream(), n=4)
    assert reads == TRAIN
    assert [(r.kind, r.id, r.flagged) for r in rs] == [("probe", "x", True), ("reference", "x", False)]


def test_no_items_means_the_training_text_is_not_read():
    def stream():
        raise AssertionError("read")
        yield ""

    assert check_contamination({}, stream(), n=4) == []
