"""The corpus stage end to end on local sources: outputs, data card, skips, strictness, re-runs, crashes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.prose import prose

from londinium.cli import main as cli_main
from londinium.config import CorpusConfig
from londinium.corpus import build as build_module
from londinium.corpus.build import build_corpus
from londinium.errors import LondiniumError
from londinium.files import read_jsonl
from londinium.workspace import SPLITS, Workspace

HERE = Path(__file__).resolve().parent
sys_path_unit = HERE.parent / "unit"

MODERN = (sys_path_unit / "test_dedup.py").read_text(encoding="utf-8").split('MODERN = """')[1].split('"""')[0]
FOLIO = (sys_path_unit / "test_dedup.py").read_text(encoding="utf-8").split('FOLIO = """')[1].split('"""')[0]
LATIN = ("Quales aerii montis de vertice nubes\nCum surgunt, et jam Boreae tumida ora quierunt,\n"
         "Caeruleum in pelagus tumidis jam fluctibus aequor\nVolvitur, et magno resonant nunc litora motu.\n") * 4


def _kjv_rows() -> list[dict]:
    rows = []
    for book in ("Genesis", "Exodus"):
        for chapter in range(1, 5):
            for verse in range(1, 8):
                rows.append({"text": prose(hash((book, chapter, verse)) % 10_000, 1), "book": book, "chapter": chapter, "verse": verse})
    return rows


def make_registry(tmp_path: Path, with_missing: bool = True) -> Path:
    plays = tmp_path / "texts" / "plays"
    plays.mkdir(parents=True)
    (plays / "tempest.txt").write_text("THE TEMPEST\n\n" + MODERN + "\n\n" + prose(1, 6), encoding="utf-8")
    (plays / "tempest_f.txt").write_text("The Tempest\n\n" + FOLIO + "\n\n" + prose(1, 6).replace("the ", "the "), encoding="utf-8")
    for i in range(2, 8):
        (plays / f"play{i}.txt").write_text(f"PLAY {i}\n\n" + prose(i), encoding="utf-8")
    (plays / "play2_copy.txt").write_text(("PLAY 2\n\n" + prose(2)).upper().replace("\n\n", "\n\n\n"), encoding="utf-8")
    (plays / "latin.txt").write_text(LATIN, encoding="utf-8")
    (plays / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (plays / "broken.txt").write_bytes("Thou art ".encode() * 40 + bytes([0xC3, 0x28, 0x81, 0x8D]))
    (plays / "page.html").write_text(
        "<html><head><title>A Sermon</title></head><body><nav>Home | Sermons | Contact</nav>"
        f"<p>{prose(20, 8)}</p><p>{prose(21, 8)}</p><footer>Copyright 2024. Privacy policy.</footer></body></html>",
        encoding="utf-8")
    (plays / "licence.txt").write_text(
        "\n".join(["This eBook is for the use of anyone anywhere at no cost, see www.gutenberg.org",
                   "Copyright and the terms of the Project Gutenberg License apply to this eText"] * 10), encoding="utf-8")
    bible = tmp_path / "texts" / "bible.jsonl"
    bible.write_text("\n".join(json.dumps(r) for r in _kjv_rows()) + "\n", encoding="utf-8")

    registry = tmp_path / "sources.toml"
    text = f"""
[[source]]
id = "plays"
kind = "local"
location = "texts/plays"
format = "auto"
period = [1590, 1623]
profile = "period-london"  # early-modern folding: the Folio text groups with the modern one
license = "Public domain"
title = "Plays"
author = "Various"

[[source]]
id = "bible"
kind = "local"
location = "texts/bible.jsonl"
format = "jsonl"
period = [1611, 1611]
license = "Public domain"
title = "Bible"
jsonl_group_by = ["book", "chapter"]
jsonl_title_fields = ["book", "chapter"]
"""
    if with_missing:
        text += """
