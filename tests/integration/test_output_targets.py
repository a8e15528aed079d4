"""Nothing destroyed, through the real command: `londinium export --force` aimed at the workspace,
its stage outputs, the checkpoint being exported, a device, a FIFO, a socket or a link is one line
and exit 2, and each of them is still there afterwards; two runs of one stage at once (two trains
on one run, two exports to one target, two corpus builds) are refused with the holder named; a
closed pipe (`| head`) ends a command quietly after its stage is recorded; artifacts follow the umask.

Every special file is made inside the test's own folder: the real /dev/null is never a target."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from londinium.checkpoint import list_checkpoints, verify
from londinium.config import ModelConfig
from londinium.errors import PathError
from londinium.files import path_kind, sha256_file
from londinium.tokenizer.codec import load_tokenizer
from londinium.workspace import Workspace

from integration.test_export_hf import save_random_run
from integration.train_helpers import train_cmd

RUN = "targets"
CLI = [sys.executable, "-m", "londinium"]


@pytest.fixture(scope="module")
def ws(tiny_workspace) -> Workspace:
    vocab = load_tokenizer(tiny_workspace).get_vocab_size()
    save_random_run(tiny_workspace, RUN, ModelConfig(n_layer=1, n_head=2, n_embd=32, context=32, vocab_size=vocab))
    return tiny_workspace


def export_cmd(ws: Workspace, out: Path, *flags: str) -> list[str]:
    return [*CLI, "export", "-w", str(ws.root), "--run", RUN, "--out", str(out), *flags]


def one_line(proc: subprocess.CompletedProcess | tuple[int, str, str]) -> str:
    rc, out, err = proc if isinstance(proc, tuple) else (proc.returncode, proc.stdout, proc.stderr)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("londinium: error: "), err
    return lines[0]


def run_together(commands: dict[str, list[str]], **kwargs) -> dict[str, tuple[int, str, str]]:
    """Start every command at once (they are independent; on two cores this halves the wait)."""
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) for k, c in commands.items()}
    return {k: (p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for k, p in procs.items()}


def snapshot(ws: Workspace) -> dict[str, str]:
    """Every file of the workspace with its hash (locks aside): what must survive a refused export."""
    return {str(p.relative_to(ws.root)): sha256_file(p) for p in sorted(ws.root.rglob("*"))
            if p.is_file() and ".locks" not in p.parts}


def test_export_force_destroys_nothing(ws, tmp_path):
    ckpt = list_checkpoints(ws.checkpoints_dir(RUN))[-1].path
    fifo, sock, outside, device = tmp_path / "fifo", tmp_path / "sock", tmp_path / "outside.txt", tmp_path / "null"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
    outside.write_text("keep me")
    (tmp_path / "link").symlink_to(outside)
    copied = tmp_path / "elsewhere" / ckpt.name
    shutil.copytree(ckpt, copied)
    try:  # a character device like /dev/null (1, 3), made here: the real one is never touched
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        device = None
    cases = {  # target, format, what the line says
        "workspace": (ws.root, "hf", f"is {ws.root}, the workspace"),
        "runs": (ws.root / "runs", "hf", "the training runs"),
        "exports": (ws.exports_dir, "hf", "the exports folder"),
        "tokenizer": (ws.tokenizer_dir, "hf", "the tokenizer stage's outputs"),
        "tasks": (ws.root / "tasks", "hf", "the tasks cut from the corpus"),  # a stage that came later
        "checkpoint": (ckpt, "hf", "the training runs"),
        "inside-checkpoint": (ckpt / "model.gguf", "gguf", "lies inside"),
        "checkpoint-elsewhere": (copied, "hf", "the checkpoint being exported"),
        "around-workspace": (ws.root.parent, "hf", f"contains {ws.root}"),
        "fifo": (fifo, "gguf", "is a FIFO"),
        "socket": (sock, "gguf", "is a socket"),
        "link": (tmp_path / "link", "gguf", "is a symbolic link"),
        **({"device": (device, "gguf", "is a character device")} if device else {}),
    }
    before = snapshot(ws)
    commands = {k: export_cmd(ws, target, "--force", "--format", fmt) for k, (target, fmt, _) in cases.items()}
    commands["checkpoint-elsewhere"] += ["--checkpoint", str(copied)]  # an input outside the workspace
    results = run_together(commands)
    for k, (target, _, words) in cases.items():
        line = one_line(results[k])
        assert str(target) in line and words in line, (k, line)
    assert snapshot(ws) == before and verify(ckpt)
    assert path_kind(fifo) == "FIFO" and path_kind(sock) == "socket" and path_kind(tmp_path / "link") == "symbolic link"
    assert outside.read_text() == "keep me" and (device is None or path_kind(device) == "character device")
    assert verify(copied) and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["fifo", "sock", "outside.txt", "link", "elsewhere", *(["null"] if device else [])])


def test_a_folder_londinium_did_not_write_is_never_replaced(ws, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    file = tmp_path / "model.gguf"
    file.write_bytes(b"GGUF but not ours")
    results = run_together({"plain": export_cmd(ws, out), "force": export_cmd(ws, out, "--force"),
                            "gguf": export_cmd(ws, file, "--force", "--format", "gguf")})
    for k in ("plain", "force"):
        line = one_line(results[k])
        assert f"--out {out} already exists and is not a londinium export" in line and "--force does not change that" in line
    assert "is not a GGUF file londinium wrote" in one_line(results["gguf"])
    assert (out / "notes.txt").read_text() == "keep me" and file.read_bytes() == b"GGUF but not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model.gguf"]


def test_an_export_follows_the_umask_and_replaces_only_its_own_files(ws, tmp_path):
    umask = 0o002  # not the usual 022: group-writable files prove the mode is the umask's, not a constant
    hf, gguf = tmp_path / "hf", tmp_path / "model.gguf"
    results = run_together({"hf": export_cmd(ws, hf), "gguf": export_cmd(ws, gguf, "--format", "gguf")},
                           preexec_fn=lambda: os.umask(umask))
    assert all(rc == 0 for rc, _, _ in results.values()), results
    for p in [hf, *hf.iterdir(), gguf, ws.export_config_file(hf), ws.manifest_file]:
        want = 0o777 & ~umask if p.is_dir() else 0o666 & ~umask
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
    (hf / "notes.txt").write_text("added by hand")  # now it holds something londinium did not write
    line = one_line(subprocess.run(export_cmd(ws, hf, "--force"), capture_output=True, text=True, timeout=180))
    assert "holds what londinium did not write there (notes.txt)" in line and (hf / "notes.txt").is_file()


def test_a_closed_pipe_ends_quietly_after_the_stage_is_recorded(ws, tmp_path):
    out = tmp_path / "piped"

    def with_closed_stdout(cmd: list[str]) -> subprocess.CompletedProcess:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first line: `| head -0`
        try:
            return subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=180)
        finally:
            os.close(write)

    exported = with_closed_stdout(export_cmd(ws, out))
    assert exported.returncode == 141 and exported.stderr == "", exported.stderr
    assert f"export/{out.name}" in ws.manifest() and (out / "londinium.json").is_file()  # recorded all the same
    shown = with_closed_stdout([*CLI, "config", "show"])  # only prints: stops at once
    assert shown.returncode == 141 and shown.stderr == "", shown.stderr


def _wait_for_holder(lock: Path, pid: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(lock.read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{lock} never named pid {pid} (exit {proc.poll()}): {proc.stderr.read() if proc.stderr else ''}")


def test_two_trains_on_one_run_the_second_is_refused_and_sigkill_frees_it(ws):
    first = subprocess.Popen(train_cmd(ws, "locked", 100_000), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_holder(ws.locks_dir / "train" / "locked.lock", first.pid, first)
        line = one_line(subprocess.run(train_cmd(ws, "locked", 4), capture_output=True, text=True, timeout=180))
        assert f"train/locked in workspace {ws.root} is already running (pid {first.pid}: londinium train" in line
        with ws.lock("train/another-run"):  # other runs are not held up
            pass
    finally:
        first.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
        first.wait()
    with ws.lock("train/locked"):
        pass


def test_a_second_export_to_one_target_and_a_second_corpus_build_are_refused(ws, tmp_path):
    out = tmp_path / "shared"
    pause = ("import sys\nfrom londinium import Workspace, load_config\nfrom londinium.export.run import export_run\n"
             "def log(m):\n    print(m, flush=True)\n    if m.startswith('export: ') and '->' in m:\n        sys.stdin.readline()\n"
             f"export_run(Workspace({str(ws.root)!r}), load_config(None), run={RUN!r}, out={str(out)!r}, log=log)\n")
    # A real export, paused where it writes (it holds its locks there) until the test lets it go on.
    first = subprocess.Popen([sys.executable, "-c", pause], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    corpus = subprocess.Popen([sys.executable, "-c", f"import sys; from londinium import Workspace\nwith Workspace({str(ws.root)!r})"
                               ".lock('corpus'):\n    print('held', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert "->" in first.stdout.readline() and corpus.stdout.readline().strip() == "held"
        results = run_together({"export": export_cmd(ws, out), "corpus": [*CLI, "corpus", "build", "-w", str(ws.root)]})
        assert f"is already running (pid {first.pid}:" in one_line(results["export"])
        assert f"corpus in workspace {ws.root} is already running (pid {corpus.pid}:" in one_line(results["corpus"])
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=180) == 0, first.stderr.read()
        assert (out / "londinium.json").is_file() and f"export/{out.name}" in ws.manifest()
    finally:
        for p in (first, corpus):
            p.kill()
            p.wait()


def test_a_bench_name_and_the_index_folder_follow_the_same_rule(ws, tmp_path):
    from londinium.config import Config
    from londinium.index.build import build_index

    other = Workspace(tmp_path / "ws")  # a workspace whose bench/ and index/ hold the user's own files
    (other.bench_dir("mine")).mkdir(parents=True)
    (other.bench_dir("mine") / "notes.txt").write_text("keep me")
    (other.root / "bench" / "linked").symlink_to(tmp_path)
    bench = [*CLI, "bench", "serve", "--base-url", "http://127.0.0.1:9/v1", "-w", str(other.root), "--name"]
    results = run_together({name: [*bench, name] for name in ("mine", "linked")})
    assert "--name" in one_line(results["mine"]) and "holds what londinium did not write there (notes.txt)" in one_line(results["mine"])
    assert "is a symbolic link" in one_line(results["linked"])  # refused before any request is sent
    assert (other.bench_dir("mine") / "notes.txt").is_file() and (other.root / "bench" / "linked").is_symlink()

    shutil.copytree(ws.corpus_dir, other.corpus_dir)
    other.manifest_file.write_text(json.dumps({"corpus": ws.manifest()["corpus"]}))
    other.index_dir.mkdir()
    (other.index_dir / "notes.txt").write_text("keep me")
    with pytest.raises(PathError, match=r"the index folder .* holds what londinium did not write there \(notes.txt\)"):
        build_index(other, Config(), log=lambda m: None, show_progress=False)
    assert (other.index_dir / "notes.txt").read_text() == "keep me" and "index" not in other.manifest()


def test_train_force_deletes_only_a_run_folder_training_wrote(ws, tmp_path):
    """`train --force` starts a run over by deleting runs/<name>/: only when training wrote all that
    is in it. A note of the user's in it, or the folder a link to another disk (the old checkpoints
    stayed behind the link, mixed with the new run's), is one line and exit 2, before any work."""
    mine, linked, elsewhere = ws.run_dir("forced-mine"), ws.run_dir("forced-link"), tmp_path / "run"
    try:
        shutil.copytree(ws.run_dir(RUN), mine)
        (mine / "notes.txt").write_text("keep me")
        shutil.copytree(ws.run_dir(RUN), elsewhere)
        linked.symlink_to(elsewhere)
        before = snapshot(ws)
        results = run_together({name: train_cmd(ws, name, 1, "--force") for name in ("forced-mine", "forced-link")})
        assert f"the folder of run 'forced-mine' {mine} already exists and holds what londinium did not write there " \
               "(notes.txt)" in one_line(results["forced-mine"])
        assert f"the folder of run 'forced-link' {linked} is a symbolic link" in one_line(results["forced-link"])
        assert snapshot(ws) == before and linked.is_symlink() and all(verify(c.path) for c in list_checkpoints(elsewhere / "checkpoints"))
    finally:
        shutil.rmtree(mine, ignore_errors=True)
        linked.unlink(missing_ok=True)


def test_a_workspace_inside_another_workspaces_outputs_is_refused(ws):
    """A workspace inside another's runs, exports or stage folders would go with them (checkpoint
    pruning, `train --force`, a replaced export or index): refused before anything is written."""
    nested = ws.run_dir(RUN) / "checkpoints" / "nested"
    line = one_line(subprocess.run([*CLI, "corpus", "build", "-w", str(nested)], capture_output=True, text=True, timeout=180))
    assert f"workspace {nested} lies inside {ws.root / 'runs'}, the training runs (every checkpoint) of the workspace {ws.root}" in line
    assert not nested.exists()
    for inside, words in ((ws.exports_dir / "w", "lies inside"), (ws.corpus_dir, "is"), (ws.root / "bench" / "w", "lies inside")):
        with pytest.raises(PathError, match=f"workspace {inside} {words} "):
            Workspace(inside)
    Workspace(ws.root.parent / "beside")  # beside it, or around it, is fine
    Workspace(ws.root.parent)
