"""Stages trust only what an earlier stage recorded: a corpus rebuild killed with SIGKILL half-way
(new train.jsonl, old val/test) is refused downstream by name, and the next build repairs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.prose import prose

from londinium.files import KILL_POINT_ENV
from londinium.workspace import SPLITS, Workspace


def _registry(tmp_path: Path, n_texts: int) -> Path:
    texts = tmp_path / "texts"
    texts.mkdir(exist_ok=True)
    for i in range(n_texts):
        (texts / f"text{i}.txt").write_text(f"TEXT {i}\n\n" + prose(100 + i, 12), encoding="utf-8")
    registry = tmp_path / "sources.toml"
    registry.write_text('[[source]]\nid = "prose"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n', encoding="utf-8")
    return registry


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "londinium", *args, "-w", str(tmp_path / "ws"),
           "--set", f"corpus.sources={json.dumps(str(tmp_path / 'sources.toml'))}",
           "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
           "--set", "tokenizer.vocab_size=300", "--set", "tokenizer.compare_gpt2=false", "--set", "tokenizer.compare_sources=false"]
    environ = {k: v for k, v in os.environ.items() if k != KILL_POINT_ENV}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**environ, **(env or {})})


def _refused_naming_corpus_build(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "londinium corpus build" in lines[0]


def test_kill_during_a_corpus_rebuild_is_refused_downstream_and_the_next_build_repairs_it(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    _registry(tmp_path, 12)
    assert _cli(tmp_path, "corpus", "build").returncode == 0
    old = {s: ws.corpus_split(s).read_bytes() for s in SPLITS}

    _registry(tmp_path, 16)  # four more texts: every split may change
    killed = _cli(tmp_path, "corpus", "build", env={KILL_POINT_ENV: "replace_together:1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert ws.corpus_split("train").read_bytes() != old["train"]  # the new train split...
    assert ws.corpus_split("val").read_bytes() == old["val"]  # ...next to the old held-out ones
    assert "corpus" not in ws.manifest()
    leftovers = list(ws.corpus_dir.glob(".*.tmp"))
    assert leftovers  # the kill left the other splits' temporaries

    _refused_naming_corpus_build(_cli(tmp_path, "tokenizer", "train"))
    _refused_naming_corpus_build(_cli(tmp_path, "data", "prepare"))
    assert not ws.tokenizer_file.exists()

    repaired = _cli(tmp_path, "corpus", "build")
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert not list(ws.corpus_dir.glob(".*.tmp"))  # the killed run's temporaries are swept
    train_ids = {json.loads(line)["group"] for line in ws.corpus_split("train").read_text().splitlines()}
    held_out = {json.loads(line)["group"] for s in ("val", "test") for line in ws.corpus_split(s).read_text().splitlines()}
    assert held_out and not train_ids & held_out
    for stage in (("tokenizer", "train"), ("data", "prepare")):
        proc = _cli(tmp_path, *stage)
        assert proc.returncode == 0, proc.stderr[-2000:]

    # The same holds one stage further down: training reads only the shards `data prepare` recorded.
    with open(ws.shard_bin("train"), "ab") as f:
        f.write(b"\0\0")
    proc = _cli(tmp_path, "train", "--set", "train.max_steps=1")
    assert proc.returncode == 2 and "londinium data prepare" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_corpus_without_a_recorded_build_is_refused(tmp_path: Path):
    _registry(tmp_path, 12)
    assert _cli(tmp_path, "corpus", "build").returncode == 0
    # The same files copied into a fresh workspace: nothing there says which build made them.
    fresh = tmp_path / "copy"
    fresh.mkdir()
    shutil.copytree(tmp_path / "ws" / "corpus", fresh / "ws" / "corpus")
    (fresh / "sources.toml").write_text((tmp_path / "sources.toml").read_text())
    _refused_naming_corpus_build(_cli(fresh, "tokenizer", "train"))

    # An edited split in the original workspace is refused too, naming the file.
    ws = Workspace(tmp_path / "ws")
    with open(ws.corpus_split("train"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "x", "text": "held out text", "source": "prose", "group": "g"}) + "\n")
    proc = _cli(tmp_path, "tokenizer", "train")
    _refused_naming_corpus_build(proc)
    assert "train.jsonl changed" in proc.stderr
