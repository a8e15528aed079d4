"""Parquet and Arrow sources, and folders Hugging Face `datasets` saved, through the real `corpus build`
CLI: rows become texts (grouped and titled like JSONL rows), and a bad table is one recorded line
naming the file and what is wrong, never a traceback."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.prose import prose



def _needs(module: str):
    """pyarrow (the `parquet` extra) and datasets are dev dependencies: CI installs them and must run
    these tests; elsewhere a test is skipped where its module is not installed."""
    return importlib.import_module(module) if os.environ.get("CI") else pytest.importorskip(module)


pa = _needs("pyarrow")
pq = _needs("pyarrow.parquet")

BOOKS = [("Genesis", 1), ("Genesis", 2), ("Exodus", 1), ("Exodus", 2), ("Exodus", 3), ("Ruth", 1)]


def _verses() -> list[dict]:
    return [{"book": book, "chapter": chapter, "verse": verse, "text": prose(100 * i + verse, 3).replace("\n", " ")}
            for i, (book, chapter) in enumerate(BOOKS) for verse in range(1, 5)]


def _build(tmp_path: Path, registry: str) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "sources.toml").write_text(registry, encoding="utf-8")
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "londinium", "corpus", "build", "-w", str(ws),
                           "--set", f"corpus.sources={json.dumps(str(tmp_path / 'sources.toml'))}",
                           "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                           # the tests' prose shares one small vocabulary: keep every text, so what is
                           # read is what is checked (keep-one, a user registry's default, is tested apart)
                           "--set", "corpus.near_duplicates=group"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    return proc, ws


def _documents(ws: Path) -> list[dict]:
    return [json.loads(line) for split in ("train", "val", "test")
            for line in (ws / "corpus" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def _rejections(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "corpus" / "rejections.jsonl").read_text(encoding="utf-8").splitlines()]


def test_parquet_and_arrow_rows_become_texts_and_bad_tables_are_recorded(tmp_path: Path):
    verses = _verses()
    with_null = verses[:5] + [{**verses[5], "text": None}] + verses[6:]
    tables = tmp_path / "tables"
    tables.mkdir()
    # several row groups of 3 rows: the reader goes through them one at a time
    pq.write_table(pa.Table.from_pylist(with_null), tables / "bible.parquet", row_group_size=3)
    letters = pa.table({"body": [prose(500 + i, 5) for i in range(5)], "n": list(range(5))})
    notes = pa.table({"body": [prose(600 + i, 5) for i in range(3)], "n": list(range(3))})
    with pa.ipc.new_file(tables / "letters.arrow", letters.schema) as w:  # the IPC file format
        w.write_table(letters)
    with pa.ipc.new_stream(tables / "stream.data", notes.schema) as w:  # the stream format, no telling suffix
        w.write_table(notes)
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"body": [prose(1, 4)], "n": [1]}), bad / "no-text-column.parquet")
    pq.write_table(pa.table({"text": [1, 2, 3], "title": ["a", "b", "c"]}), bad / "numbers.parquet")
    (bad / "cut-short.parquet").write_bytes((tables / "bible.parquet").read_bytes()[:300])
    (bad / "garbage.arrow").write_bytes(b"ARROW1\x00\x00" + os.urandom(64))
    (bad / "good.txt").write_text(prose(9), encoding="utf-8")

    proc, ws = _build(tmp_path, f"""
[[source]]
id = "bible"
kind = "local"
location = "tables/bible.parquet"
group_by = ["book", "chapter"]
title_fields = ["book", "chapter"]

[[source]]
id = "letters"
kind = "local"
location = "tables"
files = "*.arrow"
text_field = "body"

[[source]]
id = "stream"
kind = "local"
location = "tables/stream.data"
format = "arrow"
jsonl_text_field = "body"    # the former name still works

