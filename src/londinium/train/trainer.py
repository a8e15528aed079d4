"""`londinium train`: the training loop, on one process or many, resumable bit-exactly.

    train(ws, cfg)              # what `londinium train` and `quickstart` call

One step: `accum_steps` micro-batches (DDP's gradient all-reduce only on the last, via `no_sync`),
gradient clipping, AdamW (or Muon for the blocks' matrices, `optim.py`) at the schedule's learning rate. Every `eval_every` steps (and at the
end) the state is saved first -- atomically, see `checkpoint.py` -- and then evaluated, so a crash
during evaluation loses nothing. Every RNG, the optimiser, the step (which fixes the schedule) and
the loader cursor are in the checkpoint, so on CPU a run killed at any point and resumed ends with
the same weights and logs the same losses as a run never interrupted.

Starting a run that already has checkpoints needs a decision: `resume` (continue from the newest
valid checkpoint) or `force` (delete the run and start over); without either, train() stops with a
message saying so rather than overwriting hours of training. A run that finished with the same
config and inputs is up to date and does nothing. Ctrl-C or SIGTERM saves a checkpoint at the end
of the current step and raises KeyboardInterrupt (the CLI exits 130).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shlex
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from londinium.config import Config, load_config, to_toml, validate
from londinium.errors import ConfigError, LondiniumError
from londinium import checkpoint as ck
from londinium.train import distributed
from londinium.train.budget import DataBudget, budget_report
from londinium.device import configure_backends, resolve_device, resolve_precision
from londinium.train.evaluate import evaluate
from londinium.train.monitor import MetricsLog, Progress, Trackers, peak_flops, plot_losses
from londinium.train.optim import build_optimizers
from londinium.train.schedule import lr_at, plan_batches
from londinium.workspace import DEFAULT_WORKSPACE, Workspace

# Test hook: after finishing this optimiser step, every process SIGKILLs itself -- the crash the
# resume tests need, at an exact step, without timing races. Never set in normal use.
KILL_ENV = "LONDINIUM_TEST_SIGKILL_AT_STEP"
# Train fields that do not change what a run produces, so changing them does not re-run a finished run.
_NOT_FINGERPRINTED = ("resume", "wandb", "tensorboard", "peak_tflops", "budget_warn_epochs", "threads")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    stopped: str  # "max_steps", "max_minutes" or "up_to_date"
    last_eval: dict[str, Any] | None


def _say(msg: str) -> None:
    print(msg, flush=True)  # flushed: in CI and under nohup stdout is a pipe, and progress must show


def train(ws: Workspace, cfg: Config, force: bool = False, log: Callable[[str], None] = _say) -> TrainResult:
    """Train (or resume, or skip) the run `cfg.train.run_name`. Under torchrun, every process calls this.

    `log` receives every message and, without a terminal, the progress lines (the bar otherwise).
    """
    _validate(cfg)
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    threads = torch.get_num_threads()
    if cfg.train.threads:
        # Small models gain nothing from a second thread, and on a busy machine OpenMP threads
        # waiting for each other cost more than they give; reproducibility needs the same count.
        torch.set_num_threads(cfg.train.threads)
    d = distributed.init(device)
    try:
        return _Run(ws, cfg, d, device, force, log if d.is_main else (lambda msg: None)).run()
    finally:
        distributed.shutdown(d)
        torch.set_num_threads(threads)


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


def _workspace_flag(ws: Workspace) -> str:
    """` -w ROOT` for a command printed as a hint, or "" for the default workspace."""
    return "" if ws.root == Path(DEFAULT_WORKSPACE).resolve() else f" -w {shlex.quote(str(ws.root))}"


def resume_command(ws: Workspace, run: str, world_size: int = 1) -> str:
    """The command that continues run `run` in `ws` as it was trained (see `resume_config`)."""
    where = _workspace_flag(ws)
    if world_size > 1:  # torchrun's own parser takes `--run` for its --run-path
        return f"torchrun --nproc_per_node={world_size} -m londinium train --resume --run-name {run}{where}"
    return f"londinium train --resume --run {run}{where}"


def _validate(cfg: Config) -> None:
    """Every [train] and [model] rule (config.validate: the same check `config show` makes)."""
    validate(cfg)


def machine_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: the GPU's total, or the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: no check


def check_memory(model: Any, batch_size: int, device: torch.device) -> None:
    """ConfigError before anything is allocated when training the model cannot fit in the device's
    memory at all (weights, gradients, AdamW state and activations, as `londinium model info` counts
    them): a config that loads must not turn into an allocation failure."""
    from londinium.model.info import memory_estimate

    need = memory_estimate(model, batch_size).training_total
    have = machine_memory(device)
    if have and need > have:
        raise ConfigError(
            f"training this model needs about {need / 2**30:,.1f} GiB (weights, gradients, AdamW state and activations of "
            f"train.batch_size = {batch_size} x model.context = {model.context}; `londinium model info` itemises it), "
            f"more than the {have / 2**30:,.1f} GiB of {device.type}; make model.n_layer, model.n_embd, model.context "
            f"or train.batch_size smaller")


class TrainingDiverged(LondiniumError):
    """The loss or the weights went NaN or infinite: training stops before saving them."""


class _StopSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and stops.
    A second signal interrupts at once (the checkpoint being written, if any, stays atomic)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class _Run:
    def __init__(self, ws: Workspace, cfg: Config, d: distributed.Dist, device: torch.device, force: bool, log: Callable[[str], None]):
        self.ws, self.d, self.force, self.log = ws, d, force, log
        self.cfg = copy.deepcopy(cfg)
        self.tc = self.cfg.train
        self.run_name = self.tc.run_name
        self.precision = resolve_precision(self.tc.dtype, device)
        self.ckpt_dir = ws.checkpoints_dir(self.run_name)
        self.metrics = MetricsLog(ws.metrics_file(self.run_name), enabled=d.is_main)

    # ---- setup ---------------------------------------------------------------------------------

    def _open_data(self) -> None:
        from londinium.data.loader import open_shard
        from londinium.tokenizer import tokenizer_sha256

        ws = self.ws
        # Only shards the last finished `data prepare` recorded (a killed one leaves none recorded).
        ws.require_stage("shards", [p for split in ("train", "val") for p in (ws.shard_bin(split), ws.shard_meta(split))])
        self.tokenizer_sha256 = tokenizer_sha256(self.ws)
        self.train_shard = open_shard(self.ws, "train", self.tokenizer_sha256)
        self.val_shard = open_shard(self.ws, "val", self.tokenizer_sha256)
        vocab = int(self.train_shard.meta["vocab_size"])
        m = self.cfg.model
        if m.vocab_size == 0:
            m.vocab_size = vocab  # the config says "take the tokenizer's": resolved once, saved with the run
        elif m.vocab_size < vocab:
            raise ConfigError(f"model.vocab_size = {m.vocab_size} is smaller than the tokenizer's {vocab} ids; set it to 0 (use the tokenizer's) or >= {vocab}")
        self.tokenizer_warning = self._tokenizer_mismatch(vocab)

    def _tokenizer_mismatch(self, vocab: int) -> str | None:
        """A warning when the workspace's tokenizer was trained with another tokenizer.vocab_size than
        this config's (`--preset slm` on a tiny workspace): training goes on with the tokenizer the
        shards were made with, which is consistent, but the user should know it is not the one asked for."""
        section = self.ws.manifest().get("tokenizer", {}).get("config", {}).get("section", {})
        trained, wanted = section.get("vocab_size"), self.cfg.tokenizer.vocab_size
        if trained is None or trained == wanted:
            return None  # an adopted tokenizer has no recorded config: nothing to compare
        flags = (f" --preset {self.cfg.preset}" if self.cfg.preset else f" --set tokenizer.vocab_size={wanted}") + _workspace_flag(self.ws)
        return (f"warning: the workspace's tokenizer was trained with tokenizer.vocab_size = {trained} ({vocab:,} ids), "
                f"this config asks for {wanted}{f' (preset {self.cfg.preset})' if self.cfg.preset else ''}; the model takes "
                f"the workspace's {vocab:,}. For {wanted}, run `londinium tokenizer train{flags}` and `londinium data prepare{flags}` first")

    def _fingerprint(self) -> dict[str, Any]:
        train = {k: v for k, v in dataclasses.asdict(self.tc).items() if k not in _NOT_FINGERPRINTED}
        return {"model": dataclasses.asdict(self.cfg.model), "train": train, "tokenizer_sha256": self.tokenizer_sha256}

    def _inputs(self) -> list[Path]:
        ws = self.ws
        return [ws.tokenizer_file, ws.shard_bin("train"), ws.shard_meta("train"), ws.shard_bin("val"), ws.shard_meta("val")]

    def _decide(self) -> dict[str, Any]:
        """Rank 0 decides how this invocation starts: skip, fresh, resume from a path, or an error."""
        key = f"train/{self.run_name}"
        if not self.force and self.ws.up_to_date(key, self._fingerprint(), self._inputs()):
            return {"action": "skip"}
        if self.force:
            try:  # only a run folder training wrote; an error goes to every rank as a decision
                self.ws.clear_run(self.run_name)
            except LondiniumError as e:
                return {"action": "error", "message": str(e)}
            return {"action": "fresh"}
        existing = ck.list_checkpoints(self.ckpt_dir)
        if not existing:
            return {"action": "fresh"}
        if not self.tc.resume:
            return {"action": "error", "message": (
                f"run '{self.run_name}' already has checkpoints (newest: step {existing[-1].step}) in {self.ckpt_dir}; "
                f"continue it with `{resume_command(self.ws, self.run_name, self.d.world_size)}`, "
                f"pass --force to delete it and start over, or --run NAME for a separate run")}
        found = ck.latest_valid(self.ckpt_dir, log=self.log)
        if found is None:
            self.log(f"train: no valid checkpoint left in {self.ckpt_dir}; starting from scratch")
            return {"action": "fresh"}
        return {"action": "resume", "path": str(found.path)}

    def _build(self) -> None:
        from londinium.data.loader import TokenLoader, iter_eval_batches
        from londinium.model.gpt import GPT

        tc, device = self.tc, self.precision.device
        check_memory(self.cfg.model, tc.batch_size, device)
        configure_backends(device)
        torch.manual_seed(tc.seed)  # the same initial weights on every rank and every run
        self.raw = GPT(self.cfg.model).to(device)
        self.opt = build_optimizers(self.raw, tc, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.needs_scaler else None
        self.plan = plan_batches(tc, self.cfg.model.context, self.d.world_size)
        self.loader = TokenLoader(self.train_shard, self.cfg.model.context, tc.batch_size, tc.seed, self.d.rank, self.d.world_size)
        # A val split too small for one window per process fails now, not after the first interval.
        next(iter_eval_batches(self.val_shard, self.cfg.model.context, 1, max_batches=1, rank=self.d.rank, world_size=self.d.world_size))
        self.step, self.tokens_seen, self.elapsed_before = 0, 0, 0.0

    def _seed_fresh(self) -> None:
        import random

        import numpy as np

        # Per-rank streams after the shared initialisation, so ranks draw different dropout masks.
        seed = self.tc.seed + 1 + self.d.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _resume(self, path: Path) -> None:
        ckpt = ck.verify(path)
        saved_cfg = load_config(ckpt.path / ck.CONFIG_FILE)
        diff = [f"model.{k}: {v!r} -> {getattr(self.cfg.model, k)!r}" for k, v in dataclasses.asdict(saved_cfg.model).items()
                if getattr(self.cfg.model, k) != v]
        if diff:
            # `--resume` starts from the run's own config (resume_config), so this is a change made
            # on purpose (--preset, --config, --set): a checkpoint's weights fit only its own shape.
            raise ck.CheckpointError(f"checkpoint {ckpt.path} was trained with another architecture ({'; '.join(diff)}); "
                                     f"a resumed run keeps its [model]: drop that change (--preset, --set, --config or ./londinium.toml) "
                                     f"(`{resume_command(self.ws, self.run_name, self.d.world_size)}` continues it as trained), "
                                     f"or start a separate run with --run NAME")
        if ckpt.meta.get("tokenizer_sha256") != self.tokenizer_sha256:
            raise ck.CheckpointError(f"checkpoint {ckpt.path} was trained with another tokenizer (sha256 {ckpt.meta.get('tokenizer_sha256')}); "
                                     f"its token ids mean other tokens now. Start a separate run (--run NAME) or --force")
        if saved_cfg.train.optimizer != self.tc.optimizer:
            raise ck.CheckpointError(f"checkpoint {ckpt.path} was trained with train.optimizer = {saved_cfg.train.optimizer!r}, "
                                     f"this run asks for {self.tc.optimizer!r}: an optimiser's state does not carry over to another; "
                                     f"keep {saved_cfg.train.optimizer!r} to continue it, or start a separate run with --run NAME")
        changed = [k for k, v in dataclasses.asdict(saved_cfg.train).items()
                   if k not in _NOT_FINGERPRINTED and getattr(self.tc, k, v) != v]
        if changed:
            self.log(f"train: note: train.{', train.'.join(changed)} changed since the checkpoint; continuing with the new values")
        state = ck.load_trainer_state(ckpt)
        ck.load_weights(self.raw, ckpt, self.precision.device)
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        if state["world_size"] == self.d.world_size:
            self.rng_state = state["rng"][self.d.rank]
        else:
            self.log(f"train: warning: the checkpoint was written by {state['world_size']} process(es), this run has "
                     f"{self.d.world_size}; training continues, but not along exactly the same path")
        self.step, self.tokens_seen, self.elapsed_before = int(state["step"]), int(state["tokens_seen"]), float(state["elapsed_s"])
        self.resumed_from = ckpt

    # ---- saving and evaluating ---------------------------------------------------------------------

    def _save(self) -> ck.Checkpoint | None:
        self._check_finite(weights=True)  # never a checkpoint of NaN weights over a good one
        rngs = distributed.gather_to_main(ck.capture_rng(), self.d)  # collective: every rank takes part
        if not self.d.is_main:
            return None
        state = {
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self._elapsed(),
            "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else {},
            # The loader's randomness is a function of (seed, rank, cursor) and all ranks move in
            # lockstep, so rank 0's cursor restores every rank.
            "loader": self.loader.state_dict(), "rng": rngs, "world_size": self.d.world_size,
        }
        meta = {"run": self.run_name, "tokenizer_sha256": self.tokenizer_sha256, "world_size": self.d.world_size,
                "tokens_seen": self.tokens_seen}
        return ck.save_checkpoint(self.ckpt_dir, self.step, self.raw, state, self.config_toml, meta)

    def _evaluate(self, saved: ck.Checkpoint | None) -> dict[str, Any]:
        result = evaluate(self.eval_model, self.val_shard, self.cfg.model.context, self.tc.batch_size,
                          self.tc.eval_batches, self.precision, self.d)
        row = {"type": "eval", "step": self.step, **result}
        if self.d.is_main:
            if saved is not None:
                ck.write_eval(saved, row)
            self.metrics.append(row)
            self.trackers.log(row)
            ck.prune(self.ckpt_dir, self.tc.keep_last)
            plot_losses(self.metrics.path, self.ws.loss_plot(self.run_name), title=f"run {self.run_name}")
        return row

    def _watch(self, loss_sum: torch.Tensor) -> None:
        """Remember the first step whose loss was NaN or infinite, on the device: no sync per step."""
        bad = ~torch.isfinite(loss_sum)
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, self.step), self.first_bad)

    def _check_finite(self, weights: bool = False) -> None:
        """Stop with TrainingDiverged when a loss since the start went non-finite (or, before a save,
        any weight did): at log steps and before every checkpoint, agreed across ranks."""
        flags = torch.stack([self.first_bad, torch.zeros_like(self.first_bad)])  # int64: steps stay exact
        if weights:
            finite = torch.stack([torch.isfinite(p).all() for p in self.raw.parameters()]).all()
            flags[1] = (~finite).long()
        flags = distributed.all_reduce(flags, self.d, op="max")
        first_bad, bad_weights = int(flags[0].item()), bool(flags[1].item())
        if first_bad < 0 and not bad_weights:
            return
        what = f"the training loss became non-finite (NaN or inf) at step {first_bad}" if first_bad >= 0 else \
            f"the weights became non-finite (NaN or inf) by step {self.step}"
        good = ck.latest_valid(self.ckpt_dir, log=lambda m: None) if self.d.is_main else None
        kept = (f"the last good checkpoint, step {good.step} ({good.path}), is kept" if good is not None
                else "no checkpoint was written")
        raise TrainingDiverged(
            f"train: {what} with train.learning_rate = {self.tc.learning_rate:g}; {kept} and nothing non-finite was saved. "
            f"Lower train.learning_rate (or raise train.warmup_steps / set train.grad_clip), then --resume or --force")

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.session_start)

    # ---- the loop ----------------------------------------------------------------------------------

    def _one_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        lr = lr_at(self.step, self.tc)
        self.opt.set_lr(lr / self.tc.learning_rate)
        device = self.precision.device
        loss_sum = torch.zeros((), device=device)
        accum = self.plan.accum_steps
        for micro in range(accum):
            x, y = self.loader.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # Gradients are all-reduced once per step, on the last micro-batch, not on every one.
            sync = self.ddp.no_sync() if self.ddp is not None and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.precision.context():
                    _, loss = model(x, y)
                loss = loss / accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach()
        grad_norm = None
        if self.tc.grad_clip > 0:
            if self.scaler:
                self.opt.unscale_(self.scaler)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.tc.grad_clip)
        self.opt.step(self.scaler)
        if self.scaler:
            self.scaler.update()
        self.opt.zero_grad()
        self.step += 1
        self.tokens_seen += self.plan.tokens_per_step
        return loss_sum, grad_norm, lr

    def _stop_code(self, stop: _StopSignal) -> int:
        """0 go on, 1 time is up, 2 signal; the max over ranks, so all stop at the same step."""
        code = 2 if stop.received is not None else 1 if self.tc.max_minutes and self._elapsed() >= 60 * self.tc.max_minutes else 0
        if self.d.enabled:
            t = torch.tensor([code], device=self.precision.device)
            code = int(distributed.all_reduce(t, self.d, op="max").item())
        return code

    def run(self) -> TrainResult:
        tc, d = self.tc, self.d
        self._open_data()
        decision = distributed.broadcast_object(self._decide() if d.is_main else None, d)
        run_dir = self.ws.run_dir(self.run_name)
        if decision["action"] == "skip":
            self.log(f"train: run '{self.run_name}' is up to date in {run_dir}; nothing to do (--force retrains it)")
            return TrainResult(run_dir, tc.max_steps, "up_to_date", None)
        if decision["action"] == "error":
            raise LondiniumError(decision["message"])
        if d.is_main:
            self.ws.invalidate(f"train/{self.run_name}")
            for stale in self.ckpt_dir.glob("*.tmp"):  # a checkpoint a killed run was writing
                shutil.rmtree(stale, ignore_errors=True)
        self._build()
        self.resumed_from, self.rng_state = None, None
        if decision["action"] == "resume":
            self._resume(Path(decision["path"]))
        self.config_toml = to_toml(self.cfg, with_docs=False)

        model: torch.nn.Module = torch.compile(self.raw) if tc.compile else self.raw
        self.eval_model = model  # evaluation bypasses DDP (no backward to pair with)
        self.ddp = None
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            device = self.precision.device
            model = self.ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

        if d.is_main:
            self.metrics.reset(self.step)  # drop what a killed run logged after its last checkpoint
            from londinium.files import write_text

            write_text(self.ws.run_config_file(self.run_name), self.config_toml)
        self._announce()
        self.trackers = Trackers(d.is_main, tc.wandb, tc.tensorboard, self.run_name, run_dir, self.cfg.to_dict())
        flops_per_step = self.raw.flops_per_token() * self.plan.tokens_per_step
        peak = peak_flops(self.precision.device, self.precision.dtype, tc.peak_tflops) * d.world_size if d.is_main else 0.0

        self.session_start = time.perf_counter()
        last_eval = None
        if self.resumed_from is not None and self._is_eval_step():
            # The killed run may have died between saving and evaluating: evaluate again (it is
            # deterministic) so the evaluation is logged once either way (see MetricsLog.reset).
            last_eval = self._evaluate(self.resumed_from if d.is_main else None)
        # Seeded or restored last, right before the first step, so that nothing in the setup (which
        # differs between a fresh and a resumed process) can draw from the streams training uses.
        if self.rng_state is not None:
            ck.restore_rng(self.rng_state)
        else:
            self._seed_fresh()
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.precision.device)
        progress = Progress(tc.max_steps, self.step, enabled=d.is_main, out=self.log)
        stopped = "max_steps"
        window_t, window_steps = 0.0, 0
        try:
            with _StopSignal() as stop:
                model.train()
                while self.step < tc.max_steps:
                    t0 = time.perf_counter()
                    loss_sum, grad_norm, lr = self._one_step(model)
                    self._watch(loss_sum)
                    code = self._stop_code(stop)
                    loss = None
                    if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                        self._check_finite()
                        loss = float(distributed.all_reduce(loss_sum, d).item()) / d.world_size
                    window_t += time.perf_counter() - t0
                    window_steps += 1
                    tok_s = mfu = None
                    if loss is not None:
                        tok_s = window_steps * self.plan.tokens_per_step / window_t
                        mfu = tok_s / self.plan.tokens_per_step * flops_per_step / peak if peak else None
                        self._log_row(loss, lr, grad_norm, tok_s, mfu)
                        window_t, window_steps = 0.0, 0
                    progress.step(self.step, loss, lr, tok_s, mfu)
                    if os.environ.get(KILL_ENV) == str(self.step):
                        os.kill(os.getpid(), signal.SIGKILL)
                    if code == 2:
                        self._save()
                        progress.close()
                        self.log(f"train: interrupted at step {self.step}; checkpoint saved in {self.ckpt_dir}. "
                                 f"Continue with `{resume_command(self.ws, self.run_name, d.world_size)}`")
                        raise KeyboardInterrupt
                    if code == 1 or self._is_eval_step():
                        saved = self._save()
                        last_eval = self._evaluate(saved)
                        progress.write(f"step {self.step}: val loss {last_eval['val_loss']:.4f}, "
                                       f"ppl {last_eval['val_ppl']:.1f}, {last_eval['val_bpb']:.4f} bits/byte")
                        if code == 1:
                            stopped = "max_minutes"
                            break
        finally:
            progress.close()
            self.trackers.close()
        if d.is_main:
            self._record()
            self.log(f"train: {stopped.replace('_', ' ')} reached at step {self.step}; checkpoints in {self.ckpt_dir}, "
                     f"metrics in {self.metrics.path}, plot in {self.ws.loss_plot(self.run_name)}")
        return TrainResult(run_dir, self.step, stopped, last_eval)

    def _is_eval_step(self) -> bool:
        return self.step % self.tc.eval_every == 0 or self.step == self.tc.max_steps

    def _log_row(self, loss: float, lr: float, grad_norm: torch.Tensor | None, tok_s: float, mfu: float | None) -> None:
        if not self.d.is_main:
            return
        row: dict[str, Any] = {"type": "train", "step": self.step, "loss": loss, "lr": lr,
                               "grad_norm": float(grad_norm) if grad_norm is not None else None,
                               "tokens": self.tokens_seen, "tok_per_s": round(tok_s, 1),
                               "mfu": round(mfu, 5) if mfu is not None else None, "elapsed_s": round(self._elapsed(), 2)}
        util = self.raw.moe_utilization()
        if util is not None:
            row["moe_utilization"] = util
        self.metrics.append(row)
        self.trackers.log(row)

    def _announce(self) -> None:
        tc, plan = self.tc, self.plan
        self.log(f"train: run '{self.run_name}' in {self.ws.run_dir(self.run_name)}: {self.raw.num_params():,} parameters, "
                 f"{self.precision.describe()}{' compiled' if tc.compile else ''}, {self.d.world_size} process(es), "
                 f"{plan.micro_batch} x {plan.context} tokens x {plan.accum_steps} micro-batch(es) x {plan.world_size} = "
                 f"{plan.tokens_per_step:,} tokens/step, {tc.max_steps:,} steps")
        if tc.batch_tokens and plan.tokens_per_step != tc.batch_tokens:
            self.log(f"train: note: train.batch_tokens = {tc.batch_tokens:,} rounded to {plan.tokens_per_step:,} (whole micro-batches)")
        summary, warning = budget_report(DataBudget(len(self.train_shard), self.raw.num_params(), tc.max_steps * plan.tokens_per_step),
                                         tc.budget_warn_epochs)
        self.log(f"train: {summary}")
        if warning:
            self.log(f"train: {warning}")
        if self.tokenizer_warning:
            self.log(f"train: {self.tokenizer_warning}")
        if self.resumed_from is not None:
            self.log(f"train: resuming from step {self.step} ({self.resumed_from.path})")

    def _record(self) -> None:
        newest = ck.list_checkpoints(self.ckpt_dir)
        outputs = [self.metrics.path, self.ws.run_config_file(self.run_name)]
        if newest:
            outputs += [newest[-1].path / ck.MODEL_FILE, newest[-1].path / ck.META_FILE]
        self.ws.record(f"train/{self.run_name}", self._fingerprint(), self._inputs(), outputs)
