"""Learning-rate schedule and batch arithmetic: pure functions of the config and the step.

The schedule has no state of its own: the learning rate of a step is a function of the step and the
config, so the checkpoint's step *is* the schedule position and resuming cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from londinium.config import TrainConfig, validate


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warm-up, then decay to a floor.

    Warm-up ends at the peak on step `warmup_steps - 1` (step 0 already moves, at peak/warmup).
    'cosine' then decays from the peak to `min_lr_ratio * peak` at `max_steps`; 'wsd' holds the
    peak and decays linearly to the floor over the last `decay_share` of `max_steps` (Hu et al.
    2024, MiniCPM; the shape modded-nanogpt and nanochat use). Any step beyond `max_steps` stays at
    the floor (a run resumed with the same config never reaches it).
    """
    peak = cfg.learning_rate
    floor = peak * cfg.min_lr_ratio
    warmup = max(0, cfg.warmup_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= cfg.max_steps:
        return floor
    if cfg.schedule == "wsd":
        start = decay_start(cfg)
        if step < start:
            return peak
        return peak + (floor - peak) * (step - start) / (cfg.max_steps - start)
    decay_steps = cfg.max_steps - warmup
    if decay_steps <= 0:
        return peak
    progress = (step - warmup) / decay_steps
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def decay_start(cfg: TrainConfig) -> int:
    """The step where the decay begins (its rate is still the peak, every later one is lower): the end
    of the warm-up for 'cosine', `decay_share` of `max_steps` before the end for 'wsd'. Up to it the
    rate does not depend on `max_steps`, so a 'wsd' run may still change its length there without
    changing anything it has trained (`pacing.revise`)."""
    warmup = max(0, cfg.warmup_steps)
    if cfg.schedule == "wsd":
        return max(warmup, cfg.max_steps - round(cfg.decay_share * cfg.max_steps))
    return warmup


@dataclass(frozen=True)
class BatchPlan:
    """How one optimiser step is made of micro-batches."""

    micro_batch: int  # sequences per micro-batch on one process
    context: int
    world_size: int
    accum_steps: int  # micro-batches per optimiser step on each process

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch * self.context * self.world_size * self.accum_steps


def plan_batches(cfg: TrainConfig, context: int, world_size: int) -> BatchPlan:
    """Derive gradient accumulation from the target `batch_tokens` (0: one micro-batch per step).

    The target is rounded down to a whole number of micro-batches (at least one), so the same config
    runs on 1 or 8 processes; `tokens_per_step` says what a step really is.
    """
    validate(cfg)
    per_micro = cfg.batch_size * context * world_size
    accum = max(1, cfg.batch_tokens // per_micro) if cfg.batch_tokens else 1
    return BatchPlan(cfg.batch_size, context, world_size, accum)
