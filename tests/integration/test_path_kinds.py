"""A path of the wrong kind (a file where a workspace or cache folder belongs, a folder where a file
belongs, a place that cannot be written) is one line naming the path and what it should be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.prose import local_sources

from londinium.errors import PathError
from londinium.files import ensure_dir, require_file, write_text


def _setup(tmp_path: Path) -> Path:
    return local_sources(tmp_path)


def _cli(tmp_path: Path, *args: str, ws: Path | None = None, sources: Path | None = None, cache: Path | None = None):
    cmd = [sys.executable, "-m", "londinium", *args, "-w", str(ws or tmp_path / "ws"),
           "--set", f"corpus.sources={json.dumps(str(sources or tmp_path / 'sources.toml'))}",
           "--set", f"corpus.cache_dir={json.dumps(str(cache or tmp_path / 'cache'))}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("londinium: error:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr  # progress bars may precede it
    return lines[0]


def test_a_file_given_as_the_workspace(tmp_path: Path):
    _setup(tmp_path)
    f = tmp_path / "notes.txt"
    f.write_text("x")
    for argv in (("corpus", "build"), ("tokenizer", "train"), ("train",), ("config", "show")):
        assert f"workspace {f} is a file, but a workspace is a folder" in _line(_cli(tmp_path, *argv, ws=f))


def test_a_workspace_inside_a_file(tmp_path: Path):
    _setup(tmp_path)
    f = tmp_path / "notes.txt"
    f.write_text("x")
    line = _line(_cli(tmp_path, "corpus", "build", ws=f / "ws"))
    assert f"{f} is a file, but a folder is needed there" in line


def test_a_folder_given_where_a_file_is_read(tmp_path: Path):
    _setup(tmp_path)
    line = _line(_cli(tmp_path, "corpus", "build", sources=tmp_path / "texts"))
    assert f"sources registry {tmp_path / 'texts'} is a folder, but a file is expected" in line
    proc = subprocess.run([sys.executable, "-m", "londinium", "config", "show", "--config", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert f"config file {tmp_path} is a folder, but a file is expected" in _line(proc)


def test_a_folder_standing_where_an_output_file_goes(tmp_path: Path):
    _setup(tmp_path)
    (tmp_path / "ws" / "corpus" / "report.json").mkdir(parents=True)
    line = _line(_cli(tmp_path, "corpus", "build"))
    assert f"{tmp_path / 'ws' / 'corpus' / 'report.json'} is a folder, but londinium writes a file there" in line


def test_a_file_given_as_the_download_cache(tmp_path: Path):
    _setup(tmp_path)
    cache = tmp_path / "cache-file"
    cache.write_text("x")
    (tmp_path / "sources.toml").write_text(
        '[[source]]\nid = "web"\nkind = "url"\nlocation = "http://127.0.0.1:9/x.txt"\nperiod = [1600, 1600]\n', encoding="utf-8")
    line = _line(_cli(tmp_path, "corpus", "build", cache=cache))
    assert "download cache (corpus.cache_dir)" in line and f"{cache} is a file, but a folder is needed there" in line


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a read-only /sys to stand for an unwritable place")
def test_a_place_that_cannot_be_written(tmp_path: Path):
    _setup(tmp_path)
    place = Path("/sys/londinium-no-such-workspace")  # sysfs refuses new folders, even to root
    line = _line(_cli(tmp_path, "corpus", "build", ws=place))
    assert str(place) in line and "choose a writable place" in line


def test_the_helpers_name_the_kind(tmp_path: Path):
    with pytest.raises(PathError, match="is a folder, but a file is expected"):
        require_file(tmp_path, "--text")
    with pytest.raises(PathError, match="does not exist"):
        require_file(tmp_path / "nope", "--text")
    (tmp_path / "f").write_text("x")
    with pytest.raises(PathError, match="is a file, but a folder is needed there"):
        ensure_dir(tmp_path / "f" / "sub")
    with pytest.raises(PathError, match="is a file, but a folder is needed there"):
        write_text(tmp_path / "f" / "out.txt", "x")


@pytest.mark.parametrize("argv", [
    ["generate", "--run", "../elsewhere", "--prompt", "x"],
    ["eval", "--run", "../../elsewhere"],
    ["eval", "--compare", "../x", "main"],
    ["train", "--run", "a/b"],
])
def test_a_run_name_never_leads_outside_the_workspace(tmp_path: Path, argv: list[str]):
    _setup(tmp_path)
    line = _line(_cli(tmp_path, *argv))
    assert "run name" in line or "train.run_name" in line
    assert not (tmp_path / "elsewhere").exists()
