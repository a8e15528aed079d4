"""A full disk, through the real command, in every stage that writes: corpus build, tokenizer,
shards, a training checkpoint, export and eval each run on a workspace on its own small tmpfs that
holds their inputs and little else. Each must end with one line naming the path and the space left
(exit 2, no traceback), record nothing, and leave no temporary behind; after space is freed the
stage runs again cleanly.

Mounting a tmpfs needs root (CAP_SYS_ADMIN). Without it the test is skipped, with the reason,
everywhere; as root a mount that fails is a skip on a developer's machine but a failure under
CI=true, so a CI machine that could run the test never passes it by skipping it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.prose import local_sources

from londinium.config import ModelConfig
from londinium.tokenizer.codec import load_tokenizer
from londinium.workspace import Workspace

from integration.test_export_hf import save_random_run
from integration.train_helpers import sets

RUN = "full-disk"
CLI = [sys.executable, "-m", "londinium"]


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-disk cases run where the tests run as root (CI)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        why = f"cannot mount a tmpfs at {where} as root: {proc.stderr.strip() or proc.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def fill(where: Path, leave: int) -> Path:
    """A file that takes all the free space of `where`'s filesystem but `leave` bytes."""
    st = os.statvfs(where)
    filler = where / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        remaining = st.f_bavail * st.f_frsize - leave
        while remaining > 0:
            remaining -= f.write(b"\0" * min(remaining, 1 << 20))
    return filler


def copy_workspace(src: Workspace, dst: Path, stages: list[str], runs: list[str] = ()) -> Workspace:
    """The folders of `stages` (and `runs`) of `src`, with a manifest holding only their entries."""
    ws = Workspace(dst)
    ws.root.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        shutil.copytree(src.stage_dir(stage), ws.stage_dir(stage))
    for run in runs:
        shutil.copytree(src.run_dir(run), ws.run_dir(run))
    manifest = {k: v for k, v in src.manifest().items() if k in stages}
    ws.manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
    return ws


@pytest.fixture(scope="module")
def source(tiny_workspace) -> Workspace:
    vocab = load_tokenizer(tiny_workspace).get_vocab_size()
    save_random_run(tiny_workspace, RUN, ModelConfig(n_layer=1, n_head=2, n_embd=32, context=32, vocab_size=vocab))
    return tiny_workspace


def test_a_full_disk_is_one_line_in_every_stage_and_nothing_is_recorded(source, tmp_path):
    registry = local_sources(tmp_path)
    corpus_sets = ["--set", f"corpus.sources={json.dumps(str(registry))}", "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    eval_sets = [x for s in ("eval.splits=['val']", "eval.max_docs=2", "eval.probes=false", "eval.prompts=0") for x in ("--set", s)]
    # stage -> (what the workspace holds, the bytes left free, the command, the manifest key it must not get)
    cases = {
        "corpus": ([], [], 0, ["corpus", "build", *corpus_sets], "corpus"),
        "tokenizer": (["corpus"], [], 0, ["tokenizer", "train", "--set", "tokenizer.vocab_size=512", "--set",
                                          "tokenizer.compare_gpt2=false", "--set", "tokenizer.compare_sources=false"], "tokenizer"),
        "shards": (["corpus", "tokenizer"], [], 0, ["data", "prepare"], "shards"),
        # room for the run's config and metrics lines, not for a checkpoint (about 1.6 MB)
        "train": (["corpus", "tokenizer", "shards"], [], 64_000, ["train", "--run", "t", *sets(2)], "train/t"),
        "export": (["corpus", "tokenizer", "shards"], [RUN], 16_000, ["export", "--run", RUN], f"export/{RUN}-step-000001"),
        "eval": (["corpus", "tokenizer", "shards"], [RUN], 0, ["eval", "--run", RUN, *eval_sets], f"eval/{RUN}"),
    }
    workspaces, fillers, procs = {}, {}, {}
    try:
        for stage, (stages, runs, leave, _, _) in cases.items():
            mount_tmpfs(tmp_path / f"disk-{stage}", "8m")
            workspaces[stage] = copy_workspace(source, tmp_path / f"disk-{stage}" / "ws", stages, runs)
            fillers[stage] = fill(tmp_path / f"disk-{stage}", leave)
        for stage, (_, _, _, args, _) in cases.items():  # all at once: they are independent
            procs[stage] = subprocess.Popen([*CLI, *args, "-w", str(workspaces[stage].root)], cwd=tmp_path,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = {stage: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for stage, p in procs.items()}
        for stage, (rc, out, err) in results.items():
            ws, key = workspaces[stage], cases[stage][4]
            assert rc == 2 and "Traceback" not in err, (stage, err[-3000:])
            lines = [line for line in err.splitlines() if line.startswith("londinium: error:")]
            assert len(lines) == 1 and err.rstrip().endswith(lines[0]), (stage, err)  # progress bars may precede it
            assert f"no space left on the device writing {ws.root}/" in lines[0] and " free there" in lines[0], (stage, lines[0])
            assert key not in ws.manifest(), stage
            assert [p for p in ws.root.rglob("*") if p.name.endswith(".tmp")] == [], stage
        fillers["corpus"].unlink()  # space again: the stage runs as if the failure had never been
        again = subprocess.run([*CLI, "corpus", "build", *corpus_sets, "-w", str(workspaces["corpus"].root)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "corpus" in workspaces["corpus"].manifest(), again.stderr[-2000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for stage in cases:
            if os.path.ismount(tmp_path / f"disk-{stage}"):
                subprocess.run(["umount", "-l", str(tmp_path / f"disk-{stage}")], check=False)
