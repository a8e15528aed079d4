"""How `--resume` continues a run: the config it was trained with, and the command that says so.

    resume_config(ws, run)      # the run's own config, with only explicit changes on top
    resume_command(ws, run)     # `londinium train --resume --run NAME [-w DIR]` (or sft/distill/rl --name), printed in hints
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


def resume_command(ws: Workspace, run: str, world_size: int = 1, stage: str = "train") -> str:
    """The command that continues run `run` in `ws` as it was trained (see `resume_config`): `stage` is
    the command that made it (train, or sft / distill / rl, which name their own run with --name)."""
    where = workspace_flag(ws)
    launcher = f"torchrun --nproc_per_node={world_size} -m londinium" if world_size > 1 else "londinium"
    if stage != "train":
        return f"{launcher} {stage} --resume --name {run}{where}"
    if world_size > 1:  # torchrun's own parser takes `--run` for its --run-path
        return f"{launcher} train --resume --run-name {run}{where}"
    return f"{launcher} train --resume --run {run}{where}"
