"""`local` sources and archives: globs, skips with reasons, safety, corrupt archives."""

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from londinium.corpus.sources import SourceSpec, fetch_source
from londinium.errors import SourceError

TEXT = b"To be, or not to be, that is the question.\n"
MB = 1 << 20


def _fetch(tmp_path: Path, location: Path, files: str = "", exclude=(), max_bytes: int = MB, fmt: str = "auto"):
    skips: list[tuple[str, str]] = []
    spec = SourceSpec(id="mine", kind="local", location=str(location), files=files, exclude=list(exclude), format=fmt)
    got = list(fetch_source(spec, tmp_path / "cache", max_bytes, 5.0, 0, lambda n, r: skips.append((n, r))))
    assert all(f.source_id == "mine" for f in got)
    return {f.name: f.data for f in got}, dict(skips)


def _tar(path: Path, members: dict, mode: str = "w:gz") -> Path:
    """members: name -> bytes, or name -> ('symlink'|'fifo', target)."""
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.FIFOTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _texts_dir(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(TEXT)
    (root / "b" / "c.txt").write_bytes(TEXT + b"c")
    (root / "b" / "deep" / "d.txt").write_bytes(TEXT + b"d")
    (root / "b" / "notes.md").write_bytes(TEXT)
    (root / "metadata.txt").write_bytes(b"[a]\nurl = x\n")
    return root


def test_local_directory_glob_yields_matching_files_in_sorted_order(tmp_path: Path):
    root = _texts_dir(tmp_path)
    got, skips = _fetch(tmp_path, root, files="*.txt", exclude=["metadata.txt"])
    assert list(got) == ["a.txt", "b/c.txt", "b/deep/d.txt"]
    assert got["b/c.txt"] == TEXT + b"c" and skips == {}
    got, _ = _fetch(tmp_path, root, files="b/*")
    assert list(got) == ["b/c.txt", "b/notes.md"]
    got, _ = _fetch(tmp_path, root)  # "" = everything
    assert len(got) == 5


def test_local_single_file_and_missing_path(tmp_path: Path):
    root = _texts_dir(tmp_path)
    got, _ = _fetch(tmp_path, root / "a.txt")
    assert got == {"a.txt": TEXT}
    with pytest.raises(SourceError, match=r"source 'mine'.*does not exist.*location"):
        _fetch(tmp_path, tmp_path / "nowhere")
    with pytest.raises(SourceError, match=r"no file under .* matches files='\*\.xml'"):
        _fetch(tmp_path, root, files="*.xml")


def test_empty_binary_and_oversized_files_are_skipped_with_reasons(tmp_path: Path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "good.txt").write_bytes(TEXT)
    (root / "empty.txt").write_bytes(b"  \n\n")
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (root / "big.txt").write_bytes(b"x" * 2000)
    (root / "paper.pdf").write_bytes(b"%PDF-1.4\n\x00\x01binary stream\n")
    os.mkfifo(root / "pipe.txt")  # reading it would hang: must be skipped, not opened
    got, skips = _fetch(tmp_path, root, max_bytes=1000)
    assert sorted(got) == ["good.txt", "paper.pdf"]
    assert skips["empty.txt"] == "empty file"
    assert skips["image.txt"].startswith("binary file")
    assert "over the size cap" in skips["big.txt"] and "2,000 bytes" in skips["big.txt"]
    assert "not a regular file" in skips["pipe.txt"]


def test_utf16_text_with_bom_is_not_called_binary(tmp_path: Path):
    p = tmp_path / "u16.txt"
    p.write_bytes("\ufeffWhan that Aprille".encode("utf-16-le"))
    got, skips = _fetch(tmp_path, p)
    assert list(got) == ["u16.txt"] and skips == {}


def test_tar_members_are_read_by_glob_without_extracting(tmp_path: Path):
    arc = _tar(tmp_path / "pkg.tar.gz", {
        "pkg-1.0/texts/b.txt": TEXT + b"b",
        "pkg-1.0/texts/a.txt": TEXT + b"a",
        "pkg-1.0/texts/metadata.txt": b"[catalogue]\n",
        "pkg-1.0/setup.py": b"print('never run')\n",
    })  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    got, skips = _fetch(tmp_path, arc, files="pkg-1.0/texts/*.txt", exclude=["metadata.txt"])
    assert got == {"pkg-1.0/texts/a.txt": TEXT + b"a", "pkg-1.0/texts/b.txt": TEXT + b"b"}
    assert list(got) == sorted(got) and skips == {}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == before


@pytest.mark.parametrize("fmt", ["tar", "tar.bz2", "tar.xz", "zip"])
def test_unsafe_and_special_members_are_skipped_with_reason(tmp_path: Path, fmt: str):
    members = {
        "pkg/ok.txt": TEXT,
        "../escape.txt": TEXT,
        "/etc/absolute.txt": TEXT,
        "pkg/../../up.txt": TEXT,
        "pkg/huge.txt": b"y" * 5000,
    }
    if fmt == "zip":
        arc = tmp_path / "pkg.zip"
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            link = zipfile.ZipInfo("pkg/link.txt")
            link.external_attr = (0o120777 << 16)  # a unix symlink
            zf.writestr(link, "/etc/passwd")
    else:
        mode = {"tar": "w", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[fmt]
        arc = _tar(tmp_path / f"pkg.{fmt}", {**members, "pkg/link.txt": ("symlink", "/etc/passwd"), "pkg/fifo.txt": ("fifo", "")}, mode)
    got, skips = _fetch(tmp_path, arc, max_bytes=1000)
    assert got == {"pkg/ok.txt": TEXT}
    for bad in ("../escape.txt", "/etc/absolute.txt", "pkg/../../up.txt"):
        assert "unsafe member path" in skips[bad]
    assert "over the size cap" in skips["pkg/huge.txt"]
    assert "link" in skips["pkg/link.txt"]
    if fmt != "zip":
        assert "not a regular file" in skips["pkg/fifo.txt"]
    assert not (tmp_path.parent / "escape.txt").exists() and not (tmp_path / "up.txt").exists()


@pytest.mark.parametrize("suffix", ["tar.gz", "zip"])
def test_truncated_archive_raises_source_error_naming_source(tmp_path: Path, suffix: str):
    full = tmp_path / f"full.{suffix}"
    big = os.urandom(64 * 1024).hex().encode()  # incompressible text-ish body, so cutting it hurts
    if suffix == "zip":
        with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("pkg/a.txt", big)
    else:
        _tar(full, {"pkg/a.txt": big})
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(SourceError, match=r"source 'mine': archive cut\..* is truncated or corrupt"):
        _fetch(tmp_path, cut, max_bytes=MB)


def test_archive_with_no_matching_member_is_a_source_error(tmp_path: Path):
    arc = _tar(tmp_path / "pkg.tar.gz", {"pkg/a.txt": TEXT})
    with pytest.raises(SourceError, match=r"no tar member of pkg.tar.gz matches files='pkg/texts/\*.txt'"):
        _fetch(tmp_path, arc, files="pkg/texts/*.txt")


def test_gzipped_single_file_is_decompressed_and_capped(tmp_path: Path):
    p = tmp_path / "sonnets.txt.gz"
    p.write_bytes(gzip.compress(TEXT))
    got, _ = _fetch(tmp_path, p)
    assert got == {"sonnets.txt": TEXT}
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(gzip.compress(b"a" * (4 * MB)))  # 4 KB on disk, 4 MB inflated
    got, skips = _fetch(tmp_path, bomb, max_bytes=MB)
    assert got == {} and "over the size cap" in skips["bomb.txt"]
