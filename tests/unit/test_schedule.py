"""The learning-rate schedule and the batch plan: pure functions of config and step."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from londinium.config import TrainConfig
from londinium.errors import ConfigError
from londinium.train.schedule import lr_at, plan_batches


def cfg(**kw) -> TrainConfig:
    base = dict(learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=100)
    base.update(kw)
    return TrainConfig(**base)


def test_warmup_rises_linearly_to_the_peak():
    c = cfg()
    lrs = [lr_at(s, c) for s in range(10)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    steps = [b - a for a, b in zip(lrs, lrs[1:])]
    assert all(d == pytest.approx(1e-4) for d in steps)


def test_cosine_decays_from_peak_to_the_floor_and_stays_there():
    c = cfg()
    assert lr_at(10, c) == pytest.approx(1e-3)
    mid = 10 + (100 - 10) // 2
    assert lr_at(mid, c) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert lr_at(100, c) == pytest.approx(1e-4)
    assert lr_at(10_000, c) == pytest.approx(1e-4)
    decay = [lr_at(s, c) for s in range(10, 101)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0, cfg(warmup_steps=0)) == pytest.approx(1e-3)


def test_warmup_longer_than_the_run_never_divides_by_zero():
    c = cfg(warmup_steps=50, max_steps=20)
    assert lr_at(19, c) == pytest.approx(1e-3 * 20 / 50)


@given(step=st.integers(0, 10_000), warmup=st.integers(0, 500), max_steps=st.integers(1, 5000),
       ratio=st.floats(0.0, 1.0))
def test_lr_stays_between_the_floor_and_the_peak_after_warmup(step, warmup, max_steps, ratio):
    c = cfg(warmup_steps=warmup, max_steps=max_steps, min_lr_ratio=ratio)
    lr = lr_at(step, c)
    assert math.isfinite(lr)
    assert 0 <= lr <= 1e-3 * (1 + 1e-12)
    if step >= warmup:
        assert lr >= 1e-3 * ratio * (1 - 1e-12)
    else:
        assert lr > 0


def test_batch_tokens_becomes_gradient_accumulation_across_processes():
    c = TrainConfig(batch_size=4, batch_tokens=4 * 32 * 2 * 3)
    plan = plan_batches(c, context=32, world_size=2)
    assert plan.accum_steps == 3
    assert plan.tokens_per_step == 768
    assert plan_batches(c, context=32, world_size=1).accum_steps == 6


def test_batch_tokens_rounds_down_to_whole_micro_batches_but_never_to_zero():
    assert plan_batches(TrainConfig(batch_size=4, batch_tokens=1000), context=32, world_size=1).accum_steps == 7
    assert plan_batches(TrainConfig(batch_size=4, batch_tokens=10), context=32, world_size=1).accum_steps == 1
    assert plan_batches(TrainConfig(batch_size=4, batch_tokens=0), context=32, world_size=4).accum_steps == 1


def test_bad_batch_settings_name_the_field():
    with pytest.raises(ConfigError, match="train.batch_size"):
        plan_batches(TrainConfig(batch_size=0), context=32, world_size=1)
    with pytest.raises(ConfigError, match="train.batch_tokens"):
        plan_batches(TrainConfig(batch_tokens=-5), context=32, world_size=1)


def test_wsd_holds_the_peak_then_decays_linearly_to_the_floor_over_the_last_share():
    c = cfg(schedule="wsd", decay_share=0.2)  # warm-up 10, decay over steps 80..100
    assert lr_at(9, c) == pytest.approx(1e-3)
    assert all(lr_at(s, c) == pytest.approx(1e-3) for s in range(10, 81))
    assert lr_at(90, c) == pytest.approx(1e-3 - 0.5 * (1e-3 - 1e-4))
    decay = [lr_at(s, c) for s in range(80, 101)]
    assert all(b < a for a, b in zip(decay, decay[1:]))
    assert lr_at(100, c) == pytest.approx(1e-4)
    assert lr_at(10_000, c) == pytest.approx(1e-4)


def test_wsd_decay_longer_than_the_run_after_warmup_starts_at_the_warmup_end():
    c = cfg(schedule="wsd", decay_share=1.0, warmup_steps=10, max_steps=20)
    assert lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(15, c) == pytest.approx(1e-3 - 0.5 * (1e-3 - 1e-4))
