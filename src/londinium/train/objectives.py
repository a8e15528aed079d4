"""What a run trains for: an objective is a loss and what it reads, run by the one trainer.

    objective = open_objective(ws, cfg, tokenizer, shards, log)     # by train.objective
    batch = objective.loader.next_batch(); loss = objective.loss(model, raw, batch)
    row = objective.validate(model, precision, d)                  # val_loss decides the best checkpoint

- `NextToken` ("next-token"): pre-training. Random windows of the train shard, every next token a
  target; validated on the val shard (loss, perplexity, bits per byte).
- `SFT` ("sft"): supervised fine-tuning of a base run's checkpoint on conversations (the task set,
  the user's JSONL), with the loss on the assistant's tokens only and a replay share of
  pre-training windows (`train/sft_batches.py`); validated on held-out conversations (their
  assistant tokens' loss: `val_loss`) and on the val shard (`text_val_bpb`: what it forgot).
- `Distill` ("distill"): pre-training against a frozen teacher run's soft targets, computed on the
  fly on the same windows (`train/distill.py`) or read from its top-k cache with the cached windows
  (`train/distill_cache.py`); validated as next-token. `DistillSFT` (distill.sft): SFT's data, base
  and validation with the teacher's soft targets, both terms under SFT's mask.
- `GRPO` ("grpo", `rl/objective.py`): reinforcement learning of a base run on tasks' rewards; its
  loader samples rollouts from the model being trained (`attach`), its validation is pass@k.

The trainer does the rest the same way for both: steps, schedule and budget, checkpoints, bit-exact
resume (the loader's state is its cursor), DDP, monitoring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from londinium import checkpoint as ck
from londinium.config import Config
from londinium.data.loader import Shard, TokenLoader
from londinium.errors import ConfigError, LondiniumError
from londinium.train import distributed
from londinium.train.evaluate import evaluate
from londinium.workspace import Workspace

OBJECTIVES = ("next-token", "sft", "distill", "grpo")


class StepRefused(LondiniumError):
    """Raised by a loader before a step changed anything (a reward function failed): the trainer saves
    the steps done and stops with this message (see `rl/rewards.py`)."""


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    weights: torch.Tensor | None  # per-target share of the loss; None: the mean over targets
    tokens: int  # positions processed (not padding)
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None  # a cached teacher's top-k (log-probabilities, ids)


class _Windows:
    """`TokenLoader` as the trainer reads a loader: batches with their token count."""

    def __init__(self, loader: TokenLoader):
        self.inner = loader

    def next_batch(self) -> Batch:
        x, y = self.inner.next_batch()
        return Batch(x, y, None, x.numel())

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class NextToken:
    """Pre-training: predict every next token of the corpus."""

    name = "next-token"
    base: ck.Checkpoint | None = None  # trained from random weights

    def __init__(self, cfg: Config, train: Shard, val: Shard):
        self.cfg, self.train, self.val = cfg, train, val

    def inputs(self) -> list[Path]:
        return []

    def fingerprint(self) -> dict[str, Any]:
        return {}

    def data_tokens(self) -> int:
        return len(self.train)

    def describe_data(self) -> str | None:
        return None  # the shards: the banner has said enough

    def make_loader(self, rank: int, world_size: int) -> _Windows:
        tc = self.cfg.train
        return _Windows(TokenLoader(self.train, self.cfg.model.context, tc.batch_size, tc.seed, rank, world_size))

    def attach(self, raw: torch.nn.Module) -> None:
        """The model being trained, once built (an objective whose loader samples from it keeps it)."""

    def step_metrics(self, step_s: float) -> dict[str, Any]:
        """Figures of the last step for its metrics row, besides the trainer's own (none here)."""
        return {}

    def loss(self, model: torch.nn.Module, raw: Any, batch: Batch) -> torch.Tensor:
        _, loss = model(batch.x, batch.y)
        return loss

    def validate(self, model: torch.nn.Module, precision: Any, d: distributed.Dist) -> dict[str, float]:
        tc = self.cfg.train
        return evaluate(model, self.val, self.cfg.model.context, tc.batch_size, tc.eval_batches, precision, d)

    @staticmethod
    def describe(row: dict[str, Any]) -> str:
        return f"val loss {row['val_loss']:.4f}, ppl {row['val_ppl']:.1f}, {row['val_bpb']:.4f} bits/byte"