[[source]]
id = "bad"
kind = "local"
location = "bad"
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    docs = _documents(ws)
    by_source = {sid: [d for d in docs if d["source"] == sid] for sid in ("bible", "letters", "stream", "bad")}

    # one text per (book, chapter), its verses one a line, in row order, titled from the fields
    titles = sorted(d["title"] for d in by_source["bible"])
    assert titles == sorted(f"{b} {c}" for b, c in BOOKS)
    genesis1 = next(d for d in by_source["bible"] if d["title"] == "Genesis 1")
    assert genesis1["text"] == "\n".join(v["text"] for v in verses[:4])
    assert genesis1["id"] == "bible/bible.parquet#0"
    genesis2 = next(d for d in by_source["bible"] if d["title"] == "Genesis 2")
    assert genesis2["text"] == "\n".join(v["text"] for v in (verses[4], verses[6], verses[7]))  # the null row 6 is left out
    assert sorted(d["text"] for d in by_source["letters"]) == sorted(letters.column("body").to_pylist())
    assert sorted(d["text"] for d in by_source["stream"]) == sorted(notes.column("body").to_pylist())

    rejections = _rejections(ws)
    rows = [r for r in rejections if r["source"] == "bible"]
    assert len(rows) == 1 and rows[0]["level"] == "rows"
    assert rows[0]["detail"] == "1 of 24 rows skipped: row 6: no string field 'text' (set text_field)"
    bad_files = {r["file"]: r["detail"] for r in rejections if r["source"] == "bad" and r["level"] == "file"}
    assert set(bad_files) == {"no-text-column.parquet", "numbers.parquet", "cut-short.parquet", "garbage.arrow"}
    assert bad_files["no-text-column.parquet"] == (
        "no-text-column.parquet: no column 'text' (its columns: body, n); set text_field in the sources registry")
    assert bad_files["numbers.parquet"] == (
        "numbers.parquet: column 'text' holds int64, not text; set text_field to one of title")
    assert bad_files["cut-short.parquet"].startswith("cut-short.parquet: not a readable Parquet file (")
    assert bad_files["garbage.arrow"].startswith("garbage.arrow: not a readable Arrow IPC file (")
    assert all("\n" not in why for why in bad_files.values())
    assert [d["title"] for d in by_source["bad"]] != []  # the good file next to them is kept
    card = json.loads((ws / "corpus" / "report.json").read_text(encoding="utf-8"))
    bad_card = next(s for s in card["sources"] if s["id"] == "bad")
    assert bad_card["files"] == {"read": 5, "kept": 1, "rejected": 4}


def test_folders_and_files_that_datasets_wrote_are_read_without_datasets(tmp_path: Path):
    """What the `datasets` library itself writes: `save_to_disk` of a Dataset (two Arrow shards) and of
    a DatasetDict (a folder per split), and `to_parquet`. The build reads the Arrow files their
    metadata lists, in order; the metadata files are neither texts nor rejections."""
    datasets = _needs("datasets")

    def rows(seed: int) -> dict[str, list]:  # each source its own texts (equal ones would be exact duplicates)
        return {"text": [prose(seed + i, 6).strip() for i in range(8)], "source_url": [f"https://example.org/{seed + i}" for i in range(8)]}

    written = {"saved": rows(700), "dict": rows(800), "parquet": rows(900)}
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(written["saved"]).save_to_disk(str(tmp_path / "saved"), num_shards=2)
    split = datasets.Dataset.from_dict(written["dict"])
    datasets.DatasetDict({"train": split.select(range(6)), "test": split.select(range(6, 8))}).save_to_disk(str(tmp_path / "dict"))
    datasets.Dataset.from_dict(written["parquet"]).to_parquet(str(tmp_path / "rows.parquet"))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "data-00000-of-00002.arrow", "data-00001-of-00002.arrow", "dataset_info.json", "state.json"]

    proc, ws = _build(tmp_path, """
[[source]]
id = "saved"
kind = "local"
location = "saved"

[[source]]
id = "dict"
kind = "local"
location = "dict"

[[source]]
id = "parquet"
kind = "local"
location = "rows.parquet"
title_fields = ["source_url"]
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = _documents(ws)
    for sid, table in written.items():
        assert sorted(d["text"] for d in docs if d["source"] == sid) == sorted(table["text"]), sid
    ids = {d["id"] for d in docs}
    assert {"saved/data-00000-of-00002.arrow#0", "saved/data-00001-of-00002.arrow#0",
            "dict/train/data-00000-of-00001.arrow#0", "dict/test/data-00000-of-00001.arrow#0"} <= ids
    assert {d["title"] for d in docs if d["source"] == "parquet"} == set(written["parquet"]["source_url"])
    assert not [r for r in _rejections(ws) if r["source"] in ("saved", "dict", "parquet")]
