"""Every path in a config file resolves against that file's folder, wherever the command starts (an
MCP host, cron); a `--set` path against the current directory; errors name the absolute path tried.
Through the real CLI, started as a process in another directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.prose import prose

from londinium.files import loads_toml

CONFIG = """\
[corpus]
sources = "my-sources.toml"
cache_dir = "cache"

[eval]
checkpoint = "latest"
probe_file = "probes/mine.toml"
period_words = "lists/words.txt"

[export]
checkpoint = "step-3"
out = "exports/mine"

[serve]
checkpoint = "runs/main/checkpoints/step-000004"
export = "../elsewhere/exports/mine"
request_log = "~/requests.jsonl"
"""


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "londinium", *argv], cwd=cwd, capture_output=True, text=True, timeout=180)


def _project(tmp_path: Path, config: str = CONFIG) -> tuple[Path, Path]:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "londinium.toml").write_text(config, encoding="utf-8")
    return project, elsewhere


def test_config_show_resolves_every_path_against_the_config_files_folder(tmp_path: Path):
    project, elsewhere = _project(tmp_path)
    proc = _cli("config", "show", "--config", "../project/londinium.toml", "--set", "corpus.cache_dir='my-cache'",
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    shown = loads_toml(proc.stdout)
    assert shown["corpus"]["sources"] == str(project / "my-sources.toml")
    assert shown["corpus"]["cache_dir"] == str(elsewhere / "my-cache")  # --set: the current directory
    assert shown["eval"]["probe_file"] == str(project / "probes" / "mine.toml")
    assert shown["eval"]["period_words"] == str(project / "lists" / "words.txt")
    assert shown["export"]["out"] == str(project / "exports" / "mine")
    assert shown["serve"]["checkpoint"] == str(project / "runs" / "main" / "checkpoints" / "step-000004")
    assert shown["serve"]["export"] == str(elsewhere / "exports" / "mine")
    assert shown["serve"]["request_log"] == str(Path.home() / "requests.jsonl")
    # names of checkpoints are not paths; empty means the default
    assert (shown["eval"]["checkpoint"], shown["export"]["checkpoint"], shown["generate"]["checkpoint"]) == ("latest", "step-3", "best")
    assert shown["eval"]["anachronisms"] == ""
    # the field docs say how a relative path is read
    comment = proc.stdout.split("\nsources = ", 1)[0].rsplit("\n", 1)[-1]
    assert "relative to the config file's folder" in comment and "--set, to the current directory" in comment


def test_corpus_build_started_elsewhere_reads_the_registry_beside_the_config(tmp_path: Path):
    project, elsewhere = _project(tmp_path, '[corpus]\nsources = "my-sources.toml"\ncache_dir = "cache"\n')
    (project / "my-sources.toml").write_text('[[source]]\nid = "mine"\nkind = "local"\nlocation = "texts"\n', encoding="utf-8")
    (project / "texts").mkdir()
    for i in range(4):
        (project / "texts" / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(30 + i, 12), encoding="utf-8")
    proc = _cli("corpus", "build", "-w", "work", "--config", str(project / "londinium.toml"), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (elsewhere / "work" / "corpus" / "train.jsonl").stat().st_size > 0  # the workspace flag: this directory

    (project / "londinium.toml").write_text('[corpus]\nsources = "registry/missing.toml"\n', encoding="utf-8")
    proc = _cli("corpus", "build", "-w", "work", "--config", str(project / "londinium.toml"), cwd=elsewhere)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(project / "registry" / "missing.toml") in lines[0], proc.stderr
