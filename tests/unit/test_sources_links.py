"""A local source never follows a symbolic link out of (or within) its folder: each link is recorded
as a rejection with its reason and its target is never read; deep trees are walked without
recursion; control characters in file names never reach document ids."""

from __future__ import annotations

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


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path):
    root = tmp_path / "deep"
    depth = sys.getrecursionlimit() + 200
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):  # level by level (pathlib's and os.makedirs' own recursion would not reach)
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w", encoding="utf-8") as f:
        f.write(prose(3))
    os.close(fd)
    try:
        got, skips = _fetch(tmp_path, root)
        assert list(got) == ["d/" * depth + "bottom.txt"] and skips == {}
    finally:
        _remove_chain(root, depth)


def _remove_chain(root: Path, depth: int) -> None:
    """Delete the d/d/.../bottom.txt chain bottom-up (shutil.rmtree recurses, and would fail)."""
    fds = [os.open(root, os.O_RDONLY)]
    for _ in range(depth):
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    os.unlink("bottom.txt", dir_fd=fds[-1])
    for i in range(depth, 0, -1):
        os.close(fds[i])
        os.rmdir("d", dir_fd=fds[i - 1])
    os.close(fds[0])


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
    registry = tmp_path / "sources.toml"
    registry.write_text('[[source]]\nid = "s"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n', encoding="utf-8")
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "londinium", "corpus", "build", "-w", str(ws),
                           "--set", f"corpus.sources={json.dumps(str(registry))}",
                           "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rejections = [json.loads(line) for line in (ws / "corpus" / "rejections.jsonl").read_text().splitlines()]
    link = [r for r in rejections if r["file"] == "escape.txt"]
    assert len(link) == 1 and link[0]["detail"] == LINK_REASON and link[0]["level"] == "file"
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
