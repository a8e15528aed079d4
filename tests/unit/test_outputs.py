"""What a write may replace, in-process: the target rule (`outputs.check_target`), the atomic
writers against devices, FIFOs, sockets and links, the umask, a full disk as one line, and the
stage locks. The same behaviour through the real CLI is in tests/integration/test_output_targets.py."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from londinium.errors import Busy, DiskFull, PathError
from londinium.files import (create_temporary_dir, disk_full_guard, out_of_space, path_kind,
                             remove_stale_temporaries, replace_together, write_text)
from londinium.locks import hold
from londinium.outputs import absolute, check_target, holds_only
from londinium.workspace import Workspace


@pytest.fixture
def specials(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a socket, and links to them and to a regular file, all inside tmp_path (never /dev)."""
    fifo, sock, outside = tmp_path / "fifo", tmp_path / "sock", tmp_path / "outside.txt"
    os.mkfifo(fifo)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the socket file stays
    outside.write_text("keep me")
    (tmp_path / "link-to-fifo").symlink_to(fifo)
    (tmp_path / "link-to-file").symlink_to(outside)
    return {"fifo": fifo, "sock": sock, "outside": outside,
            "link-to-fifo": tmp_path / "link-to-fifo", "link-to-file": tmp_path / "link-to-file"}


def test_a_workspace_that_is_a_fifo_is_named_for_what_it_is(specials):
    with pytest.raises(PathError, match=f"workspace {specials['fifo']} is a FIFO, but a workspace is a folder"):
        Workspace(specials["fifo"])


def test_path_kind_names_what_stands_there(specials, tmp_path):
    assert path_kind(specials["fifo"]) == "FIFO" and path_kind(specials["sock"]) == "socket"
    assert path_kind(specials["link-to-fifo"]) == "symbolic link" and path_kind(specials["link-to-fifo"], follow=True) == "FIFO"
    assert path_kind(tmp_path) == "folder" and path_kind(specials["outside"]) == "file"
    assert path_kind(tmp_path / "nothing") == "missing" and path_kind(specials["outside"] / "below") == "missing"


