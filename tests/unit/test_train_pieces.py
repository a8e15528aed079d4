"""Small pieces of the trainer: metrics log repair on resume, the data-budget warning, the
evaluation's bits-per-byte arithmetic, device and precision choice, run-name and field checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from londinium.config import Config
from londinium.data.loader import Shard
from londinium.errors import ConfigError
from londinium.train.budget import DataBudget, budget_report
from londinium.device import Precision, resolve_device, resolve_precision
from londinium.train.distributed import Dist
from londinium.train.evaluate import evaluate
from londinium.train.monitor import MetricsLog, Progress, read_metrics
from londinium.train.trainer import _validate


def test_resume_drops_rows_after_the_checkpoint_and_a_torn_last_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 8):
        log.append({"type": "train", "step": step, "loss": 1.0 / step})
        if step % 2 == 0:
            log.append({"type": "eval", "step": step, "val_loss": 2.0 / step})
    with open(log.path, "a") as f:
        f.write('{"type": "train", "step": 8, "lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(log.path) if r["type"] == "train"] == list(range(1, 8))
    log.reset(keep_through_step=4)
    # The evaluation of step 4 goes too: the resumed run evaluates its checkpoint again.
    assert [(r["type"], r["step"]) for r in read_metrics(log.path)] == [
        ("train", 1), ("train", 2), ("eval", 2), ("train", 3), ("train", 4)]
    log.append({"type": "train", "step": 5, "loss": 0.2})
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 2, 3, 4, 5]
    log.reset(keep_through_step=0)  # a fresh run starts an empty log
    assert read_metrics(log.path) == []


def test_metrics_log_of_other_ranks_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=False)
    log.append({"type": "train", "step": 1})
    log.reset(0)
    assert not log.path.exists()


def test_budget_warns_only_past_the_epoch_threshold():
    few = DataBudget(unique_tokens=1_000_000, params=100_000, planned_tokens=3_000_000)
    many = DataBudget(unique_tokens=1_000_000, params=100_000, planned_tokens=30_000_000)
    summary, warning = budget_report(few, warn_epochs=4)
    assert warning is None and "3.0 epochs" in summary and "10.00 tokens/parameter" in summary
    _, warning = budget_report(many, warn_epochs=4)
    assert "30.0 times" in warning and "train.budget_warn_epochs" in warning
    assert budget_report(many, warn_epochs=0)[1] is None  # 0 switches the warning off


def test_cpu_trains_in_fp32_and_bad_choices_name_the_field():
    cpu = resolve_device("auto") if not torch.cuda.is_available() else torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype == torch.float32
    assert not resolve_precision("auto", cpu).autocast
    assert resolve_precision("float16", cpu).needs_scaler
    with pytest.raises(ConfigError, match="train.dtype"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device("gpu-please")


@pytest.mark.parametrize("field,value,needle", [
    ("run_name", "../escape", "train.run_name"),
    ("eval_every", 0, "train.eval_every"),
    ("max_minutes", -1.0, "train.max_minutes"),
    ("threads", -2, "train.threads"),
])
def test_bad_train_settings_are_refused_by_name(field, value, needle):
    cfg = Config()
    setattr(cfg.train, field, value)
    with pytest.raises(ConfigError, match=needle):
        _validate(cfg)


def test_log_lines_without_a_terminal_carry_step_loss_rate_and_eta():
    lines = []
    p = Progress(total=100, initial=0, tty=False, out=lines.append)
    p.step(1, None, 1e-3, None, None)  # not a logged step: nothing printed
    p.step(10, 2.5, 1e-3, 1234.0, 0.25)
    assert len(lines) == 1
    assert lines[0].startswith("step 10/100 loss 2.5000 lr 1.00e-03 tok/s 1,234 mfu 25.0% eta ")


def test_bits_per_byte_is_loss_over_ln2_times_bytes_per_token():
    class Uniform(torch.nn.Module):
        """Predicts every one of V tokens with equal probability: loss = ln V exactly."""

        def forward(self, x, y):
            return torch.zeros(*x.shape, 16), None

    shard = Shard(tokens=np.arange(200, dtype=np.uint16) % 16, meta={"text_bytes": 600, "tokens": 200, "split": "val"})
    out = evaluate(Uniform(), shard, context=8, batch_size=4, max_batches=None,
                   precision=Precision(torch.device("cpu"), torch.float32), d=Dist())
    assert out["val_loss"] == pytest.approx(math.log(16))
    assert out["val_ppl"] == pytest.approx(16)
    assert out["val_bpb"] == pytest.approx(math.log(16) / (math.log(2) * 3.0))  # 4 bits / 3 bytes
    assert out["val_tokens"] == (199 // 8) * 8


@pytest.mark.parametrize("which,package", [("wandb", "wandb"), ("tensorboard", "tensorboard")])
def test_a_tracker_asked_for_but_not_installed_says_what_to_install(tmp_path, which, package):
    import importlib.util

    from londinium.train.monitor import Trackers

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError, match=f"pip install {package}.*train.{which} = false"):
        Trackers(True, which == "wandb", which == "tensorboard", "r", tmp_path, {})
    Trackers(False, True, True, "r", tmp_path, {}).close()  # other ranks never touch them
