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

A budget (`train.max_minutes`, `train.max_tokens`) is turned into the run's steps before the first
step (`pacing.py`), so warm-up and decay fit it; the plan is saved in every checkpoint. A time
budget also stops the run when it runs out: if that cuts the plan short (the machine slowed after
its pace was measured), the run ends normally (exit 0: its checkpoint is good and evaluated) with a
warning naming the step reached and the shortfall, also written to `runs/<name>/summary.json`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from londinium.config import Config, load_config, to_toml, validate
from londinium.errors import ConfigError, LondiniumError
from londinium import checkpoint as ck
from londinium.train import distributed, pacing
from londinium.train.budget import DataBudget, budget_report
from londinium.device import configure_backends, resolve_device, resolve_precision
from londinium.train.objectives import StepRefused, open_objective
from londinium.train.monitor import MetricsLog, Progress, Trackers, peak_flops, plot_losses, pyplot
from londinium.train.optim import build_optimizers
from londinium.train.memory import check_memory
from londinium.train.pacing import Plan
from londinium.train.resume import resume_command, workspace_flag
from londinium.train.signals import StopSignal
from londinium.train.schedule import decay_start, lr_at, plan_batches
from londinium.workspace import Workspace

# Test hook: after finishing this optimiser step, every process SIGKILLs itself -- the crash the
# resume tests need, at an exact step, without timing races. Never set in normal use.
KILL_ENV = "LONDINIUM_TEST_SIGKILL_AT_STEP"
# Test hook: seconds every optimiser step of the run (not the pace measurement) sleeps after it -- a
# machine that slowed after its pace was measured, so a time budget cuts the plan. Never set in normal use.
SLOW_ENV = "LONDINIUM_TEST_SLEEP_PER_STEP_S"
# Train fields that do not change what a run produces, so changing them does not re-run a finished run.
_NOT_FINGERPRINTED = ("resume", "wandb", "tensorboard", "peak_tflops", "budget_warn_epochs", "threads")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    # "max_steps" (the configured steps done), "planned_steps" (a budget's planned steps done),
    # "max_minutes" (the time budget ran out before the plan was done) or "up_to_date"
    stopped: str
    last_eval: dict[str, Any] | None
    plan: Plan | None = None
    warning: str | None = None  # why the plan was not completed, if it was not


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


def _validate(cfg: Config) -> None:
    """Every [train] and [model] rule (config.validate: the same check `config show` makes)."""
    validate(cfg)


