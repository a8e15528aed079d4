"""How `londinium distill` makes its run: the student's config, from [distill] (no torch: the CLI
takes the run's lock before torch loads).

A student run is an ordinary run of the one trainer whose config says `train.objective = 'distill'`
and names its teacher ([distill]); its architecture and [train] are its own, as for `londinium train`.
With distill.sft it is an SFT run as `londinium sft` makes one (the base's [model], [sft] laid onto
[train]) whose objective is distillation.
"""

from __future__ import annotations

import copy

from londinium.config import Config
from londinium.workspace import Workspace


def student_run_name(cfg: Config) -> str:
    """The student run's name: distill.run_name, else '<teacher>-student'."""
    return cfg.distill.run_name or f"{cfg.distill.teacher}-student"


def distill_config(ws: Workspace, cfg: Config) -> Config:
    """The config of the student run [distill] describes: the objective set, the run named."""
    if cfg.distill.sft:
        from londinium.train.sft_run import sft_config

        cfg = sft_config(ws, cfg)
    else:
        cfg = copy.deepcopy(cfg)
    cfg.train.run_name = student_run_name(cfg)
    cfg.train.objective = "distill"
    return cfg