[[source]]
id = "lost"
kind = "local"
location = "texts/no-such-folder"
period = [1600, 1600]
"""
    registry.write_text(text, encoding="utf-8")
    return registry


def _cfg(tmp_path: Path, registry: Path, **kw) -> CorpusConfig:
    # a period registry like the embedded one: its Folio and modern texts are grouped, not one dropped
    return CorpusConfig(sources=str(registry), cache_dir=str(tmp_path / "cache"), **{"near_duplicates": "group", **kw})


def _rows(ws: Workspace) -> dict[str, list[dict]]:
    return {s: list(read_jsonl(ws.corpus_split(s))) for s in SPLITS}


@pytest.fixture
def built(tmp_path, capsys):
    registry = make_registry(tmp_path)
    ws = Workspace(tmp_path / "ws")
    summary = build_corpus(ws, _cfg(tmp_path, registry))
    return ws, summary, capsys.readouterr().out, registry


def test_documents_follow_the_schema_and_carry_source_and_period(built):
    ws, summary, _, _ = built
    rows = _rows(ws)
    assert summary.ran and all(rows[s] for s in SPLITS)
    ids = [r["id"] for split in rows.values() for r in split]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        for r in rows[split]:
            assert list(r) == ["id", "text", "source", "period", "group", "title"]
            assert r["source"] in ("plays", "bible") and r["text"].strip() and r["title"]
            assert r["period"] == ([1590, 1623] if r["source"] == "plays" else [1611, 1611])
            assert r["id"].startswith(f"{r['source']}/") and "#" in r["id"]
            assert len(r["text"]) <= CorpusConfig().max_doc_chars


def test_no_group_straddles_splits_and_the_folio_text_travels_with_the_modern_one(built):
    ws, _, _, _ = built
    split_of_group: dict[str, set[str]] = {}
    for split, rows in _rows(ws).items():
        for r in rows:
            split_of_group.setdefault(r["group"], set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())
    groups = {r["id"].split("#")[0]: r["group"] for rows in _rows(ws).values() for r in rows}
    assert groups["plays/tempest_f.txt"] == groups["plays/tempest.txt"] == "plays/tempest.txt"
    # small sources with >= 3 groups still get a validation group each
    for source in ("plays", "bible"):
        assert any(r["source"] == source for r in _rows(ws)["val"])


def test_period_spelling_reaches_the_training_documents_unchanged(built):
    ws, _, _, _ = built
    folio_docs = [r["text"] for rows in _rows(ws).values() for r in rows if r["id"].startswith("plays/tempest_f.txt#")]
    joined = "\n".join(folio_docs)
    for word in ("haue", "vpon", "heauenly", "Ioues", "reioyce", "euen"):
        assert word in joined


def test_every_rejection_is_recorded_with_source_file_reason_and_scores(built):
    ws, _, _, _ = built
    rejections = list(read_jsonl(ws.corpus_rejections))
    by_file = {(r["source"], r["file"]): r for r in rejections}
    assert by_file[("plays", "latin.txt")]["reason"] == "not-english"
    assert by_file[("plays", "latin.txt")]["scores"]["english"] < 0.1
    assert by_file[("plays", "licence.txt")]["reason"] == "boilerplate"
    assert by_file[("plays", "cover.png")]["reason"] == "skipped" and "binary" in by_file[("plays", "cover.png")]["detail"]
    assert by_file[("plays", "broken.txt")]["reason"] == "unreadable" and "not UTF-8" in by_file[("plays", "broken.txt")]["detail"]
    dup = by_file[("plays", "play2_copy.txt")]
    assert dup["reason"] == "exact-duplicate" and dup["detail"] == "same text as plays/play2.txt"
    lost = by_file[("lost", None)]
    assert lost["level"] == "source" and "does not exist" in lost["detail"]
    for r in rejections:
        assert set(r) >= {"source", "file", "level", "reason", "detail", "scores", "chars"}


def test_html_navigation_and_footer_stay_out_of_the_corpus(built):
    ws, _, _, _ = built
    page = [r for rows in _rows(ws).values() for r in rows if r["id"].startswith("plays/page.html#")]
    assert page and page[0]["title"] == "A Sermon"
    assert not any("Privacy" in r["text"] or "Contact" in r["text"] for r in page)


def test_jsonl_rows_become_chapter_documents(built):
    ws, _, _, _ = built
    titles = sorted({r["title"] for rows in _rows(ws).values() for r in rows if r["source"] == "bible"})
    assert titles == sorted(f"{b} {c}" for b in ("Genesis", "Exodus") for c in range(1, 5))


def test_the_data_card_adds_up_and_matches_the_files(built):
    ws, _, out, _ = built
    card = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
    rows = _rows(ws)
    rejections = list(read_jsonl(ws.corpus_rejections))
    on_disk = {"plays": len(list((ws.root.parent / "texts" / "plays").iterdir())), "bible": 1, "lost": 0}
    for s in card["sources"]:
        sid = s["id"]
        assert s["files"]["read"] == on_disk[sid]  # counted independently of the build
        for unit in ("files", "texts"):
            assert s[unit]["kept"] + s[unit]["rejected"] == s[unit]["read"]
        assert s["chars"]["kept"] + s["chars"]["rejected"] == s["chars"]["read"]
        for split in SPLITS:
            mine = [r for r in rows[split] if r["source"] == sid]
            assert s["documents"][split] == len(mine)
            assert s["chars"][split] == sum(len(r["text"]) for r in mine)
        assert s["chars"]["kept"] == sum(s["chars"][x] for x in SPLITS)
        assert s["chars"]["rejected"] == sum(r["chars"] for r in rejections if r["source"] == sid)
        assert s["files"]["kept"] == len({r["id"].split("#")[0] for split in rows.values() for r in split if r["source"] == sid})
        assert sum(s["rejections"].values()) == sum(1 for r in rejections if r["source"] == sid)
    plays = next(s for s in card["sources"] if s["id"] == "plays")
    assert plays["files"] == {"read": 14, "kept": 9, "rejected": 5}
    lost = next(s for s in card["sources"] if s["id"] == "lost")
    assert lost["status"] == "failed" and lost["files"]["read"] == 0
    assert card["totals"]["documents"]["total"] == sum(len(v) for v in rows.values())
    assert card["exact_duplicates"] == [{"kept": "plays/play2.txt", "duplicates": ["plays/play2_copy.txt"]}]
    (group,) = [g for g in card["near_duplicate_groups"] if g["group"] == "plays/tempest.txt"]
    assert group["members"] == ["plays/tempest.txt", "plays/tempest_f.txt"] and group["pairs"][0]["jaccard"] >= 0.3

    md = ws.corpus_report_md.read_text(encoding="utf-8")
    assert "| plays |" in md and "failed" in md and "exact-duplicate" in md
    assert ws.corpus_chart.read_bytes().startswith(b"\x89PNG")
    assert str(ws.corpus_report_md) in out
    for split in SPLITS:
        assert f"  {split}" in out


def test_second_build_is_a_no_op_and_editing_a_local_text_rebuilds(built, capsys):
    ws, _, _, registry = built
    cfg = _cfg(registry.parent, registry)
    before = ws.corpus_split("train").read_bytes()
    again = build_corpus(ws, cfg)
    assert again.ran is False and "up to date" in capsys.readouterr().out
    assert ws.corpus_split("train").read_bytes() == before
    (registry.parent / "texts" / "plays" / "play3.txt").write_text("PLAY 3\n\n" + prose(333), encoding="utf-8")
    assert build_corpus(ws, cfg).ran is True
    texts = [r["text"] for rows in _rows(ws).values() for r in rows if r["id"].startswith("plays/play3.txt#")]
    assert prose(333).split("\n\n")[0] in "\n\n".join(texts)


def test_the_build_is_deterministic(tmp_path):
    registry = make_registry(tmp_path)
    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    build_corpus(a, _cfg(tmp_path, registry))
    build_corpus(b, _cfg(tmp_path, registry))
    for split in SPLITS:
        assert a.corpus_split(split).read_bytes() == b.corpus_split(split).read_bytes()


def test_strict_stops_on_the_first_bad_file(tmp_path):
    registry = make_registry(tmp_path, with_missing=False)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(LondiniumError, match=r"source 'plays'.*(broken\.txt|cover\.png).*strict"):
        build_corpus(ws, _cfg(tmp_path, registry, strict=True))
    assert "corpus" not in ws.manifest()


def test_nothing_usable_fails_with_a_clear_error_and_exit_code(tmp_path, capsys):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "latin.txt").write_text(LATIN, encoding="utf-8")
    registry = tmp_path / "sources.toml"
    registry.write_text('[[source]]\nid = "latin"\nkind = "local"\nlocation = "texts"\n', encoding="utf-8")
    code = cli_main(["corpus", "build", "-w", str(tmp_path / "ws"), "--set", f"corpus.sources={json.dumps(str(registry))}",
                     "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no usable documents" in err and "rejections.jsonl" in err
    assert "Traceback" not in err
    rejections = tmp_path / "ws" / "corpus" / "rejections.jsonl"  # the file the message points at exists
    assert rejections.is_file() and any(json.loads(line)["file"] == "latin.txt" for line in rejections.read_text().splitlines())


def test_a_crash_while_writing_leaves_the_corpus_unrecorded(built, monkeypatch):
    ws, _, _, registry = built
    assert "corpus" in ws.manifest()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C after the splits were written, before the card

    monkeypatch.setattr(build_module, "chart", crash)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(ws, _cfg(registry.parent, registry), force=True)
    assert "corpus" not in ws.manifest()  # later stages see an unfinished corpus, not a mix
    assert not list(ws.corpus_dir.glob(".*.tmp"))  # no temporary files left behind


def test_rejection_reasons_in_the_card_match_the_log(built):
    ws, _, _, _ = built
    card = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
    logged = Counter((r["level"], r["reason"]) for r in read_jsonl(ws.corpus_rejections))
    assert {(r["level"], r["reason"]): r["count"] for r in card["rejection_reasons"]} == dict(logged)
