"""How `--resume` continues a run: the config it was trained with, and the command that says so.

    resume_config(ws, run)      # the run's own config, with only explicit changes on top
    resume_command(ws, run)     # `londinium train --resume --run NAME [-w DIR]` (or sft/distill/rl --name), printed in hints
"""

from __future__ import annotations

import shlex
from pathlib import Path

from londinium import checkpoint as ck
from londinium.config import Config, load_config
from londinium.files import loads_toml, tomllib
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


# The command that makes a run of each objective; all of them continue a run with --resume --name.
STAGE_OF_OBJECTIVE = {"sft": "sft", "distill": "distill", "grpo": "rl"}


def resume_command(ws: Workspace, run: str, world_size: int = 1) -> str:
    """The command that continues run `run` in `ws` as it was trained (see `resume_config`): the one that
    made it, as its saved config says (`train`, or `sft` / `distill` / `rl`, which name their run with
    --name); `train` where nothing says otherwise (it continues any run as trained, too)."""
    where = workspace_flag(ws)
    launcher = f"torchrun --nproc_per_node={world_size} -m londinium" if world_size > 1 else "londinium"
    stage = STAGE_OF_OBJECTIVE.get(_saved_objective(ws, run), "train")
    if stage != "train":
        return f"{launcher} {stage} --resume --name {run}{where}"
    if world_size > 1:  # torchrun's own parser takes `--run` for its --run-path
        return f"{launcher} train --resume --run-name {run}{where}"
    return f"{launcher} train --resume --run {run}{where}"


def _saved_objective(ws: Workspace, run: str) -> str:
    """`train.objective` of the config run `run` was trained with, or "" when it has none that reads."""
    try:
        return str(loads_toml(ws.run_config_file(run).read_text(encoding="utf-8")).get("train", {}).get("objective", ""))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return ""