class SFT:
    """Supervised fine-tuning: the assistant's tokens of conversations, from a base run's weights."""

    name = "sft"

    def __init__(self, ws: Workspace, cfg: Config, train: Shard, val: Shard, log: Callable[[str], None]):
        from londinium.infer.chat_template import END_OF_TURN
        from londinium.tokenizer.codec import PAD, load_tokenizer
        from londinium.train import sft_data

        s = cfg.sft
        self.cfg, self.val_shard, self.log = cfg, val, log
        self.base = base_checkpoint(ws, cfg, "sft", "londinium sft --run BASE")
        self.replay = train if s.replay_share > 0 else None
        tokenizer = load_tokenizer(ws)
        self.pad_id = tokenizer.token_to_id(PAD)
        end = tokenizer.token_to_id(END_OF_TURN)
        self.end_id = -1 if end is None else end  # -1: no target is <|end|> (a tokenizer without it)

        context = cfg.model.context
        user_train, user_val = [], []
        for path in s.data:
            t, v = sft_data.held_out(sft_data.read_conversations(path), s.val_share)
            user_train += t
            user_val += v
        user_examples = []
        for conversations in (user_train, user_val):
            examples, too_long = sft_data.tokenize(conversations, tokenizer, context)
            if too_long:  # the user's own data: refused, naming the line, rather than cut
                raise sft_data.too_long_error(too_long[0], tokenizer, context)
            user_examples.append(examples)
        task = sft_data.task_conversations(ws, ("train", "val"), s.tasks)
        task_train, skipped = sft_data.tokenize(task["train"], tokenizer, context)
        task_val, skipped_val = sft_data.tokenize(task["val"], tokenizer, context)
        if skipped or skipped_val:
            log(f"sft: {len(skipped) + len(skipped_val):,} task conversation(s) longer than model.context + 1 "
                f"({context + 1} tokens) left out")
        self.train_examples, self.val_examples = task_train + user_examples[0], task_val + user_examples[1]
        if not self.train_examples and skipped:
            raise sft_data.DataError(f"all {len(skipped):,} task conversations of the train split are longer than model.context + 1 "
                                     f"({context + 1} tokens): fine-tune a base run trained with a longer model.context")
        if not self.train_examples:
            raise sft_data.DataError("no conversations to train on: give --data FILE (JSONL) or --tasks (the task set)")
        if not self.val_examples:
            raise sft_data.DataError("no held-out conversations to validate on: the task set's val split is empty and "
                                     "sft.val_share holds none of --data back; raise sft.val_share (or add conversations)")
        self.val_examples = self.val_examples[:s.val_conversations]
        self.data_files = [Path(p) for p in s.data] + sft_data.task_files(ws, s.tasks)
        self.data_digest = sft_data.data_sha256(self.train_examples + self.val_examples)
        counts: dict[str, int] = {}
        for e in self.train_examples:
            counts[e.task] = counts.get(e.task, 0) + 1
        self.counts = counts

    def inputs(self) -> list[Path]:
        return [*self.data_files, self.base.path / ck.MODEL_FILE]

    def fingerprint(self) -> dict[str, Any]:
        return {"sft": dataclasses.asdict(self.cfg.sft), "data_sha256": self.data_digest, "base_checkpoint": self.base.path.name}

    def data_tokens(self) -> int:
        return sum(len(e) for e in self.train_examples)

    def make_loader(self, rank: int, world_size: int) -> Any:
        from londinium.train.sft_batches import ChatLoader

        tc, s = self.cfg.train, self.cfg.sft
        return ChatLoader(self.train_examples, self.replay, tc.batch_size, s.replay_share, tc.seed, self.pad_id, rank, world_size,
                          self.end_id, s.end_weight)

    attach, step_metrics = NextToken.attach, NextToken.step_metrics

    def describe_data(self) -> str:
        from londinium.train.sft_batches import replay_rows

        mix = ", ".join(f"{task} {n:,}" for task, n in sorted(self.counts.items()))
        r = replay_rows(self.cfg.train.batch_size, self.cfg.sft.replay_share) if self.replay is not None else 0
        replay = (f"; replay: {r} of {self.cfg.train.batch_size} rows a batch are pre-training text, "
                  f"{self.cfg.sft.replay_share:.0%} of the loss") if r else "; no replay"
        return (f"sft: base run '{self.cfg.sft.base}' {self.base.path.name}; {len(self.train_examples):,} conversations "
                f"({mix}), {len(self.val_examples):,} held out{replay}")

    def loss(self, model: torch.nn.Module, raw: Any, batch: Batch) -> torch.Tensor:
        keep = batch.weights > 0  # the trained positions: the head and softmax run on those only
        logits, _ = model(batch.x, keep=keep)
        nll = F.cross_entropy(logits.float(), batch.y[keep], reduction="none")
        return _with_aux((nll * batch.weights[keep]).sum(), raw)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, precision: Any, d: distributed.Dist) -> dict[str, float]:
        from londinium.train.sft_batches import iter_chat_batches

        tc = self.cfg.train
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=precision.device)  # [sum NLL, assistant tokens]
        for x, y in iter_chat_batches(self.val_examples, tc.batch_size, self.pad_id, d.rank, d.world_size):
            x, y = x.to(precision.device), y.to(precision.device)
            with precision.context():
                logits, _ = model(x)
            totals[0] += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1,
                                         reduction="sum").double()
            totals[1] += (y != -1).sum()
        distributed.all_reduce(totals, d)
        model.train(was_training)
        nll, n = totals.tolist()
        text = evaluate(model, self.val_shard, self.cfg.model.context, tc.batch_size, tc.eval_batches, precision, d)
        loss = nll / max(1.0, n)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": int(n),
                "text_val_loss": text["val_loss"], "text_val_bpb": text["val_bpb"]}

    @staticmethod
    def describe(row: dict[str, Any]) -> str:
        return (f"answer loss {row['val_loss']:.4f} (held-out conversations), plain text {row['text_val_bpb']:.4f} bits/byte")


