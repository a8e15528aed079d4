"""How `--resume` continues a run: the config it was trained with, and the command that says so.

    resume_config(ws, run)      # the run's own config, with only explicit changes on top
    resume_command(ws, run)     # `londinium train --resume --run NAME [-w DIR]`, printed in hints
"""

from __future__ import annotations

import shlex
from pathlib import Path

from londinium import checkpoint as ck
from londinium.config import Config, load_config
from londinium.workspace import DEFAULT_WORKSPACE, Workspace


def resume_config(ws: Workspace, run: str, path: str | Path | None = None, overrides: list[str] | None = None,
                  preset: str | None = None) -> Config:
    """The config `--resume` continues run `run` with: the one it was trained with (runs/<run>/config.toml,
    else its newest checkpoint's), with only what is given explicitly (`preset`, the file at `path`,
    `overrides`) laid on top, so a resume never picks up other defaults by accident. A run that has
    no saved config yet starts from the usual config (defaults < preset < file < overrides)."""
    saved = ws.run_config_file(run)
    if not saved.is_file():
        newest = ck.list_checkpoints(ws.checkpoints_dir(run))
        saved = newest[-1].path / ck.CONFIG_FILE if newest else None
    cfg = load_config(path, overrides, preset, base=saved)
    cfg.train.run_name, cfg.train.resume = run, True
    return cfg


def workspace_flag(ws: Workspace) -> str:
    """` -w ROOT` for a command printed as a hint, or "" for the default workspace."""
    return "" if ws.root == Path(DEFAULT_WORKSPACE).resolve() else f" -w {shlex.quote(str(ws.root))}"


def resume_command(ws: Workspace, run: str, world_size: int = 1) -> str:
    """The command that continues run `run` in `ws` as it was trained (see `resume_config`)."""
    where = workspace_flag(ws)
    if world_size > 1:  # torchrun's own parser takes `--run` for its --run-path
        return f"torchrun --nproc_per_node={world_size} -m londinium train --resume --run-name {run}{where}"
    return f"londinium train --resume --run {run}{where}"
