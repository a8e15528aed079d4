"""Workspace: the manifest decides when a stage is up to date; writes are atomic."""

import os
from pathlib import Path

import pytest

from londinium.config import CorpusConfig
from londinium.errors import LondiniumError
from londinium.files import atomic_write, read_jsonl, write_jsonl
from londinium.workspace import Workspace


def _stage(ws: Workspace, section, src: Path, force: bool = False, log=None) -> tuple[bool, list]:
    calls = []

    def run():
        out = ws.stage_dir("demo") / "out.txt"
        with atomic_write(out) as f:
            f.write(src.read_text().upper())
        calls.append(1)
        return [out]

    ran = ws.run_stage("demo", section, run, inputs=[src], force=force, log=log or (lambda m: None))
    return ran, calls


def test_stage_reruns_only_when_config_or_inputs_change(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    src = tmp_path / "in.txt"
    src.write_text("thou")
    cfg = CorpusConfig()
    assert _stage(ws, cfg, src)[0] is True
    messages = []
    assert _stage(ws, cfg, src, log=messages.append)[0] is False
    assert "up to date" in messages[0]
    src.write_text("thee")  # input changed
    assert _stage(ws, cfg, src)[0] is True
    cfg.min_chars += 1  # config changed
    assert _stage(ws, cfg, src)[0] is True
    assert _stage(ws, cfg, src, force=True)[0] is True
    assert (ws.stage_dir("demo") / "config.toml").read_text().count("min_chars = ") == 1


def test_tampered_or_missing_output_reruns_the_stage(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    src = tmp_path / "in.txt"
    src.write_text("vpon")
    cfg = CorpusConfig()
    _stage(ws, cfg, src)
    out = ws.stage_dir("demo") / "out.txt"
    out.write_text("edited by hand")
    assert _stage(ws, cfg, src)[0] is True
    out.unlink()
    assert _stage(ws, cfg, src)[0] is True
    assert out.read_text() == "VPON"


def test_a_stage_that_fails_is_not_recorded_as_done(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    src = tmp_path / "in.txt"
    src.write_text("haue")

    def boom():
        raise RuntimeError("crash mid-stage")

    with pytest.raises(RuntimeError):
        ws.run_stage("demo", CorpusConfig(), boom, inputs=[src], log=lambda m: None)
    assert "demo" not in ws.manifest()


def test_unreadable_manifest_means_everything_reruns(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir(parents=True)
    ws.manifest_file.write_text("{ torn")
    assert ws.manifest() == {}


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path: Path):
    target = tmp_path / "train.jsonl"
    write_jsonl(target, [{"text": "old"}])
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write('{"text": "new, half')
            raise KeyboardInterrupt
    assert list(read_jsonl(target)) == [{"text": "old"}]
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"], "temporary file left behind"


def test_workspace_paths_live_under_the_root(tmp_path: Path):
    ws = Workspace(tmp_path / "w")
    for p in [ws.corpus_split("train"), ws.tokenizer_file, ws.shard_bin("val"), ws.checkpoints_dir(), ws.manifest_file]:
        assert ws.root in p.parents
    assert os.path.isabs(ws.root)


@pytest.mark.parametrize("text", ["[1, 2]", '{"corpus": 5}', '{"corpus": {"outputs": [1]}}', "nul\x00l", "[" * 5000])
def test_a_manifest_of_the_wrong_shape_counts_as_nothing_done(tmp_path, text):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.manifest_file.write_text(text)
    assert ws.manifest() == {}
    assert not ws.up_to_date("corpus", {}, [])
    with pytest.raises(LondiniumError, match="londinium corpus build"):
        ws.require_stage("corpus", [ws.corpus_split("train")])


def test_stale_temporaries_of_dead_processes_go_and_a_live_ones_stay(tmp_path):
    import subprocess
    import sys

    ws = Workspace(tmp_path / "ws")
    ws.corpus_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = [ws.corpus_dir / f".train.jsonl.{dead}.abc123.tmp", ws.corpus_dir / f".val.jsonl.{dead}.new.tmp",
                 ws.root / f".manifest.json.{dead}.xyz.tmp", ws.corpus_dir / ".old-style.jsonl.q1w2e3.tmp"]
        busy = ws.corpus_dir / f".test.jsonl.{live.pid}.def456.tmp"  # another process is writing it now
        for p in [*stale, busy]:
            p.write_text("half")
        assert sorted(ws.remove_stale_temporaries("corpus")) == sorted(stale)
        assert busy.exists()
    finally:
        live.kill()
        live.wait()
