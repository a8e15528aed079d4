"""One holder at a time: an advisory lock per stage, run or output, that names who holds it.

    with hold(lock_file, "train/main in workspace /w"):   # Busy(...) if another process holds it
        ...

Two `londinium train` on one run, or two exports to one target, would write the same files at the
same time and one of them would crash half-way. A second invocation is refused at once with the
holder's pid and command line, rather than made to wait: waiting looks like a hang, and when the
first finishes, the second would only redo (or overwrite) what it just made. This is what most
tools do (apt, git's index.lock, pip's cache).

The lock is `fcntl.flock` on a small file: the kernel drops it when its holder exits in any way,
SIGKILL and a machine crash included, so a lock is never left behind by a dead process (the file
may be, but it no longer locks anything). The holder writes its pid and command into the file for
the refusal message, and removes the file when it finishes. A process holds each lock once: taking
it again inside (quickstart's stages, a stage inside a command that holds it) passes through.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from londinium.errors import Busy
from londinium.files import ensure_dir

_held: dict[str, int] = {}  # lock files this process holds -> how many times (re-entry)


def command_line() -> str:
    """This process's command as the user typed it (`londinium ...`, not `.../__main__.py ...`)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "londinium"):
        argv[0] = "londinium"
    return " ".join(argv)


def holder(lock_file: Path) -> str:
    """Who holds `lock_file`, from what the holder wrote there: "pid N on HOST: COMMAND, since T"."""
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
        return f"pid {info['pid']}{host}: {info['command']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "another process, which has not said who it is yet"


@contextlib.contextmanager
def hold(lock_file: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock `lock_file` for the block; `Busy` naming the holder if another process has it
    (or, with `wait`, wait for it: for short critical sections such as a manifest update)."""
    lock_file = Path(lock_file)
    key = str(lock_file.absolute())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _acquire(lock_file, what, wait)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        # Removed while still held: a process that opened the old file sees it gone and starts over.
        with contextlib.suppress(OSError):
            lock_file.unlink()
        os.close(fd)


def _acquire(lock_file: Path, what: str, wait: bool) -> int:
    ensure_dir(lock_file.parent, "lock folder")
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"{what} is already running ({holder(lock_file)}); wait for it to finish or stop it, "
                       f"then run this again") from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder may have removed the file between our open and our lock: then we
        # locked a file nobody else will see, and must take the one now at the path.
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, only unnamed
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return fd
