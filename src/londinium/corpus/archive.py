"""Reading files out of downloaded blobs and local archives, safely and without extracting to disk.

A blob is sniffed by its first bytes, not its name: a URL may end in `/download`, and a `.txt` may
really be an error page. Archives (tar, optionally gzip/bzip2/xz-compressed, and zip) are read member
by member straight from the archive file; nothing is written to disk, so a hostile member name such
as `../../.bashrc` can never land anywhere. Such members are skipped and reported, as are links,
devices and members over the size cap (checked from the header before a byte is read).

`file_problem` is the per-file check every source applies before yielding a file: empty, binary (other
than PDF, Parquet and Arrow, which are read as such), or over the cap. Decoding (invalid UTF-8, mojibake) is the extraction stage's job, not this one's.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable

# Errors the stdlib raises on a truncated or corrupt archive or compressed stream.
CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)

SNIFF_BYTES = 8192
BINARY_FORMATS = ("pdf", "parquet", "arrow")  # binary files the extraction stage reads


class CorruptArchive(Exception):
    """Raised by the readers here; the caller turns it into a SourceError naming the source."""


def sniff(head: bytes) -> str:
    """Classify a blob by its first bytes: zip, tar, gzip, bzip2, xz, pdf, parquet, arrow, html, xml,
    text or binary."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PAR1"):
        return "parquet"
    # Arrow IPC: the file format (Feather 2) opens with its magic, the stream format (what `datasets`
    # writes) with a message's continuation marker and metadata length.
    if head.startswith(b"ARROW1") or (head.startswith(b"\xff\xff\xff\xff") and len(head) > 8):
        return "arrow"
    if is_binary(head):
        return "binary"
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:1024]:
        return "html"
    if lowered.startswith(b"<?xml") or lowered.startswith(b"<tei"):
        return "xml"
    return "text"


_CONTROL = bytes(b for b in range(32) if b not in b"\t\n\r\f\v\b\x1b")


