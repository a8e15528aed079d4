"""Watching a run: progress bar (or log lines in CI), MFU, metrics.jsonl, the loss plot, trackers.

Everything here runs on rank 0 only; the trainer passes `enabled=False` elsewhere.
"""

from __future__ import annotations

import functools
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from londinium.errors import ConfigError
from londinium.files import write_bytes, write_jsonl

# Dense 16-bit tensor-core peaks (TFLOP/s) from the vendors' data sheets: the MFU denominator of the
# PaLM paper's definition. Matched by substring of torch.cuda.get_device_name, most specific first.
GPU_PEAK_TFLOPS_16BIT = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0),
    ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
]


@functools.cache
def measure_matmul_flops(device_type: str = "cpu", dtype: torch.dtype = torch.float32, seconds: float = 0.5) -> float:
    """Best FLOP/s of a square matmul on this device and dtype, measured once per process.

    On CPUs this is the honest roof (there is no data-sheet number for a shared, throttled CPU).
    """
    n = 1024 if device_type == "cpu" else 8192
    # A private generator: drawing from the global one would shift a resumed run's dropout masks.
    gen = torch.Generator(device=device_type).manual_seed(0)
    a = torch.randn(n, n, device=device_type, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device_type, dtype=dtype, generator=gen)
    a @ b  # warm-up: thread pool, kernels
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if device_type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device_type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float = 0.0) -> float:
    """Peak FLOP/s of one process: the config's override, a known GPU's data sheet, else measured."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS_16BIT:
            if key in name:
                return tflops * 1e12
    return measure_matmul_flops(device.type, dtype)


# ---- metrics.jsonl ---------------------------------------------------------------------------------


class MetricsLog:
    """Append-only JSON lines, one per logged step or evaluation.

    On resume the rows after the checkpoint's step (written by the run that was killed) are dropped,
    and so is the evaluation row of that step itself: the trainer re-runs that evaluation (it is
    deterministic), so it is logged exactly once whether or not the killed run got to it. The file
    of a resumed run then reads exactly like that of a run that was never interrupted. A torn last
    line (a kill mid-write) is dropped too.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def reset(self, keep_through_step: int) -> None:
        """Keep train rows with step <= keep_through_step and evaluation rows before it (0: none)."""
        if not self.enabled:
            return

        def keep(r: dict[str, Any]) -> bool:
            step = r.get("step", 0)
            return step < keep_through_step or (step == keep_through_step and r.get("type") != "eval")

        kept = [r for r in self.rows() if keep(r)] if keep_through_step > 0 else []
        if kept or self.path.exists():
            write_jsonl(self.path, kept)

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn or garbled line (from a kill mid-write) is skipped."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                out.append(row)
    return out


# ---- the plot --------------------------------------------------------------------------------------


@functools.cache
def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on servers and CI), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(metrics: Path, out: Path, title: str = "") -> None:
    """train_loss.png: train and validation loss against step, learning rate on a second axis."""
    plt = pyplot()
    rows = read_metrics(metrics)
    train = [r for r in rows if r.get("type") == "train"]
    val = [r for r in rows if r.get("type") == "eval"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    if train:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in train], [r["lr"] for r in train], color="grey", ls="--", lw=0.8, label="learning rate")
        ax2.set_ylabel("learning rate")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(out, buf.getvalue())


# ---- progress --------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on; '?' for an unknown (infinite) time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A tqdm bar with step, loss, lr, tokens/s and MFU (tqdm adds the ETA) on a terminal; in CI or
    a log file (no TTY), one plain line per logged step instead of a bar redrawn into the log."""

    def __init__(self, total: int, initial: int, enabled: bool = True, tty: bool | None = None,
                 out: Callable[[str], None] | None = None):
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._out = out or (lambda msg: print(msg, flush=True))
        self._t0, self._s0 = time.perf_counter(), initial
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)

    def set_total(self, total: int) -> None:
        """The run's plan changed its length (pacing.revise)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total

    def step(self, step: int, loss: float | None, lr: float, tok_s: float | None, mfu: float | None) -> None:
        """Advance to `step`; `loss` is given on logged steps only."""
        if not self.enabled:
            return
        parts = {"loss": f"{loss:.4f}" if loss is not None else None, "lr": f"{lr:.2e}",
                 "tok/s": f"{tok_s:,.0f}" if tok_s else None, "mfu": f"{100 * mfu:.1f}%" if mfu is not None else None}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if loss is not None:
                self.bar.set_postfix({k: v for k, v in parts.items() if v is not None}, refresh=False)
        elif loss is not None:
            done = step - self._s0
            rate = done / max(1e-9, time.perf_counter() - self._t0)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            shown = " ".join(f"{k} {v}" for k, v in parts.items() if v is not None)
            self._out(f"step {step}/{self.total} {shown} eta {format_duration(eta)}")

    def write(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            self._out(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- optional trackers -----------------------------------------------------------------------------


class Trackers:
    """Weights & Biases and TensorBoard, each only when asked for in the config (off by default)."""

    def __init__(self, enabled: bool, use_wandb: bool, use_tensorboard: bool, run_name: str, log_dir: Path, config: dict):
        self.wandb = self.tb = None
        if not enabled:
            return
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("train.wandb = true but wandb is not installed; pip install wandb, or set train.wandb = false") from None
            self.wandb = wandb.init(project="londinium", name=run_name, config=config, dir=str(log_dir), resume="allow")
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard = true but tensorboard is not installed; pip install tensorboard, or set train.tensorboard = false") from None
            self.tb = SummaryWriter(log_dir=str(log_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        step = row["step"]
        prefix = "val" if row.get("type") == "eval" else "train"
        scalars = {f"{prefix}/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()