class TrainingDiverged(LondiniumError):
    """The loss or the weights went NaN or infinite: training stops before saving them."""


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
        self.objective = open_objective(ws, self.cfg, self.train_shard, self.val_shard, self.log)

    def _tokenizer_mismatch(self, vocab: int) -> str | None:
        """A warning when the workspace's tokenizer was trained with another tokenizer.vocab_size than
        this config's (`--preset slm` on a tiny workspace): training goes on with the tokenizer the
        shards were made with, which is consistent, but the user should know it is not the one asked for."""
        section = self.ws.manifest().get("tokenizer", {}).get("config", {}).get("section", {})
        trained, wanted = section.get("vocab_size"), self.cfg.tokenizer.vocab_size
        if trained is None or trained == wanted:
            return None  # an adopted tokenizer has no recorded config: nothing to compare
        flags = (f" --preset {self.cfg.preset}" if self.cfg.preset else f" --set tokenizer.vocab_size={wanted}") + workspace_flag(self.ws)
        return (f"warning: the workspace's tokenizer was trained with tokenizer.vocab_size = {trained} ({vocab:,} ids), "
                f"this config asks for {wanted}{f' (preset {self.cfg.preset})' if self.cfg.preset else ''}; the model takes "
                f"the workspace's {vocab:,}. For {wanted}, run `londinium tokenizer train{flags}` and `londinium data prepare{flags}` first")

    def _fingerprint(self) -> dict[str, Any]:
        train = {k: v for k, v in dataclasses.asdict(self.tc).items() if k not in _NOT_FINGERPRINTED}
        if train["objective"] == "next-token":
            del train["objective"]  # as recorded before objectives existed: those runs stay up to date
        return {"model": dataclasses.asdict(self.cfg.model), "train": train, "tokenizer_sha256": self.tokenizer_sha256,
                **self.objective.fingerprint()}

    def _inputs(self) -> list[Path]:
        ws = self.ws
        return [ws.tokenizer_file, ws.shard_bin("train"), ws.shard_meta("train"), ws.shard_bin("val"), ws.shard_meta("val"),
                *self.objective.inputs()]

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
        from londinium.data.loader import iter_eval_batches
        from londinium.model.gpt import GPT

        tc, device = self.tc, self.precision.device
        check_memory(self.cfg.model, tc.batch_size, device)
        configure_backends(device)
        torch.manual_seed(tc.seed)  # the same initial weights on every rank and every run
        self.raw = GPT(self.cfg.model).to(device)
        self.opt = build_optimizers(self.raw, tc, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision.needs_scaler else None
        self.batches = plan_batches(tc, self.cfg.model.context, self.d.world_size)
        self.loader = self.objective.make_loader(self.d.rank, self.d.world_size)
        self.objective.attach(self.raw)
        # A val split too small for one window per process fails now, not after the first interval.
        next(iter_eval_batches(self.val_shard, self.cfg.model.context, 1, max_batches=1, rank=self.d.rank, world_size=self.d.world_size))
        self.step, self.tokens_seen, self.elapsed_before = 0, 0, 0.0
        self.pending_tokens = 0  # this process's tokens since tokens_seen was last summed over processes
        self.schedule, self.plan, self.saved_plan = tc, None, None  # the configured schedule until planned

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
        self.saved_plan = Plan.from_dict(state["plan"]) if state.get("plan") else None  # older checkpoints have none
        self.resumed_from = ckpt

    # ---- saving and evaluating ---------------------------------------------------------------------

    def _save(self, directory: Path | None = None) -> ck.Checkpoint | None:
        """A checkpoint of this step in the run's checkpoints (or `directory`, for the pace measurement)."""
        self._check_finite(weights=True)  # never a checkpoint of NaN weights over a good one
        self._count_tokens()
        rngs = distributed.gather_to_main(ck.capture_rng(), self.d)  # collective: every rank takes part
        if not self.d.is_main:
            return None
        state = {
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self._elapsed(),
            "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else {},
            # The loader's randomness is a function of (seed, rank, cursor) and all ranks move in
            # lockstep, so rank 0's cursor restores every rank.
            "loader": self.loader.state_dict(), "rng": rngs, "world_size": self.d.world_size,
            # The schedule a budget planned: a resumed run keeps it rather than measuring again.
            "plan": self.plan.to_dict() if self.plan else None,
        }
        meta = {"run": self.run_name, "tokenizer_sha256": self.tokenizer_sha256, "world_size": self.d.world_size,
                "tokens_seen": self.tokens_seen}
        return ck.save_checkpoint(directory or self.ckpt_dir, self.step, self.raw, state, self.config_toml, meta)

    def _validation(self) -> dict[str, float]:
        return self.objective.validate(self.eval_model, self.precision, self.d)

    def _count_tokens(self) -> int:
        """Add every process's tokens since the last count to tokens_seen (collective); returns them."""
        n = self.pending_tokens
        if self.d.enabled:
            n = int(distributed.all_reduce(torch.tensor([n], dtype=torch.int64, device=self.precision.device), self.d).item())
        self.tokens_seen += n
        self.pending_tokens = 0
        return n

    def _evaluate(self, saved: ck.Checkpoint | None) -> dict[str, Any]:
        row = {"type": "eval", "step": self.step, **self._validation()}
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

    # ---- the plan ----------------------------------------------------------------------------------

    def _make_plan(self, model: torch.nn.Module) -> Plan:
        """This run's steps and warm-up: a resumed run's own plan while its budget fields are unchanged,
        else planned now (from the pace measured here for a time budget). Every rank computes it from
        the same numbers -- the slowest rank's pace, rank 0's clock -- so all agree on the steps."""
        saved = self.saved_plan
        if saved is not None and saved.request == pacing.request(self.tc):
            return saved
        pace = self._measure_pace(model) if pacing.needs_pace(self.tc) else None
        elapsed = distributed.broadcast_object(self._elapsed(), self.d)
        plan = pacing.plan_run(self.tc, self.batches.tokens_per_step, pace, elapsed, self.step)
        if saved is not None and saved.by != "max_steps":
            self.log(f"train: note: the run was planned for {saved.steps:,} steps; planned again for the changed budget")
        return plan

    def _measure_pace(self, model: torch.nn.Module) -> pacing.Pace:
        """Time steps and one evaluation interval on the real model and optimiser (so compilation and
        caches are warm for the run), then put back everything they changed: the run that follows is
        bit-identical to one given the planned steps directly (the RNGs are seeded after this)."""
        self.log(f"train: measuring the pace for train.max_minutes = {self.tc.max_minutes:g}: a warm-up step, "
                 f"{pacing.PACE_STEPS} timed steps and one checkpoint and evaluation (undone afterwards)")
        before = self._snapshot()
        scratch = None
        if self.d.is_main:
            pyplot()  # importing matplotlib is a one-off of the first plot, not a cost of every interval
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="pace-", suffix=".tmp", dir=self.ckpt_dir))  # swept like a torn save
        try:
            pace = pacing.measure_pace(lambda: self._paced_step(model), lambda: self._paced_interval(scratch))
        finally:
            self._restore(before)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        # The processes step in lockstep, so the slowest sets the pace.
        t = torch.tensor([pace.step_s, pace.interval_s], dtype=torch.float64, device=self.precision.device)
        step_s, interval_s = distributed.all_reduce(t, self.d, op="max").tolist()
        return pacing.Pace(step_s, interval_s)

    def _revise_plan(self, progress: Progress) -> None:
        """Follow the pace this session really has (pacing.revise), with the same numbers on every rank."""
        interval_s = self.session_eval_s / self.session_evals if self.session_evals else self.plan.interval_s
        seen = torch.tensor([self._elapsed(), self.session_step_s / max(1, self.session_steps), interval_s],
                            dtype=torch.float64, device=self.precision.device)
        elapsed, step_s, interval_s = distributed.all_reduce(seen, self.d, op="max").tolist()
        plan = pacing.revise(self.plan, self.tc, self.step, elapsed, step_s, interval_s)
        if plan is not self.plan:
            self.plan, self.schedule = plan, plan.schedule(self.tc)
            progress.set_total(plan.steps)

    def _paced_step(self, model: torch.nn.Module) -> None:
        self._one_step(model)
        if self.precision.device.type == "cuda":
            torch.cuda.synchronize(self.precision.device)  # time the work, not its launch

    def _paced_interval(self, scratch: Path | None) -> None:
        """What each evaluation interval costs: a checkpoint save, the evaluation, the loss plot."""
        if self.tc.compile:
            self._validation()  # the evaluation's graph compiles on its first call: a one-off
        self._save(scratch)
        self._validation()
        if scratch is not None:
            plot_losses(self.metrics.path, scratch / "plot.png")

    def _snapshot(self) -> dict[str, Any]:
        """Copies of everything a training step changes."""
        return {"model": {k: v.detach().clone() for k, v in self.raw.state_dict().items()},
                "optimizer": copy.deepcopy(self.opt.state_dict()),
                "scaler": copy.deepcopy(self.scaler.state_dict()) if self.scaler else None,
                "loader": self.loader.state_dict(), "step": self.step, "tokens_seen": self.tokens_seen,
                "pending_tokens": self.pending_tokens}

    def _restore(self, saved: dict[str, Any]) -> None:
        self.raw.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(saved["scaler"])
        self.loader.load_state_dict(saved["loader"])
        self.step, self.tokens_seen, self.pending_tokens = saved["step"], saved["tokens_seen"], saved["pending_tokens"]
        self.opt.zero_grad()

    def _one_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        lr = lr_at(self.step, self.schedule)
        self.opt.set_lr(lr / self.tc.learning_rate)
        device = self.precision.device
        loss_sum = torch.zeros((), device=device)
        accum = self.batches.accum_steps
        for micro in range(accum):
            batch = self.loader.next_batch()
            batch.x, batch.y = batch.x.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
            if batch.weights is not None:
                batch.weights = batch.weights.to(device, non_blocking=True)
            self.pending_tokens += batch.tokens
            # Gradients are all-reduced once per step, on the last micro-batch, not on every one.
            sync = self.ddp.no_sync() if self.ddp is not None and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.precision.context():
                    loss = self.objective.loss(model, self.raw, batch)
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
        return loss_sum, grad_norm, lr

    def _stop_code(self, stop: StopSignal) -> int:
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
            newest = ck.list_checkpoints(self.ckpt_dir)
            return TrainResult(run_dir, newest[-1].step if newest else 0, "up_to_date", None)
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
        elif self.objective.base is not None:  # fine-tuning starts from the base run's weights
            ck.load_weights(self.raw, self.objective.base, self.precision.device)
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
        flops_per_token = self.raw.flops_per_token()
        peak = peak_flops(self.precision.device, self.precision.dtype, tc.peak_tflops) * d.world_size if d.is_main else 0.0

        # The budget's clock starts here: measuring the pace is part of the time the run is given.
        self.session_start = time.perf_counter()
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.precision.device)
        self.plan = self._make_plan(model)
        self.schedule = self.plan.schedule(tc)
        self._announce_plan()
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
        progress = Progress(self.plan.steps, self.step, enabled=d.is_main, out=self.log)
        stopped = "max_steps" if self.plan.by == "max_steps" else "planned_steps"
        window_t = 0.0
        # This session's real pace: what a revised plan and the shortfall warning go by.
        self.session_steps, self.session_step_s, self.session_evals, self.session_eval_s = 0, 0.0, 0, 0.0
        slow = float(os.environ.get(SLOW_ENV) or 0)
        try:
            with StopSignal() as stop:
                model.train()
                while self.step < self.plan.steps:
                    t0 = time.perf_counter()
                    try:
                        loss_sum, grad_norm, lr = self._one_step(model)
                    except StepRefused:  # nothing of this step happened yet: keep the steps done
                        self._save()
                        raise
                    if slow:
                        time.sleep(slow)
                    self._watch(loss_sum)
                    code = self._stop_code(stop)
                    loss = None
                    if self.step % tc.log_every == 0 or self.step == self.plan.steps:
                        self._check_finite()
                        loss = float(distributed.all_reduce(loss_sum, d).item()) / d.world_size
                    step_s = time.perf_counter() - t0
                    window_t += step_s
                    self.session_step_s += step_s
                    self.session_steps += 1
                    tok_s = mfu = None
                    if loss is not None:
                        tok_s = self._count_tokens() / window_t  # the tokens really processed (no padding)
                        mfu = tok_s * flops_per_token / peak if peak else None
                        self._log_row(loss, lr, grad_norm, tok_s, mfu, window_t)
                        window_t = 0.0
                        if pacing.revisable(self.plan, tc):
                            self._revise_plan(progress)
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
                        t0 = time.perf_counter()
                        saved = self._save()
                        last_eval = self._evaluate(saved)
                        self.session_eval_s += time.perf_counter() - t0
                        self.session_evals += 1
                        progress.write(f"step {self.step}: {self.objective.describe(last_eval)}")
                        if code == 1:
                            break
        finally:
            progress.close()
            self.trackers.close()
        warning = pacing.shortfall_warning(self.plan, tc, self.step, self.session_step_s / max(1, self.session_steps),
                                           resume_command(self.ws, self.run_name, d.world_size))
        if warning:
            stopped = "max_minutes"
        if d.is_main:
            self._record(stopped, warning, last_eval)
            self.log(f"train: {stopped.replace('_', ' ')} reached at step {self.step}; checkpoints in {self.ckpt_dir}, "
                     f"metrics in {self.metrics.path}, plot in {self.ws.loss_plot(self.run_name)}")
            if self.plan.first_steps and self.plan.first_steps != self.plan.steps:
                self.log(f"train: the plan followed the pace the steps really had: {self.plan.first_steps:,} steps first, "
                         f"{self.plan.steps:,} in the end, its decay from step {decay_start(self.schedule):,}")
            if warning:
                self.log(f"train: {warning}")
        return TrainResult(run_dir, self.step, stopped, last_eval, self.plan, warning)

    def _is_eval_step(self) -> bool:
        return self.step % self.tc.eval_every == 0 or self.step == self.plan.steps

    def _log_row(self, loss: float, lr: float, grad_norm: torch.Tensor | None, tok_s: float, mfu: float | None, window_s: float) -> None:
        if not self.d.is_main:
            return
        row: dict[str, Any] = {"type": "train", "step": self.step, "loss": loss, "lr": lr,
                               "grad_norm": float(grad_norm) if grad_norm is not None else None,
                               "tokens": self.tokens_seen, "tok_per_s": round(tok_s, 1),
                               "mfu": round(mfu, 5) if mfu is not None else None, "elapsed_s": round(self._elapsed(), 2)}
        util = self.raw.moe_utilization()
        if util is not None:
            row["moe_utilization"] = util
        row.update(self.objective.step_metrics(window_s))
        self.metrics.append(row)
        self.trackers.log(row)

    def _announce(self) -> None:
        tc, b = self.tc, self.batches
        self.log(f"train: run '{self.run_name}' in {self.ws.run_dir(self.run_name)}: {self.raw.num_params():,} parameters, "
                 f"{self.precision.describe()}{' compiled' if tc.compile else ''}, {self.d.world_size} process(es), "
                 f"{b.micro_batch} x {b.context} tokens x {b.accum_steps} micro-batch(es) x {b.world_size} = "
                 f"{b.tokens_per_step:,} tokens/step")
        if tc.batch_tokens and b.tokens_per_step != tc.batch_tokens:
            self.log(f"train: note: train.batch_tokens = {tc.batch_tokens:,} rounded to {b.tokens_per_step:,} (whole micro-batches)")
        if self.tokenizer_warning:
            self.log(f"train: {self.tokenizer_warning}")
        if data := self.objective.describe_data():
            self.log(f"train: {data}")
        if self.resumed_from is not None:
            self.log(f"train: resuming from step {self.step} ({self.resumed_from.path})")

    def _announce_plan(self) -> None:
        tc, tokens_per_step = self.tc, self.batches.tokens_per_step
        kept = self.resumed_from is not None and self.plan is self.saved_plan and self.plan.by != "max_steps"
        self.log(f"train: {pacing.describe(self.plan, tc, tokens_per_step)}" + ("; kept from the checkpoint" if kept else ""))
        summary, warning = budget_report(DataBudget(self.objective.data_tokens(), self.raw.num_params(), self.plan.steps * tokens_per_step),
                                         tc.budget_warn_epochs)
        self.log(f"train: {summary}")
        if warning:
            self.log(f"train: {warning}")

    def _record(self, stopped: str, warning: str | None, last_eval: dict[str, Any] | None) -> None:
        """The run's summary (its plan, where it stopped, any shortfall) and its manifest entry."""
        from londinium.files import write_json

        summary = {"run": self.run_name, "step": self.step, "stopped": stopped, "planned_steps": self.plan.steps,
                   "schedule_complete": self.step >= self.plan.steps, "shortfall_steps": max(0, self.plan.steps - self.step),
                   "warning": warning, "elapsed_s": round(self._elapsed(), 2), "tokens_seen": self.tokens_seen,
                   "plan": self.plan.to_dict(), "last_eval": last_eval}
        write_json(self.ws.run_summary_file(self.run_name), summary)
        newest = ck.list_checkpoints(self.ckpt_dir)
        outputs = [self.metrics.path, self.ws.run_config_file(self.run_name), self.ws.run_summary_file(self.run_name)]
        if newest:
            outputs += [newest[-1].path / ck.MODEL_FILE, newest[-1].path / ck.META_FILE]
        self.ws.record(f"train/{self.run_name}", self._fingerprint(), self._inputs(), outputs)