class Distill(NextToken):
    """Pre-training with a teacher: the shards' windows (or the cached ones), the loss on the labels and
    the teacher's softened distribution (`distill.distill_loss`); validated as next-token, on the student alone."""

    name = "distill"

    def __init__(self, ws: Workspace, cfg: Config, train: Shard, val: Shard, log: Callable[[str], None]):
        from londinium.train.distill import open_teacher
        from londinium.train.distill_cache import teacher_cache

        super().__init__(cfg, train, val)
        self.teacher = open_teacher(ws, cfg, train.meta["tokenizer_sha256"])
        self.cache = None
        if cfg.distill.top_k:  # under torchrun each rank opens it: only a single process builds one
            self.cache = teacher_cache(ws, self.teacher, train, cfg.model.context, cfg.distill.top_k, log,
                                       build=not distributed.launched_by_torchrun())

    def inputs(self) -> list[Path]:
        return [self.teacher.path / ck.MODEL_FILE]

    def fingerprint(self) -> dict[str, Any]:
        return {"distill": dataclasses.asdict(self.cfg.distill)}

    def describe_data(self) -> str:
        source = (f"top-{self.cfg.distill.top_k} cache {self.cache.path.name} ({self.cache.windows:,} windows)"
                  if self.cache is not None else "on the fly")
        return f"{self.teacher.describe(self.cfg.distill)}, teacher {source}"

    def make_loader(self, rank: int, world_size: int) -> Any:
        if self.cache is None:
            return super().make_loader(rank, world_size)
        from londinium.train.distill_cache import CachedWindows

        return CachedWindows(self.cache, self.train, self.cfg.train.batch_size, self.cfg.train.seed, rank, world_size)

    def loss(self, model: torch.nn.Module, raw: Any, batch: Batch) -> torch.Tensor:
        from londinium.train.distill import distill_loss, topk_distill_loss

        d = self.cfg.distill
        logits, _ = model(batch.x)
        if batch.teacher is not None:
            logprobs, ids = (t.to(logits.device) for t in batch.teacher)
            loss = topk_distill_loss(logits, logprobs, ids, batch.y, d.alpha, d.temperature, d.kl)
        else:
            teacher = self.teacher.logits(batch.x) if d.alpha < 1 else logits  # alpha 1: plain CE, the teacher not asked
            loss = distill_loss(logits, teacher, batch.y, d.alpha, d.temperature, d.kl)
        return _with_aux(loss, raw)


