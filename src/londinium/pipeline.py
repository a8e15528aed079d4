"""The whole pipeline in order: what `londinium quickstart` runs.

Each stage skips itself when it is up to date (see `Workspace.run_stage`), so running the pipeline
again after an interruption continues where it stopped.
"""

from __future__ import annotations

import time

from londinium.config import Config
from londinium.workspace import Workspace

QUICKSTART_PRESET = "tiny"


def quickstart(ws: Workspace, cfg: Config, force: bool = False, minutes: float | None = None) -> None:
    """Run every stage on the configured sources (default: the embedded period-English corpus)."""
    from londinium.corpus.build import build_corpus
    from londinium.data.shards import prepare_shards
    from londinium.tokenizer.train import train_tokenizer
    from londinium.train.trainer import train

    if minutes is not None:
        cfg.train.max_minutes = minutes
    t0 = time.time()
    print(f"londinium quickstart: workspace {ws.root}, preset {cfg.preset}")
    summary = build_corpus(ws, cfg.corpus, force=force)
    train_tokenizer(ws, cfg.tokenizer, cache_dir=cfg.corpus.cache_dir, download_timeout_s=cfg.corpus.download_timeout_s, force=force)
    prepare_shards(ws, cfg.data, force=force)
    cfg.train.resume = True  # an interrupted quickstart continues its training run where it stopped
    trained = train(ws, cfg, force=force)
    print(f"\nDone in {time.time() - t0:.0f} s.")
    print(f"  data card: {ws.corpus_report_md}")
    print(f"  tokenizer report: {ws.tokenizer_report_md}")
    print(f"  training run: {trained.run_dir} (loss plot {ws.loss_plot(cfg.train.run_name)})")
    del summary
