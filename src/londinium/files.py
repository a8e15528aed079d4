"""Atomic file writes and content hashes.

Every artifact londinium produces goes through `atomic_write`: the data is written to a temporary
file in the same directory, flushed and fsynced, then renamed over the target. A crash or Ctrl-C at
any point leaves either the old file or the new one, never half of one, so a later stage can never
read a torn artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from londinium.errors import PathError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create the folder `path` (and its parents) if needed; PathError naming the path and what is
    wrong when a file stands where a folder belongs, or the place cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise PathError(f"{what} {path}: {blocker} is a file, but a folder is needed there; move it or choose another path") from None
    except OSError as e:
        raise PathError(f"{what} {path} cannot be created ({e.strerror or e}); choose a writable place") from None


def require_file(path: str | os.PathLike, what: str, error: type[Exception] | None = None, hint: str = "") -> Path:
    """`path` when it is a regular file; else `error` (PathError by default) saying what it is instead."""
    path, error = Path(path), error or PathError
    tail = f"; {hint}" if hint else ""
    if path.is_dir():
        raise error(f"{what} {path} is a folder, but a file is expected{tail}")
    if not path.exists():
        raise error(f"{what} {path} does not exist{tail}")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file (a device, FIFO or socket){tail}")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on clean exit fsync and rename it over `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a folder, but londinium writes a file there; move it or choose another path")
    ensure_dir(path.parent)
    binary = "b" in mode
    try:
        # The writer's pid in the name: `remove_stale_temporaries` keeps a live process's files.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise PathError(f"cannot write {path} ({e.strerror or e}); choose a writable place") from None
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Test hook: the process SIGKILLs itself at the named point (e.g. "replace_together:1", after the
# first rename of a group), the crash the consistency tests need at an exact place. Never set in use.
KILL_POINT_ENV = "LONDINIUM_TEST_SIGKILL_AT"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (`.name.<pid>.*.tmp`, from `atomic_write` and `replace_together`)
    that a killed process left in `folder`; a live process's files are kept. Returns what went."""
    removed = []
    for p in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        parts = p.name.split(".")
        pid = parts[-3] if len(parts) >= 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def kill_point(name: str) -> None:
    if os.environ.get(KILL_POINT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def replace_together(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporary paths (`.name.<pid>.new.tmp`, next to each of `paths`) for the caller to write; on a
    clean exit they are renamed over `paths` one after another, only once every file is complete.
    The renames are not one atomic step, so the caller forgets the old outputs first (a stage does:
    `Workspace.run_stage` drops the manifest entry) and readers trust only a recorded set. On an
    exception every temporary is removed and `paths` are left as they were."""
    temps = [Path(p).with_name(f".{Path(p).name}.{os.getpid()}.new.tmp") for p in paths]
    try:
        yield temps
        for i, (tmp, path) in enumerate(zip(temps, paths), 1):
            os.replace(tmp, path)
            kill_point(f"replace_together:{i}")
        for parent in {Path(p).parent for p in paths}:
            fsync_dir(parent)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):  # never written, or its folder could not be made
                os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Any) -> int:
    """Write an iterable of JSON-serialisable rows, one per line. Returns the number written."""
    n = 0
    with atomic_write(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield loads_json(line)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def loads_json(text: str | bytes) -> Any:
    """`json.loads`, with a value nested too deeply for Python's parser (json raises RecursionError
    for `[[[[...` a few thousand deep) reported as the JSONDecodeError every caller already handles."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def loads_toml(text: str) -> dict[str, Any]:
    """`tomllib.loads`, with too deep nesting reported as a TOMLDecodeError (tomllib recurses too)."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("nested too deeply") from None


def read_toml(path: str | os.PathLike, what: str, error: type[Exception], hint: str = "") -> dict[str, Any]:
    """A TOML file as a dict; a missing, non-UTF-8 or invalid file raises `error` naming `what`
    (e.g. "sources registry") and the path, then `hint` on what to do when it is missing."""
    path = require_file(path, what, error, hint)
    try:
        return loads_toml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{what} {path} is not valid TOML: {e}") from None