@pytest.mark.parametrize("name,kind", [("fifo", "FIFO"), ("sock", "socket"), ("link-to-fifo", "FIFO")])
def test_an_atomic_write_never_renames_onto_a_fifo_or_socket(specials, tmp_path, name, kind):
    with pytest.raises(PathError, match=f"is a {kind}, not a regular file"):
        write_text(specials[name], "x")
    with pytest.raises(PathError, match=f"is a {kind}"), replace_together([specials[name]]):
        pass
    assert path_kind(specials[name], follow=True) == kind
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_atomic_write_replaces_a_link_to_a_file_not_the_file(specials):
    write_text(specials["link-to-file"], "new")
    assert specials["outside"].read_text() == "keep me" and specials["link-to-file"].read_text() == "new"
    assert not specials["link-to-file"].is_symlink()


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_artifacts_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.json", "{}")
        with replace_together([tmp_path / "b.jsonl"]) as (tmp,):
            write_text(tmp, "")
        folder = create_temporary_dir(tmp_path / "c")
    finally:
        os.umask(old)
    for f in ("a.json", "b.jsonl"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o666 & ~umask, f
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


def test_stale_temporaries_of_one_target_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f".model.{pid}.ab12.tmp").mkdir()  # a killed export's staging folder
    (tmp_path / f".model.{os.getppid()}.cd34.tmp").mkdir()  # a live process's
    (tmp_path / ".notes.tmp").write_text("the user's")  # looks alike, names no pid
    (tmp_path / f".other.{pid}.ef56.tmp").write_text("another target's")
    removed = remove_stale_temporaries(tmp_path, name="model")
    assert [p.name for p in removed] == [f".model.{pid}.ab12.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".model.{os.getppid()}.cd34.tmp", ".notes.tmp", f".other.{pid}.ef56.tmp"])


def test_a_stage_sweeps_only_the_manifests_temporaries_from_the_workspace_root(tmp_path):
    ws = Workspace(tmp_path)  # a folder of the user's, used as a workspace
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (tmp_path / ".draft.tmp").write_text("the user's")
    (tmp_path / f".manifest.json.{dead}.ab12.tmp").write_text("a killed manifest write")
    assert [p.name for p in ws.remove_stale_temporaries("corpus")] == [f".manifest.json.{dead}.ab12.tmp"]
    assert (tmp_path / ".draft.tmp").read_text() == "the user's"


# ---- the target rule -----------------------------------------------------------------------------


def _ws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    for d in (ws.corpus_dir, ws.checkpoints_dir("main") / "step-000001", ws.exports_dir / "old-export", ws.tokenizer_dir):
        d.mkdir(parents=True)
    return ws


def _check(ws: Workspace, target: Path, folder: bool = True, ours=holds_only(["a.bin"])) -> Path:
    keep = {**ws.stage_outputs(), ws.checkpoints_dir("main") / "step-000001": "the checkpoint being read",
            ws.exports_dir / "old-export": "another export"}
    return check_target(absolute(target), "--out", folder=folder, ours=ours, keep=keep, within=ws.output_folders())


@pytest.mark.parametrize("where,relation", [
    ("ws", "is"), ("ws/runs", "is"), ("ws/exports", "is"), ("ws/tokenizer", "is"), ("ws/manifest.json", "is"),
    ("ws/runs/main/checkpoints/step-000001", "is"), ("ws/runs/main/checkpoints/step-000001/out", "lies inside"),
    ("ws/exports/old-export/sub", "lies inside"), (".", "contains"), ("ws/corpus/..", "is"), ("/", "contains"),
])
def test_a_target_over_into_or_around_the_workspace_is_refused(tmp_path, where, relation):
    ws = _ws(tmp_path)
    target = tmp_path / where if where != "/" else Path("/")
    with pytest.raises(PathError, match=f"--out .* {relation} "):
        _check(ws, target)


def test_a_target_beside_the_outputs_is_accepted(tmp_path):
    ws = _ws(tmp_path)
    assert _check(ws, ws.exports_dir / "new") == ws.exports_dir / "new"
    assert _check(ws, tmp_path / "elsewhere" / "m.gguf", folder=False) == tmp_path / "elsewhere" / "m.gguf"
    (tmp_path / "empty").mkdir()
    assert _check(ws, tmp_path / "empty") == tmp_path / "empty"  # an empty folder holds nothing to lose


def test_only_what_londinium_wrote_is_replaced(tmp_path, specials):
    ws = _ws(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.bin").write_text("ours")
    assert _check(ws, mine) == mine
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(PathError, match=r"already exists and holds what londinium did not write there \(notes.txt\)"):
        _check(ws, mine)
    with pytest.raises(PathError, match="is a symbolic link"):
        _check(ws, specials["link-to-file"], folder=False)
    for name, kind in (("fifo", "FIFO"), ("sock", "socket")):
        with pytest.raises(PathError, match=f"is a {kind}; londinium writes only regular files and folders"):
            _check(ws, specials[name], folder=False)
    with pytest.raises(PathError, match="is a file, but londinium writes a folder"):
        _check(ws, specials["outside"])


# ---- a full disk -----------------------------------------------------------------------------------


def test_a_full_disk_is_recognised_whatever_library_reports_it():
    assert out_of_space(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert out_of_space(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))  # safetensors
    try:  # torch's writer: a RuntimeError raised while handling the OSError of a Python file object
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as e:
        assert out_of_space(e)
    assert not out_of_space(OSError(errno.EACCES, "Permission denied")) and not out_of_space(ValueError("no"))


def test_a_guard_names_the_path_the_user_knows(tmp_path):
    with pytest.raises(DiskFull) as info, disk_full_guard(tmp_path / "model.gguf", hint="choose another --out"):
        raise OSError(errno.ENOSPC, "No space left on device")
    line = str(info.value)
    assert line.startswith(f"no space left on the device writing {tmp_path / 'model.gguf'} (") and "free there" in line
    assert "choose another --out" in line and "\n" not in line


# ---- locks -----------------------------------------------------------------------------------------


def test_a_held_lock_refuses_another_process_naming_the_holder(tmp_path):
    ws = Workspace(tmp_path / "ws")
    code = ("import sys, time; from londinium.workspace import Workspace\n"
            f"with Workspace({str(ws.root)!r}).lock('corpus'):\n    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, "holder-marker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=rf"corpus in workspace {ws.root} is already running \(pid {holder.pid}: .*holder-marker, since"):
            with ws.lock("corpus"):
                pass
        with ws.lock("tokenizer"), ws.lock("train/other"):  # other stages and runs are free
            pass
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    with ws.lock("corpus"), ws.lock("corpus"):  # free again, and a holder may take it again inside
        assert json.loads((ws.locks_dir / "corpus.lock").read_text())["pid"] == os.getpid()
    assert not (ws.locks_dir / "corpus.lock").exists()  # removed when released


def test_the_ranks_of_one_torchrun_job_share_rank_0s_lock(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    with ws.lock("train/main"):
        monkeypatch.setenv("RANK", "1")
        with ws.lock("train/main"):  # rank 1 takes no lock: rank 0 holds it for the job
            pass
    assert not (ws.locks_dir / "train" / "main.lock").exists()


def test_a_lock_file_removed_by_its_last_holder_is_not_locked_twice(tmp_path):
    lock = tmp_path / "x.lock"
    with hold(lock, "x"):
        stale = os.open(lock, os.O_RDWR)  # opened by a process just before the holder removed it
    try:
        with hold(lock, "x"):  # takes the new file at the path, not the removed one
            assert os.stat(lock).st_ino != os.fstat(stale).st_ino
    finally:
        os.close(stale)
