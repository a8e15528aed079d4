"""A corpus that is not period English: code-heavy documentation through the real corpus stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest
from helpers.docs_corpus import DUPLICATE_PROSE, write_docs_corpus

from londinium.config import CorpusConfig
from londinium.corpus.build import build_corpus
from londinium.corpus.sources import load_registry
from londinium.errors import ConfigError
from londinium.files import read_jsonl
from londinium.workspace import SPLITS, Workspace


def _documents(ws: Workspace) -> list[dict]:
    return [row for split in SPLITS for row in read_jsonl(ws.corpus_split(split))]


def _rejections(ws: Workspace) -> list[dict]:
    return list(read_jsonl(ws.corpus_rejections))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The docs corpus built by the real CLI with its output going to a file, as in a cron job or CI."""
    root = tmp_path_factory.mktemp("docs")
    corpus = write_docs_corpus(root)
    ws = Workspace(root / "ws")
    result = subprocess.run([sys.executable, "-m", "londinium", "corpus", "build", "-w", str(ws.root),
                             "--set", f"corpus.sources={corpus.registry}", "--set", f"corpus.cache_dir={root / 'cache'}"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    return corpus, ws, result


def test_code_blocks_reach_the_documents_byte_for_byte(built):
    corpus, ws, _ = built
    text = "\n\n".join(d["text"] for d in _documents(ws))
    for code in corpus.code_blocks:
        assert code in text, code


def test_code_and_tables_are_recorded_apart_and_no_page_of_prose_is_dropped_as_not_english(built):
    corpus, ws, _ = built
    card = json.loads(ws.corpus_report_json.read_text())
    [source] = card["sources"]
    assert source["code_and_tables"]["code"]["kept"] >= 8 and source["code_and_tables"]["table"]["kept"] == 2
    assert not [r for r in _rejections(ws) if r["reason"] == "not-english"]
    assert any(d["id"].startswith("docs/howto/instrumentation.html#") for d in _documents(ws))  # half of it is output
    md = ws.corpus_report_md.read_text()
    assert "## Code and tables" in md
    assert re.search(r"^[\d,]+ documents \(train [\d,]+, validation [\d,]+, test [\d,]+\)", md, re.MULTILINE)


def test_permalinks_are_stripped(built):
    _, ws, _ = built
    assert not any("¶" in d["text"] for d in _documents(ws))
    assert any(d["text"].startswith("Defining functions\n\n") for d in _documents(ws))


def test_keep_one_keeps_one_copy_of_a_page_and_names_it_in_the_rejection(built):
    corpus, ws, _ = built
    [dropped] = [r for r in _rejections(ws) if r["reason"] == "near-duplicate"]
    assert dropped["file"] == corpus.duplicate_source and dropped["level"] == "text"
    assert f"near-duplicate of docs/{corpus.duplicate_html}, which is kept" in dropped["detail"]
    ids = {d["id"].split("#")[0] for d in _documents(ws)}
    assert f"docs/{corpus.duplicate_html}" in ids and f"docs/{corpus.duplicate_source}" not in ids
    assert sum(DUPLICATE_PROSE in d["text"] for d in _documents(ws)) == 1
    [group] = json.loads(ws.corpus_report_json.read_text())["near_duplicate_groups"]
    assert group["kept"] == f"docs/{corpus.duplicate_html}"


def test_a_build_logged_to_a_file_has_no_progress_bar_redraws(built):
    *_, result = built
    assert "corpus: data card" in result.stdout
    assert not re.search(r"\r|\x1b\[", result.stdout + result.stderr)


def test_a_source_can_drop_its_code_and_tables_and_keep_its_whitespace(tmp_path):
    corpus = write_docs_corpus(tmp_path, code="drop", tables="drop", whitespace="keep")
    ws = Workspace(tmp_path / "ws")
    build_corpus(ws, CorpusConfig(sources=str(corpus.registry), cache_dir=str(tmp_path / "cache")))
    reasons = {(r["level"], r["reason"]) for r in _rejections(ws)}
    assert {("paragraph", "code"), ("paragraph", "table")} <= reasons
    text = "\n\n".join(d["text"] for d in _documents(ws))
    assert "```" not in text and "| Operation |" not in text and ">>> " not in text
    assert "at a glance.  The\nrest" in text  # two spaces after a full stop, as written
    [source] = json.loads(ws.corpus_report_json.read_text())["sources"]
    assert source["code_and_tables"]["code"]["kept"] == 0 and source["code_and_tables"]["code"]["dropped"] >= 8


def test_group_keeps_both_copies_together_in_one_split(tmp_path):
    corpus = write_docs_corpus(tmp_path)
    ws = Workspace(tmp_path / "ws")
    build_corpus(ws, CorpusConfig(sources=str(corpus.registry), cache_dir=str(tmp_path / "cache"), near_duplicates="group"))
    split_of = {}
    for split in SPLITS:
        for d in read_jsonl(ws.corpus_split(split)):
            split_of.setdefault(d["id"].split("#")[0], set()).add(split)
    html, source = split_of[f"docs/{corpus.duplicate_html}"], split_of[f"docs/{corpus.duplicate_source}"]
    assert html == source and len(html) == 1
    assert "at a glance. The\nrest" in "\n".join(d["text"] for d in _documents(ws))  # normalised: one space


def test_a_bad_source_setting_names_the_registry_source_and_field(tmp_path):
    corpus = write_docs_corpus(tmp_path, whitespace="squash")
    with pytest.raises(ConfigError, match=r"docs-sources.toml: source 'docs' \(#1\): field 'whitespace': 'squash' must be one of"):
        load_registry(corpus.registry)


def test_the_documentation_example_registry_in_the_guide_is_valid(tmp_path):
    guide = (Path(__file__).resolve().parents[2] / "docs" / "corpus.md").read_text(encoding="utf-8")
    example = next(block.split("```", 1)[0] for block in guide.split("```toml\n")[1:] if 'id = "pydocs"' in block)
    (tmp_path / "registry.toml").write_text(example, encoding="utf-8")
    [spec] = load_registry(tmp_path / "registry.toml")
    assert (spec.format, spec.code, spec.tables, spec.whitespace) == ("html", "keep", "keep", "normalise")
