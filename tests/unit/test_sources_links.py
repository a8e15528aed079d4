"""A local source never follows a symbolic link out of (or within) its folder: each link is recorded
as a rejection with its reason and its target is never read; deep trees are walked without
recursion; control characters in file names never reach document ids."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.prose import prose

from londinium.corpus.sources import LINK_REASON, SourceSpec, fetch_source, printable_name

SECRET = "SECRET-FIRST-LINE of a file outside the source folder"


def _fetch(tmp_path: Path, root: Path, files: str = ""):
    skips: list[tuple[str, str]] = []
    spec = SourceSpec(id="mine", kind="local", location=str(root), files=files)
    got = list(fetch_source(spec, tmp_path / "cache", 1 << 20, 5.0, 0, lambda n, r: skips.append((n, r))))
    return {f.name: f.data for f in got}, dict(skips)


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n\n" + prose(7), encoding="utf-8")
    return outside


def test_links_to_files_and_folders_are_recorded_and_never_followed(tmp_path: Path):
    outside = _outside(tmp_path)
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "mine.txt").write_text(prose(1), encoding="utf-8")
    (root / "sub" / "inner.txt").write_text(prose(2), encoding="utf-8")
    os.symlink(outside / "secret.txt", root / "escape.txt")
    os.symlink(outside, root / "escape-dir")
    os.symlink(root / "mine.txt", root / "sub" / "inside-link.txt")  # even a link within the folder
    os.symlink(tmp_path / "nowhere.txt", root / "dangling.txt")
    got, skips = _fetch(tmp_path, root, files="")
    assert sorted(got) == ["mine.txt", "sub/inner.txt"]
    assert skips == {"dangling.txt": LINK_REASON, "escape-dir": LINK_REASON, "escape.txt": LINK_REASON,
                     "sub/inside-link.txt": LINK_REASON}
    assert not any(SECRET in r for r in skips.values())


@contextlib.contextmanager
def _recursion_limit(limit: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _levels_that_fit(root: Path, segment: str) -> int:
    """How many `segment/` levels below `root` still leave room for `/bottom.txt` within PATH_MAX."""
    return (os.pathconf(root, "PC_PATH_MAX") - len(os.fsencode(root)) - len("/bottom.txt") - 1) // (len(segment) + 1)


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path):
    """The walk keeps a stack, not Python frames. The test sets the recursion limit below the tree's
    depth for the walk, whatever an earlier test left it at (torch's inductor raises it to 2,000, and
    a tree 2,000 levels deep no longer fits in PATH_MAX: the next test)."""
    root = tmp_path / "deep"
    root.mkdir()
    depth = min(600, _levels_that_fit(root, "d"))
    _make_chain(root, "d", depth, {depth: "bottom.txt"})
    try:
        with _recursion_limit(depth - 100):
            got, skips = _fetch(tmp_path, root)
        assert list(got) == ["d/" * depth + "bottom.txt"] and skips == {}
    finally:
        _remove_chain(root, "d", depth, {depth: "bottom.txt"})


def test_a_path_longer_than_the_system_allows_is_recorded_not_lost(tmp_path: Path):
    """Past PATH_MAX nothing can be opened by its path: a file whose path is too long, and a folder
    that cannot be listed for that reason, are each recorded with what to do; the rest is read.
    Folders with 250-character names reach the limit in a few levels."""
    root = tmp_path / "deep"
    root.mkdir()
    (root / "top.txt").write_text(prose(4), encoding="utf-8")
    segment, long_name = "d" * 250, "l" * 250 + ".txt"
    path_max = os.pathconf(root, "PC_PATH_MAX")
    # the level whose folder can be listed while the long name in it makes a path too long
    level = next(k for k in range(64) if len(os.fsencode(root)) + 251 * k + 1 + len(long_name) >= path_max)
    fits = _levels_that_fit(root, segment)
    files = {level: long_name, fits + 3: "bottom.txt"}
    _make_chain(root, segment, fits + 3, files)
    try:
        got, skips = _fetch(tmp_path, root)
    finally:
        _remove_chain(root, segment, fits + 3, files)
    assert list(got) == ["top.txt"]
    assert len(skips) == 2, list(skips)
    file_rel = f"{segment}/" * level + long_name
    (folder_rel,) = (rel for rel in skips if rel != file_rel)
    assert skips[file_rel].startswith("a file whose path is longer than this system allows")
    assert skips[folder_rel].startswith("a folder whose path is longer than this system allows")
    assert set(folder_rel.split("/")) == {segment} and fits < folder_rel.count("/") + 1 <= fits + 3  # on the way to bottom.txt
    assert all("move its files closer" in why for why in skips.values())


def _make_chain(root: Path, segment: str, depth: int, files: dict[int, str]) -> None:
    """root/segment/segment/..., `depth` levels, with a file named files[level] at those levels;
    level by level through directory descriptors (pathlib and os.makedirs would need the whole path)."""
    fd = os.open(root, os.O_RDONLY)
    for level in range(depth + 1):
        if level in files:
            with open(os.open(files[level], os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w", encoding="utf-8") as f:
                f.write(prose(3))
        if level < depth:
            os.mkdir(segment, dir_fd=fd)
            fd, old = os.open(segment, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
    os.close(fd)


def _remove_chain(root: Path, segment: str, depth: int, files: dict[int, str]) -> None:
    """Delete the chain bottom-up (shutil.rmtree recurses, and would fail)."""
    fds = [os.open(root, os.O_RDONLY)]
    for _ in range(depth):
        fds.append(os.open(segment, os.O_RDONLY, dir_fd=fds[-1]))
    for level, name in files.items():
        os.unlink(name, dir_fd=fds[level])
    for i in range(depth, 0, -1):
        os.close(fds[i])
        os.rmdir(segment, dir_fd=fds[i - 1])
    os.close(fds[0])


def test_a_link_the_source_leaves_out_is_not_recorded(tmp_path: Path):
    """Selection applies to links as to files: a link whose name `files` does not select, or that
    `exclude` leaves out, is neither read nor recorded (nor counted as a file read); a selected one
    is, and so is a link to a folder that could hold selected files."""
    outside = _outside(tmp_path)
    root = tmp_path / "texts"
    (root / "drafts").mkdir(parents=True)
    (root / "mine.txt").write_text(prose(1), encoding="utf-8")
    os.symlink(outside / "secret.txt", root / "picked.txt")  # selected: recorded
    os.symlink(outside / "secret.txt", root / "notes.md")  # not selected by files
    os.symlink(outside / "secret.txt", root / "drafts" / "old.txt")  # in a folder excluded whole
    os.symlink(outside / "secret.txt", root / "skip-me.txt")  # excluded by name
    os.symlink(outside, root / "more")  # a folder that could hold *.txt files: recorded
    os.symlink(outside, root / "old")  # a folder excluded whole
    spec_files, exclude = "*.txt", ["drafts/**", "skip-*", "old/**"]
    skips: list[tuple[str, str]] = []
    spec = SourceSpec(id="mine", kind="local", location=str(root), files=spec_files, exclude=exclude)
    got = list(fetch_source(spec, tmp_path / "cache", 1 << 20, 5.0, 0, lambda n, r: skips.append((n, r))))
    assert [f.name for f in got] == ["mine.txt"]
    assert dict(skips) == {"picked.txt": LINK_REASON, "more": LINK_REASON}


def test_control_characters_in_names_are_escaped():
    assert printable_name("a\nb\tc\x1b.txt") == "a\\nb\\tc\\x1b.txt"
    assert printable_name(b"caf\xe9.txt".decode("utf-8", "surrogateescape")) == "caf\\xe9.txt"  # a Latin-1 name
    assert printable_name("Hamlet, Prince — ſ.txt") == "Hamlet, Prince — ſ.txt"


def test_corpus_build_records_a_link_and_keeps_the_target_out_of_every_output(tmp_path: Path):
    outside = _outside(tmp_path)
    root = tmp_path / "texts"
    root.mkdir()
    for i in range(4):
        (root / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(10 + i, 12), encoding="utf-8")
    (root / "new\nline.txt").write_text("NEWLINE\n\n" + prose(20, 12), encoding="utf-8")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "w", encoding="utf-8") as f:  # a name that is not UTF-8
        f.write("CAFE\n\n" + prose(21, 12))
    os.symlink(outside / "secret.txt", root / "escape.txt")
    os.symlink(outside / "secret.txt", root / "excluded.txt")  # left out by the registry: not a file read
    registry = tmp_path / "sources.toml"
    registry.write_text('[[source]]\nid = "s"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n'
                        'exclude = ["excluded.txt"]\n', encoding="utf-8")
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "londinium", "corpus", "build", "-w", str(ws),
                           "--set", f"corpus.sources={json.dumps(str(registry))}",
                           "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rejections = [json.loads(line) for line in (ws / "corpus" / "rejections.jsonl").read_text().splitlines()]
    link = [r for r in rejections if r["file"] == "escape.txt"]
    assert len(link) == 1 and link[0]["detail"] == LINK_REASON and link[0]["level"] == "file"
    assert not [r for r in rejections if r["file"] == "excluded.txt"]
    files = json.loads((ws / "corpus" / "report.json").read_text(encoding="utf-8"))["sources"][0]["files"]
    assert files == {"read": 7, "kept": 6, "rejected": 1}  # 6 texts and escape.txt; excluded.txt is not counted
    for f in (ws / "corpus").iterdir():
        if f.is_file() and f.suffix in (".jsonl", ".json", ".md"):
            assert SECRET not in f.read_text(encoding="utf-8"), f
    ids = [json.loads(line)["id"] for s in ("train", "val", "test") for line in (ws / "corpus" / f"{s}.jsonl").read_text().splitlines()]
    assert any("new\\nline.txt" in i for i in ids) and any("caf\\xe9.txt" in i for i in ids)
    assert all(i.isprintable() for i in ids)


def test_a_jsonl_row_nested_too_deeply_is_a_bad_row_not_a_crash(tmp_path: Path):
    from londinium.corpus.extract import extract
    from londinium.corpus.sources import RawFile

    data = (json.dumps({"text": prose(1)}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n").encode()
    result = extract(RawFile("s", "rows.jsonl", data), SourceSpec(id="s", kind="local", location=str(tmp_path), format="jsonl"))
    assert len(result.texts) == 1 and result.bad_rows == ["line 2: not valid JSON (nested too deeply)"]
