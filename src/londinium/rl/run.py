"""How `londinium rl` makes its run: the config of an RL run, from [rl] and the base run (no torch:
the CLI takes the run's lock before torch loads).

An RL run is an ordinary run of the one trainer whose config says `train.objective = 'grpo'` and
names its base (`rl.base`, `rl.checkpoint`). [rl]'s learning rate and budget are laid onto [train],
and so is the batch: `train.batch_size` is a rollout's samples (prompts_per_step x group_size), one
micro-batch a step, a metrics row every step. The architecture is the base checkpoint's.
"""

from __future__ import annotations

from londinium.config import Config
from londinium.workspace import Workspace

# [rl] fields that play a [train] field's role in the RL run.
ONTO_TRAIN = ("learning_rate", "warmup_steps", "max_steps", "eval_every")


def rl_run_name(cfg: Config) -> str:
    """The RL run's name: rl.run_name, else '<base>-rl'."""
    return cfg.rl.run_name or f"{cfg.rl.base}-rl"


def rl_config(ws: Workspace, cfg: Config) -> Config:
    """The config of the RL run `cfg.rl` describes: [rl] onto [train], the base's [model]."""
    from londinium.train.sft_run import on_base

    cfg = on_base(ws, cfg, "rl")
    cfg.train.run_name = rl_run_name(cfg)
    return rl_onto_train(cfg)


def rl_onto_train(cfg: Config) -> Config:
    """[rl]'s learning rate, budget and batch laid onto [train] (in place), the objective set: also on
    resume, so a `--set train.*` meant for pre-training cannot change an RL run."""
    r, t = cfg.rl, cfg.train
    for key in ONTO_TRAIN:
        setattr(t, key, getattr(r, key))
    t.batch_size, t.batch_tokens, t.log_every = r.prompts_per_step * r.group_size, 0, 1
    t.max_minutes, t.max_tokens = 0.0, 0  # a budget is planned from pre-training's pace, not a rollout's
    t.schedule, t.min_lr_ratio = "wsd", 1.0  # a constant rate after warm-up, as GRPO recipes use
    t.objective = "grpo"
    return cfg