def is_binary(data: bytes) -> bool:
    """True for data that is not text in any byte encoding: NUL bytes, or mostly control characters.

    The NUL test is git's and grep's; UTF-16/32 text (which is full of NULs) is let through when it
    starts with a byte-order mark, so the extraction stage can decode it.
    """
    head = data[:SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    if b"\x00" in head:
        return True
    if not head:
        return False
    controls = sum(head.count(bytes([c])) for c in _CONTROL)
    return controls / len(head) > 0.3


def file_problem(data: bytes, max_bytes: int, fmt: str = "auto") -> str | None:
    """Why this file cannot be used (a reason for `on_skip`), or None when it can."""
    if len(data) > max_bytes:
        return f"over the size cap ({len(data):,} bytes > {max_bytes:,}; raise corpus.max_file_mb to keep it)"
    if not data.strip():
        return "empty file"
    # PDFs, Parquet and Arrow files are binary containers the extraction stage knows how to read.
    if fmt not in BINARY_FORMATS and sniff(data[:SNIFF_BYTES]) not in BINARY_FORMATS and is_binary(data):
        return "binary file (NUL bytes or mostly control characters): not text, HTML, TEI, JSONL, PDF, Parquet or Arrow"
    return None


def unsafe_name(name: str) -> str | None:
    """Why an archive member name is unsafe (absolute, drive letter, `..`), or None."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        return "unsafe member path (absolute); skipped, nothing outside the archive is read"
    if ".." in n.split("/"):
        return "unsafe member path ('..'); skipped, nothing outside the archive is read"
    if "\x00" in n:
        return "unsafe member path (NUL byte)"
    return None


def _clean_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def read_capped(f: IO[bytes], max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of `f`: one past the cap, so an over-long stream is detected
    without reading all of it. In chunks, because `read(n)` allocates n bytes up front, and a cap
    of a terabyte must not cost a terabyte for a small file."""
    chunks, got = [], 0
    while got <= max_bytes:
        chunk = f.read(min(1 << 20, max_bytes + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def archive_kind(path: Path) -> str | None:
    """'tar' or 'zip' when the file at `path` is an archive we read members of, else None.

    Compressed single files (`notes.txt.gz`) are not archives: see `read_compressed`.
    """
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind in ("zip", "tar"):
        return kind
    if kind in ("gzip", "bzip2", "xz"):
        opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
        try:
            with opener(path, "rb") as f:
                inner = f.read(SNIFF_BYTES)
        except CORRUPT_ERRORS as e:
            raise CorruptArchive(f"{kind} stream is truncated or corrupt ({e})") from None
        return "tar" if sniff(inner) == "tar" else None
    return None


def read_compressed(path: Path, max_bytes: int) -> bytes | None:
    """The decompressed content of a gzip/bzip2/xz single file (None if `path` is not compressed).

    Reads at most `max_bytes + 1` bytes, so a decompression bomb costs no more memory than the cap.
    """
    with open(path, "rb") as f:
        kind = sniff(f.read(SNIFF_BYTES))
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}.get(kind)
    if opener is None:
        return None
    try:
        with opener(path, "rb") as f:
            return read_capped(f, max_bytes)
    except CORRUPT_ERRORS as e:
        raise CorruptArchive(f"{kind} stream is truncated or corrupt ({e})") from None


def read_archive(
    path: Path,
    wanted: Callable[[str], bool],
    max_bytes: int,
    on_skip: Callable[[str, str], None],
) -> dict[str, bytes]:
    """The members of a tar or zip archive that `wanted(name)` selects, as {name: bytes}.

    Unsafe names are reported whether wanted or not (they say something about the archive); links,
    devices and oversized members only when wanted. The whole archive is read before anything is
    returned, so a corrupt archive fails before its source has yielded a single file, and the
    caller can yield in sorted order (tar members come in archive order, and seeking backwards in a
    compressed tar means decompressing it again from the start).
    """
    kind = archive_kind(path)
    try:
        if kind == "zip":
            return _read_zip(path, wanted, max_bytes, on_skip)
        if kind == "tar":
            return _read_tar(path, wanted, max_bytes, on_skip)
    except CORRUPT_ERRORS as e:
        raise CorruptArchive(f"{type(e).__name__}: {e}") from None
    raise CorruptArchive("not a tar or zip archive")


def _read_tar(path: Path, wanted, max_bytes: int, on_skip) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    # "r:*" picks the compression from the magic bytes; iterating reads forward only.
    with tarfile.open(path, mode="r:*") as tar:
        for member in tar:
            name = _clean_name(member.name)
            if reason := unsafe_name(member.name):
                on_skip(member.name, reason)
                continue
            if member.isdir() or not wanted(name):
                continue
            if member.issym() or member.islnk():
                on_skip(name, f"link to {member.linkname!r} in the archive; links are not followed")
                continue
            if not member.isfile():
                on_skip(name, "not a regular file (device, FIFO or other special member)")
                continue
            if member.size > max_bytes:
                on_skip(name, f"over the size cap ({member.size:,} bytes > {max_bytes:,}; raise corpus.max_file_mb to keep it)")
                continue
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if len(data) != member.size:
                raise CorruptArchive(f"member {name} is cut short ({len(data)} of {member.size} bytes)")
            if name in out:
                on_skip(name, "appears twice in the archive; the later copy is used")
            out[name] = data
    return out


def _read_zip(path: Path, wanted, max_bytes: int, on_skip) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = _clean_name(info.filename)
            if reason := unsafe_name(info.filename):
                on_skip(info.filename, reason)
                continue
            if info.is_dir() or not wanted(name):
                continue
            mode = info.external_attr >> 16  # unix mode bits, when the zip was made on unix
            if stat.S_ISLNK(mode):
                on_skip(name, "symbolic link in the archive; links are not followed")
                continue
            # Many zips store permission bits without a file type: only a stated non-file type is skipped.
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                on_skip(name, "not a regular file (device, FIFO or other special member)")
                continue
            if info.file_size > max_bytes:
                on_skip(name, f"over the size cap ({info.file_size:,} bytes > {max_bytes:,}; raise corpus.max_file_mb to keep it)")
                continue
            with zf.open(info) as f:
                # zipfile stops at the declared size and checks the CRC, so a lying header fails here.
                data = read_capped(f, max_bytes)
            if name in out:
                on_skip(name, "appears twice in the archive; the later copy is used")
            out[name] = data
    return out
