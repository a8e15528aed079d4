"""What a command may replace at a path the user names (`export --out`, a bench `--name`).

The rule, the same for every such path, checked before anything is written:

- only a regular file or a folder is ever replaced: a symbolic link, a device, a FIFO or a socket
  standing at the path is refused (renaming onto `/dev/null` would replace it for the machine);
- never a path that is, contains or lies inside a stage's own outputs (the corpus, tokenizer,
  shards, runs, evaluations, index, manifest: `Workspace.stage_outputs`), another export or
  benchmark, or an input of the running command (the checkpoint being exported); never the
  workspace or a folder of outputs itself, nor anything that contains them;
- an existing file or non-empty folder is replaced only when londinium wrote it there, as the
  command's own record shows (an export's `londinium.json` listing every file in the folder, a
  GGUF file's own metadata, a benchmark folder holding only its four files).

`--force` re-runs a stage that is up to date; it widens nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from londinium.errors import PathError
from londinium.files import path_kind

# What an existing output is, for the caller's recogniser: None when londinium wrote it (it may be
# replaced), else why not ("holds files londinium did not write: notes.txt").
Recogniser = Callable[[Path], "str | None"]


def absolute(path: str | os.PathLike) -> Path:
    """`path` made absolute and its `..` resolved, links in its folders followed but not a link at
    the path itself: that is what `check_target` must see, not what it points to."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    return p if p.parent == p else p.parent.resolve() / p.name


def _inside(a: Path, b: Path) -> bool:
    return a != b and b in a.parents


def check_target(target: Path, what: str, folder: bool, ours: Recogniser, keep: dict[Path, str],
                 within: dict[Path, str] | None = None) -> Path:
    """`target` (absolute, see `absolute`) when the command may write there; else a PathError
    naming `what` (the flag: "--out"), the path and why. `keep`: paths the target may not be,
    contain or lie inside; `within`: folders it may lie inside but not be or contain."""
    kind = path_kind(target)
    if kind == "symbolic link":
        raise PathError(f"{what} {target} is a symbolic link (to {os.readlink(target)}); londinium neither writes "
                        f"through a link nor replaces one: give the real path, or a new one")
    if kind not in ("missing", "file", "folder"):
        raise PathError(f"{what} {target} is a {kind}; londinium writes only regular files and folders: choose another path")
    if folder and kind == "file":
        raise PathError(f"{what} {target} is a file, but londinium writes a folder there: choose another path")
    if not folder and kind == "folder":
        raise PathError(f"{what} {target} is a folder, but londinium writes one file there: give a file name")
    # The most telling relation first: "is the workspace" rather than "contains its manifest".
    # Links are followed on both sides (`absolute` did so for the target's folders): a runs/ that is a
    # link to another disk is still runs/.
    entries = [(Path(p).resolve(), d, False) for p, d in keep.items()] + \
              [(Path(p).resolve(), d, True) for p, d in (within or {}).items()]
    for relation, test in (("is", lambda p: target == p), ("lies inside", lambda p: _inside(target, p)),
                           ("contains", lambda p: _inside(p, target))):
        for path, description, may_lie_inside in entries:
            if test(path) and not (relation == "lies inside" and may_lie_inside):
                rule = ("londinium never writes an output over or around it: choose a path inside it or elsewhere"
                        if may_lie_inside else "londinium never writes an output over, into or around it: choose another path")
                raise PathError(f"{what} {target} {relation} {path}, {description}; {rule}")
    occupied = kind == "file" or (kind == "folder" and any(target.iterdir()))
    if occupied and (why := ours(target)) is not None:
        raise PathError(f"{what} {target} already exists and {why}; londinium replaces only what it wrote there "
                        f"itself (--force does not change that): move it away or choose another path")
    return target


def holds_only(files: Iterable[str], folders: Iterable[str] = ()) -> Recogniser:
    """A recogniser for a folder londinium fills with known entries: it is ours when it holds only
    regular files and folders of those names (and nothing else the user put there)."""
    allowed = {**{n: "file" for n in files}, **{n: "folder" for n in folders}}

    def ours(folder: Path) -> str | None:
        if not folder.is_dir():
            return "is not a folder londinium wrote"
        foreign = sorted(p.name for p in folder.iterdir() if allowed.get(p.name) != path_kind(p))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            return f"holds what londinium did not write there ({shown})"
        return None

    return ours


def siblings(folder: Path, target: Path, also: Iterable[Path] = ()) -> dict[Path, str]:
    """The other entries of an outputs folder (other exports, other benchmarks): not to be touched.
    (A link among them is no output of ours, and what it points to is not in this folder.)"""
    mine = {target, *also}
    if not folder.is_dir():
        return {}
    return {p: f"another output in {folder}" for p in folder.iterdir() if p not in mine and not p.is_symlink()}
