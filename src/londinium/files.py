"""Atomic file writes, content hashes, and what a write may replace.

Every artifact londinium produces goes through `atomic_write`: the data is written to a temporary
file in the same directory, flushed and fsynced, then renamed over the target. A crash or Ctrl-C at
any point leaves either the old file or the new one, never half of one, so a later stage can never
read a torn artifact. Temporary files and folders are created with the modes a plain `open()` or
`mkdir()` would give (the user's umask decides), so an artifact handed to another user can be read.
A rename never lands on anything but a regular file (`require_replaceable`): a device, FIFO or
socket that happens to stand at the path is refused, not replaced. A write that runs out of space
raises `DiskFull`, one line naming the path and the space left there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from londinium.errors import DiskFull, PathError

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


def path_kind(path: str | os.PathLike, follow: bool = False) -> str:
    """What stands at `path`: "missing", "file", "folder", "symbolic link" (unless `follow`),
    "character device", "block device", "FIFO" or "socket"."""
    try:
        mode = os.stat(path).st_mode if follow else os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:  # e.g. a component of the path is a file: nothing can stand there
        return "missing"
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def require_replaceable(path: str | os.PathLike) -> Path:
    """`path` when a new file may be renamed onto it: nothing is there, or a regular file (a link is
    judged by what it points to, and only the link is replaced). A rename onto a device, FIFO or
    socket would replace it for every program on the machine (`/dev/null` made a regular file), so
    those are refused, as is a folder."""
    path = Path(path)
    kind = path_kind(path, follow=True)
    if kind == "folder":
        raise PathError(f"{path} is a folder, but londinium writes a file there; move it or choose another path")
    if kind not in ("missing", "file"):
        raise PathError(f"{path} is a {kind}, not a regular file; londinium replaces only regular files: choose another path")
    return path


def _temporary_name(path: Path, tag: str = "") -> Path:
    # The writer's pid in the name: `remove_stale_temporaries` keeps a live process's files.
    return path.with_name(f".{path.name}.{os.getpid()}.{tag or secrets.token_hex(4)}.tmp")


def create_temporary_file(path: Path) -> tuple[int, Path]:
    """A new file beside `path` for writing, named `.name.<pid>.<random>.tmp`, created with mode
    0666 so that the umask decides its permissions as it would for a plain `open()` (mkstemp's 0600
    made every artifact unreadable to other users). Returns (fd, its path)."""
    for _ in range(100):
        tmp = _temporary_name(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))  # pragma: no cover


def create_temporary_dir(target: Path) -> Path:
    """A new folder beside `target` (`.name.<pid>.<random>.tmp`), mode 0777 less the umask, to
    build a directory in before `replace_dir` swaps it in."""
    for _ in range(100):
        tmp = _temporary_name(target)
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))  # pragma: no cover


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux 4.7+); else by
    setting and restoring it, which is safe while no other thread creates files."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_as_umask(folder: Path) -> None:
    """Give `folder` and everything in it the modes a plain `open()` and `mkdir()` would have given
    (0666 and 0777 less the umask), for files that a library wrote owner-only (safetensors writes
    0600): an export or checkpoint may be read by a service running as another user."""
    mask = current_umask()
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap the finished folder `tmp` in at `target`: the old one (if any) is moved aside first, so
    `target` is the old folder, the new one, or (for a moment) absent, never a mix. The caller has
    decided that the old one may go (`outputs.check_target`)."""
    old = _temporary_name(target, "old")
    if target.exists() or target.is_symlink():
        os.rename(target, old)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)


# ---- a full disk -----------------------------------------------------------------------------------

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# How libraries that do not raise OSError say it: safetensors and tokenizers (Rust) give the OS
# message with "(os error 28)"; torch's writer raises RuntimeError with the OSError as its context.
_NO_SPACE_TEXT = tuple({os.strerror(e) for e in _NO_SPACE} | {"No space left on device", "Disk quota exceeded"})


def out_of_space(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from, or while handling) is a full disk or quota."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFull):
            return True
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        if not isinstance(e, PathError) and any(text in str(e) for text in _NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def disk_full(path: str | os.PathLike, written: int | None = None, hint: str = "choose another --workspace") -> DiskFull:
    """The one line for a write to `path` that ran out of space: where, how much is free there now
    (after the caller removed its temporaries), how much it had written, and what to do."""
    path = Path(path)
    where = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        free = f"{_size(shutil.disk_usage(where).free)} free there"
    except OSError:
        free = "free space unknown"
    needed = f"; it needed more than the {_size(written)} written when the disk filled" if written else ""
    return DiskFull(f"no space left on the device writing {path} ({free}{needed}): free some space or {hint}; "
                    f"nothing half-written was kept")


@contextlib.contextmanager
def disk_full_guard(path: str | os.PathLike, hint: str = "choose another --workspace") -> Iterator[None]:
    """Turn a full disk inside the block (from any library, or a `DiskFull` naming one of its
    temporaries) into `disk_full(path)`: the path the user knows. The caller's own cleanup (a
    `finally` inside) runs first, so the free space reported is what is really left."""
    try:
        yield
    except BaseException as e:
        if out_of_space(e):
            raise disk_full(path, hint=hint) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on clean exit fsync and rename it over `path`.

    On an exception the temporary file is removed and `path` is left untouched; a full disk is a
    `DiskFull` naming `path`. `path` must be absent or a regular file (`require_replaceable`).
    """
    path = require_replaceable(path)
    ensure_dir(path.parent)
    binary = "b" in mode
    try:
        fd, tmp = create_temporary_file(path)
    except OSError as e:
        if out_of_space(e):
            raise disk_full(path) from None
        raise PathError(f"cannot write {path} ({e.strerror or e}); choose a writable place") from None
    f = None
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        require_replaceable(path)  # again: something may have appeared there while we wrote
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        written = tmp.stat().st_size if tmp.exists() else None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if not isinstance(e, DiskFull) and out_of_space(e):
            raise disk_full(path, written) from None
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


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries (`.name.<pid>.*.tmp`, from `atomic_write`, `replace_together` and
    `create_temporary_dir`) that a killed process left in `folder`; a live process's are kept.
    With `name`, only those of that one target (a folder the user named holds other files that
    merely look alike); folders only when their name carries a pid. Returns what went."""
    import glob

    removed = []
    pattern = f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"
    for p in Path(folder).glob(pattern) if Path(folder).is_dir() else ():
        parts = p.name.split(".")
        pid = parts[-3] if len(parts) >= 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        if p.is_symlink() or (name and not pid.isdigit()):
            continue
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
        elif p.is_dir() and pid.isdigit():
            shutil.rmtree(p, ignore_errors=True)
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
    for p in paths:
        require_replaceable(p)
    temps = [_temporary_name(Path(p), "new") for p in paths]
    try:
        yield temps
        for p in paths:
            require_replaceable(p)
        for i, (tmp, path) in enumerate(zip(temps, paths), 1):
            os.replace(tmp, path)
            kill_point(f"replace_together:{i}")
        for parent in {Path(p).parent for p in paths}:
            fsync_dir(parent)
    except BaseException as e:
        for tmp in temps:
            with contextlib.suppress(OSError):  # never written, or its folder could not be made
                os.unlink(tmp)
        if out_of_space(e):  # named after the folder: the temporary's own name means nothing to the user
            raise disk_full(Path(paths[0]).parent) from None
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
