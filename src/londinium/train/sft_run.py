"""How `londinium sft` makes its run: the config of an SFT run, from [sft] and the base run.

An SFT run is an ordinary run of the one trainer (`train/trainer.py`) whose config says
`train.objective = 'sft'` and names its base (`sft.base`, `sft.checkpoint`): eval, serve, export and
chat read that from the run's config.toml. [sft] holds what differs from pre-training, the learning
rate, schedule and budget, and they are laid onto the run's [train] here, so the trainer plans and
logs them as it does for any run. The architecture is the base checkpoint's: its weights are loaded
as they are.
"""

from __future__ import annotations

import copy

from londinium.config import Config, load_config
from londinium.workspace import Workspace

# [sft] fields that play a [train] field's role in the SFT run.
ONTO_TRAIN = ("learning_rate", "schedule", "warmup_steps", "max_steps", "max_minutes", "max_tokens", "eval_every")


def takes_turns(cfg: Config) -> bool:
    """Whether a run was fine-tuned to answer through the chat template: an SFT run, an SFT-distilled
    one (`londinium distill --sft`) or an RL run (which starts from an SFT run)."""
    objective = cfg.train.objective
    return objective in ("sft", "grpo") or (objective == "distill" and cfg.distill.sft)


def sft_run_name(cfg: Config) -> str:
    """The SFT run's name: sft.run_name, else '<base>-sft'."""
    return cfg.sft.run_name or f"{cfg.sft.base}-sft"


def sft_config(ws: Workspace, cfg: Config) -> Config:
    """The config of the SFT run `cfg.sft` describes: [sft] onto [train], the base's [model]."""
    cfg = on_base(ws, cfg, "sft")
    cfg.train.run_name = sft_run_name(cfg)
    return sft_onto_train(cfg)


def on_base(ws: Workspace, cfg: Config, section: str) -> Config:
    """A copy of `cfg` for a run that starts from the base checkpoint its [section] names (`base`,
    else train.run_name; `checkpoint`), with that checkpoint's [model]: SFT and RL runs."""
    from londinium import checkpoint as ck
    from londinium.export.run import resolve_checkpoint

    cfg = copy.deepcopy(cfg)
    s = getattr(cfg, section)
    s.base = s.base or cfg.train.run_name
    base = resolve_checkpoint(ws, s.base, s.checkpoint)
    cfg.model = load_config(base.path / ck.CONFIG_FILE).model
    return cfg


def sft_onto_train(cfg: Config) -> Config:
    """[sft]'s learning rate, schedule and budget laid onto [train] (in place), the objective set:
    also on resume, so a `--set train.learning_rate=...` meant for pre-training cannot change an SFT run."""
    for key in ONTO_TRAIN:
        setattr(cfg.train, key, getattr(cfg.sft, key))
    cfg.train.objective = "sft"
    return cfg
