"""Corpus profiles: the embedded registry selects period-london, any other registry gets neutral and
opts into parts (per corpus, and folding per source); the corpus stage records the profile and
later stages read it back; bad profile settings are one line naming the file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.prose import modern_prose

from londinium.config import CorpusConfig
from londinium.corpus.build import build_corpus
from londinium.corpus.sources import load_registry
from londinium.errors import ConfigError
from londinium.profiles import Profile, builtin, profile_for, registry_profile
from londinium.workspace import Workspace

SOURCE = '[[source]]\nid = "{id}"\nkind = "local"\nlocation = "texts"\nlicense = "CC0"\n{extra}\n'


def _registry(tmp_path: Path, head: str = "", sources: dict[str, str] | None = None) -> Path:
    (tmp_path / "texts").mkdir(exist_ok=True)
    for i in range(8):
        (tmp_path / "texts" / f"page{i}.txt").write_text(modern_prose(i, 24), encoding="utf-8")
    body = "".join(SOURCE.format(id=sid, extra=extra) for sid, extra in (sources or {"docs": ""}).items())
    path = tmp_path / "sources.toml"
    path.write_text(head + "\n" + body, encoding="utf-8")
    return path


def test_the_embedded_registry_selects_period_london():
    p = registry_profile(None)
    assert p.name == "period-london" and p == builtin("period-london")
    assert p.fold("vpon") == p.fold("upon") and p.folds
    assert p.path("probes").is_file() and p.path("period_words").is_file() and p.path("anachronisms").is_file()
    assert p.probes_title == "Domain probes (period London)" and p.prompt_hint() == "Thou art"


def test_a_users_registry_gets_neutral(tmp_path):
    p = registry_profile(_registry(tmp_path))
    assert p == builtin("neutral") and p.name == "neutral"
    assert not p.folds and p.fold("Vpon") == "vpon" != p.fold("upon")
    assert [p.path(k) for k in ("period_words", "anachronisms", "probes")] == [None, None, None]
    docs = [{"text": "Restart the server when the cache is full."}]
    assert p.prompt_hint(docs) == "Restart the server"  # from the corpus's own text, not 'Thou art'


def test_a_registry_opts_into_parts_of_a_profile_or_into_all_of_it(tmp_path):
    (tmp_path / "words.txt").write_text("socket\n", encoding="utf-8")
    head = '[profile]\nfolding = "period-london"\nprobes = "period-london"\nperiod_words = "words.txt"\n'
    p = registry_profile(_registry(tmp_path, head))
    london = builtin("period-london")
    assert p.name == "neutral + folding, period_words, probes"
    assert p.folding == "early-modern" and p.path("probes") == london.path("probes") and p.probes_title == london.probes_title
    assert p.path("period_words") == (tmp_path / "words.txt").resolve() and p.path("anachronisms") is None
    assert p.example_prompt == "" and p.style == ""
    whole = registry_profile(_registry(tmp_path, 'profile = "period-london"'))
    assert whole == london
    off = registry_profile(_registry(tmp_path, '[profile]\nbase = "period-london"\nprobes = ""\nname = "london-no-probes"\n'))
    assert off.name == "london-no-probes" and off.path("probes") is None and off.folds


def test_a_source_with_its_own_profile_folds_only_its_documents(tmp_path):
    path = _registry(tmp_path, sources={"docs": "", "folio": 'profile = "period-london"'})
    p = registry_profile(path)
    assert p.name == "neutral" and p.folds and p.source_folding == {"folio": "early-modern"}
    assert p.fold_for("folio")("vpon") == "upon" and p.fold_for("docs")("vpon") == "vpon"
    assert [s.profile for s in load_registry(path)] == ["", "period-london"]


@pytest.mark.parametrize("head, sources, message", [
    ('profile = "victorian"', None, "profile: unknown profile 'victorian'; known profiles: neutral, period-london"),
    ('[profile]\nfolding = "latin"', None, "[profile] field 'folding': 'latin' must be one of 'none', 'early-modern'"),
    ('[profile]\nprobes = "missing.toml"', None, "[profile] field 'probes':"),
    ('[profile]\nspelling = "none"', None, "[profile] field 'spelling': unknown field"),
    ('profile = 3', None, "'profile' must be a profile name"),
    ("", {"docs": 'profile = "victorian"'}, "source 'docs' (#1): field 'profile': unknown profile 'victorian'"),
])
def test_bad_profile_settings_name_the_registry_and_the_field(tmp_path, head, sources, message):
    path = _registry(tmp_path, head, sources)
    with pytest.raises(ConfigError) as e:
        load_registry(path)
        registry_profile(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_the_corpus_stage_records_the_profile_and_later_stages_read_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    path = _registry(tmp_path, '[profile]\nfolding = "early-modern"\n')
    build_corpus(ws, CorpusConfig(sources=str(path), val_fraction=0.2, test_fraction=0.2))
    card = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
    assert card["profile"]["name"] == "neutral + folding" and card["profile"]["folding"] == "early-modern"
    assert "## Profile" in ws.corpus_report_md.read_text(encoding="utf-8")
    assert profile_for(ws) == registry_profile(path)
    path.write_text(path.read_text(encoding="utf-8").replace('"early-modern"', '"none"'), encoding="utf-8")
    assert profile_for(ws).folding == "early-modern"  # what the corpus was built with, until it is rebuilt
    build_corpus(ws, CorpusConfig(sources=str(path), val_fraction=0.2, test_fraction=0.2))  # the profile is an input
    assert profile_for(ws).folding == "none"


def test_an_adopted_corpus_is_neutral_unless_the_adoption_names_a_profile(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.adopt("corpus", [])
    assert profile_for(ws) == builtin("neutral")
    ws.adopt("corpus", [], {"profile": "period-london"})
    assert profile_for(ws) == builtin("period-london")


def test_a_recorded_profile_round_trips_and_a_mangled_one_is_named():
    p = Profile("x", folding="early-modern", source_folding={"kjv": "none"}, probes="londinium:probes/period_london.toml")
    assert Profile.from_record(json.loads(json.dumps(p.to_record())), "card") == p
    with pytest.raises(ConfigError, match=r"report.json: the recorded profile has unknown or malformed fields \(folding\)"):
        Profile.from_record({**p.to_record(), "folding": "latin"}, "corpus/report.json")
