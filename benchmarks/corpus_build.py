"""How long does the default corpus build take from a warm download cache, against the floor?

    .venv/bin/python benchmarks/corpus_build.py [--repeats 3] [--registry PATH]

The peer is the least any corpus builder must do with the same input: read the same archives out
of the cache and decode their files to text (`fetch_source` + UTF-8 decode, nothing else). The
script prints both times (median of --repeats, in alternating rounds in one process so load from
other processes hits both alike), their ratio, and the time of the no-op re-run (up to date).
The first round warms the cache (and downloads if it is cold); it is not timed.

Figures from a shared machine are noisy; the ratio is steadier than either time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from londinium.config import CorpusConfig
from londinium.corpus.build import build_corpus
from londinium.corpus.sources import fetch_source, load_registry
from londinium.workspace import Workspace, default_cache_dir


def read_only(cfg: CorpusConfig) -> int:
    """The floor: every selected file out of the cached archives, decoded. Returns characters read."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    chars = 0
    for spec in load_registry(cfg.sources or None):
        for raw in fetch_source(spec, cache, int(cfg.max_file_mb * 2**20), cfg.download_timeout_s, cfg.download_retries, lambda n, r: None):
            chars += len(raw.data.decode("utf-8", errors="replace"))
    return chars


def build(cfg: CorpusConfig, ws: Workspace, force: bool) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # no progress bars in the figures
        build_corpus(ws, cfg, force=force)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", default="", help="sources registry (default: the embedded one)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    cfg = CorpusConfig(sources=args.registry)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        print("warming up (downloads if the cache is cold) ...", flush=True)
        chars = read_only(cfg)
        build(cfg, ws, force=True)
        builds, floors = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            read_only(cfg)
            floors.append(time.perf_counter() - t0)
            builds.append(build(cfg, ws, force=True))
        noop = statistics.median(build(cfg, ws, force=False) for _ in range(args.repeats))
        report = (ws.corpus_report_json.read_text(encoding="utf-8"))
    b, f = statistics.median(builds), statistics.median(floors)
    print(f"input: {chars:,} characters decoded from the cached archives; card: {len(report):,} bytes")
    print(f"read+decode only (floor, peer): {f:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in floors)})")
    print(f"full corpus build:              {b:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in builds)})")
    print(f"build / read-only ratio:        {b / f:6.1f}x")
    print(f"no-op re-run (up to date):      {noop:6.2f} s")


if __name__ == "__main__":
    main()