class DistillSFT(SFT):
    """SFT with a teacher (distill.sft): an SFT teacher's soft targets on the conversations, the student
    fine-tuned from sft.base; SFT's weights (the assistant's tokens, the replay share) weigh both terms."""

    name = "distill"

    def __init__(self, ws: Workspace, cfg: Config, train: Shard, val: Shard, log: Callable[[str], None]):
        from londinium.train.distill import open_teacher

        if cfg.distill.top_k:
            raise ConfigError("distill.top_k caches the teacher over the shards' windows, not conversations: "
                              "with --sft (distill.sft) set distill.top_k = 0 (the teacher on the fly)")
        super().__init__(ws, cfg, train, val, log)
        self.teacher = open_teacher(ws, cfg, train.meta["tokenizer_sha256"])

    def inputs(self) -> list[Path]:
        return [*super().inputs(), self.teacher.path / ck.MODEL_FILE]

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "distill": dataclasses.asdict(self.cfg.distill)}

    def describe_data(self) -> str:
        return f"{super().describe_data()}\n{self.teacher.describe(self.cfg.distill)}, teacher on the fly"

    def loss(self, model: torch.nn.Module, raw: Any, batch: Batch) -> torch.Tensor:
        from londinium.train.distill import distill_loss

        d = self.cfg.distill
        keep = batch.weights > 0  # as SFT: both models' heads and the soft loss on the trained positions only
        logits, _ = model(batch.x, keep=keep)
        # The replay rows are distilled too: labels alone there were measured 0.09 nats worse on the
        # answers for 29% less CPU (docs/LOG.md, distillation's third measurement).
        teacher = self.teacher.logits(batch.x, keep) if d.alpha < 1 else logits
        return _with_aux(distill_loss(logits, teacher, batch.y[keep], d.alpha, d.temperature, d.kl, weights=batch.weights[keep]), raw)


def _with_aux(loss: torch.Tensor, raw: Any) -> torch.Tensor:
    if raw.last_aux_loss is not None:  # a mixture of experts' router loss, as GPT.forward adds it
        loss = loss + raw.config.aux_loss_weight * raw.last_aux_loss
    return loss


def base_checkpoint(ws: Workspace, cfg: Config, section: str, command: str) -> ck.Checkpoint:
    """The checkpoint a fine-tuning run starts from ([section]'s base and checkpoint), checked to
    have the run's architecture."""
    from londinium.export.run import resolve_checkpoint

    s = getattr(cfg, section)
    if not s.base:
        raise ConfigError(f"train.objective = '{cfg.train.objective}' needs {section}.base, the run to train: `{command}`")
    base = resolve_checkpoint(ws, s.base, s.checkpoint)
    _check_base(base, cfg)
    return base


def _check_base(base: ck.Checkpoint, cfg: Config) -> None:
    """The base checkpoint's architecture must be the run's: its weights are loaded as they are."""
    from londinium.config import load_config

    trained = load_config(base.path / ck.CONFIG_FILE).model
    diff = [f"model.{k}: {v!r} -> {getattr(cfg.model, k)!r}" for k, v in dataclasses.asdict(trained).items()
            if getattr(cfg.model, k) != v]
    if diff:
        raise ck.CheckpointError(f"the base checkpoint {base.path} has another architecture than this run ({'; '.join(diff)}); "
                                 "an SFT run keeps its base's [model]: drop that change (--preset, --set, --config)")


def open_objective(ws: Workspace, cfg: Config, train: Shard, val: Shard, log: Callable[[str], None]) -> Any:
    """The objective `train.objective` names, with its data opened and checked."""
    if cfg.train.objective == "grpo":
        from londinium.rl.objective import GRPO

        return GRPO(ws, cfg, log)
    if cfg.train.objective == "sft":
        return SFT(ws, cfg, train, val, log)
    if cfg.train.objective == "distill":
        return (DistillSFT if cfg.distill.sft else Distill)(ws, cfg, train, val, log)
    return NextToken(cfg, train, val)

