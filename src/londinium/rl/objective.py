"""The GRPO objective: what the one trainer runs for `train.objective = 'grpo'` (`londinium rl`).

Like SFT it starts from a base run's weights (`rl.base`, usually an SFT run); its loader is
`Rollouts` (each batch sampled by the engine from the training model's current weights and scored
by the tasks' rewards) and its loss the clipped, KL-penalised policy loss of `rl/loss.py`, computed
by a forward pass of the training model over prompt + answer. The trainer does the rest as for any
run: optimiser, schedule, checkpoints, bit-exact resume, metrics.jsonl.

Its validation is pass@1 and pass@k on `rl.eval_prompts` held-out (val) items: `pass_k` samples each,
at the rollouts' temperature, seeded per item so every evaluation asks the same draws; pass@k is the
unbiased estimate of Chen et al. (2021) with n = k. `val_loss` is 1 - pass@1, so the "best"
checkpoint is the one with the highest pass@1.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import torch

from londinium import checkpoint as ck
from londinium.config import Config
from londinium.errors import ConfigError
from londinium.rl.loss import policy_loss
from londinium.rl.rollouts import Prompt, Rollouts, seed_of
from londinium.rl.shared_prompt import answer_logprobs
from londinium.tasks import check
from londinium.workspace import Workspace

EVAL_ROLLOUT = -1  # the "rollout" index of the evaluation's seeds: never one of training's


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Chance that at least one of k of the n samples is correct (Chen et al. 2021, unbiased)."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def task_prompts(tokenizer: Any, items: list, room: int) -> tuple[list[Prompt], int]:
    """The items asked as chats (zero-shot: the run is fine-tuned), those of at most `room` tokens;
    and how many were longer."""
    from londinium.infer.chat_template import tokenize_chat
    from londinium.tasks import instruction

    prompts = [Prompt(i, tokenize_chat(tokenizer, instruction(i)).ids) for i in items]
    kept = [p for p in prompts if len(p.ids) <= room]
    return kept, len(prompts) - len(kept)


@torch.no_grad()
def held_out_pass(rollouts: Rollouts, prompts: list[Prompt], k: int, seed: int, d: Any = None) -> dict[str, float]:
    """pass@1 and pass@k of the policy `rollouts` samples from, k samples per prompt, seeded per prompt.
    "Correct" is the task's checker scoring 1 (exact, choice) or at least 0.5 (chrF), whatever the reward.
    Under DDP (`d`) each process samples every world_size-th prompt and the sums are all-reduced."""
    from londinium.train import distributed

    rank, world = (d.rank, d.world_size) if d is not None else (0, 1)
    mine = list(range(rank, len(prompts), world))
    sums = torch.zeros(2, dtype=torch.float64)
    share = [prompts[j] for j in mine]
    for p, c in zip(share, rollouts.sample(share, k, [seed_of(seed, EVAL_ROLLOUT, j) for j in mine])):
        need = 1.0 if _exact(p.item.task) else 0.5
        correct = sum(check(p.item.task, rollouts.answer_text(ch), p.item) >= need for ch in c.choices)
        sums += torch.tensor([pass_at_k(len(c.choices), correct, 1), pass_at_k(len(c.choices), correct, k)], dtype=torch.float64)
    if d is not None and d.enabled:
        device = next(rollouts.policy.parameters()).device  # gloo reduces CPU tensors, nccl the GPU's
        sums = distributed.all_reduce(sums.to(device), d).cpu()
    return {"pass@1": float(sums[0]) / len(prompts), f"pass@{k}": float(sums[1]) / len(prompts), "eval_prompts": len(prompts)}


class GRPO:
    """Reinforcement learning with group-relative advantages, from a base run's weights."""

    name = "grpo"

    def __init__(self, ws: Workspace, cfg: Config, log: Callable[[str], None]):
        from londinium.rl.rewards import rewards_for
        from londinium.tasks.messages import task_items
        from londinium.tokenizer.codec import PAD, load_tokenizer
        from londinium.train.objectives import base_checkpoint

        r = cfg.rl
        self.ws, self.cfg, self.log = ws, cfg, log
        if r.advantage_k >= r.group_size:
            # k = G: the one k-subset is the whole group, every sample gets its best reward less itself: 0.
            raise ConfigError(f"rl.advantage_k = {r.advantage_k} must be below rl.group_size = {r.group_size}: the best of k "
                              "samples is taken within a group, and k = G gives every sample advantage 0; lower "
                              "rl.advantage_k or raise rl.group_size")
        self.base = base_checkpoint(ws, cfg, "rl", "londinium rl --run SFT_RUN")
        self.tokenizer = load_tokenizer(ws)
        self.rewards = rewards_for(r.tasks, r.rewards)
        room = cfg.model.context - r.max_new_tokens
        self.train_prompts, too_long = task_prompts(self.tokenizer, [i for t in r.tasks for i in task_items(ws, t, "train")], room)
        val = [i for t in r.tasks for i in task_items(ws, t, "val")]
        self.val_prompts, too_long_val = task_prompts(self.tokenizer, val, room)
        self.val_prompts = self.val_prompts[:r.eval_prompts]
        if too_long or too_long_val:
            log(f"rl: {too_long + too_long_val:,} prompt(s) longer than model.context - rl.max_new_tokens ({room} tokens) left out")
        if not self.train_prompts:
            raise ConfigError(f"rl: no train item of task(s) {', '.join(r.tasks)} fits model.context - rl.max_new_tokens = {room} "
                              "tokens; lower rl.max_new_tokens or build the tasks (`londinium tasks build`)")
        if not self.val_prompts:
            raise ConfigError(f"rl: task(s) {', '.join(r.tasks)} have no val item to measure pass@k on; build them with "
                              "tasks.eval_items >= 1")
        self.task_files = [ws.task_items(t) for t in r.tasks]
        self.rollouts = Rollouts(self.train_prompts, self.rewards, r, cfg.train.seed, self.tokenizer, self.tokenizer.token_to_id(PAD))
        self.step_stats: dict[str, float] = {}

    # ---- what the trainer reads ------------------------------------------------------------------

    def inputs(self) -> list[Path]:
        return [*self.task_files, self.base.path / ck.MODEL_FILE]

    def fingerprint(self) -> dict[str, Any]:
        return {"rl": dataclasses.asdict(self.cfg.rl), "base_checkpoint": self.base.path.name}

    def data_tokens(self) -> int:
        # The trainer counts a step as train.batch_size x model.context tokens, batch_size being the
        # rollout's samples: this makes its "epochs" the passes over the train prompts.
        return len(self.train_prompts) * self.cfg.rl.group_size * self.cfg.model.context

    def describe_data(self) -> str:
        r = self.cfg.rl
        rewards = ", ".join(f"{t}: {reward.name}" for t, reward in self.rewards.items())
        return (f"rl: base run '{r.base}' {self.base.path.name}; {len(self.train_prompts):,} train prompts, "
                f"{len(self.val_prompts):,} held out; {r.prompts_per_step} prompts x {r.group_size} samples a rollout, "
                f"{r.updates_per_batch} update(s) each; rewards {rewards}; beta {r.beta:g}, loss {r.loss_type}"
                f"{', std-scaled' if r.scale_rewards else ''}{_shaping(r)}")

    def make_loader(self, rank: int, world_size: int) -> Rollouts:
        """Under DDP each process samples and scores its share of a rollout's prompts, whole groups, so
        advantages are computed where the group is; the trainer's DDP all-reduces the gradients."""
        r = self.cfg.rl
        if r.prompts_per_step % world_size:
            raise ConfigError(f"rl.prompts_per_step = {r.prompts_per_step} does not split across {world_size} processes: "
                              f"make it a multiple of {world_size}")
        self.rollouts.rank, self.rollouts.world_size = rank, world_size
        return self.rollouts

    def attach(self, raw: torch.nn.Module) -> None:
        """The training model is the policy the engine samples from; a frozen copy of the base is the
        reference when beta > 0."""
        reference = None
        if self.cfg.rl.beta > 0:
            from londinium.model.gpt import GPT

            device = next(raw.parameters()).device
            reference = GPT(self.cfg.model).to(device)
            ck.load_weights(reference, self.base, device)
            reference.eval().requires_grad_(False)
        self.rollouts.attach(raw, reference)

    def loss(self, model: torch.nn.Module, raw: Any, batch: Any) -> torch.Tensor:
        r = self.cfg.rl
        # The policy that sampled had no dropout (the engine runs in eval mode): the gradient is taken
        # for that same policy, so the forward pass runs in eval mode too (gradients flow all the same).
        was = raw.training
        raw.eval()
        try:
            logp, entropy, mask = answer_logprobs(model, raw, batch.x, batch.y, r.group_size, r.temperature, self.rollouts.pad_id)
        finally:
            raw.train(was)
        device = logp.device
        loss, stats = policy_loss(logp, _on(batch.old_logp, device), _on(batch.ref_logp, device),
                                  batch.advantages.to(device), mask, r.clip_eps, r.beta, r.loss_type, r.max_new_tokens)
        stats["entropy"] = float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))
        self.step_stats = {**batch.stats, **stats}
        if raw.last_aux_loss is not None:  # a mixture of experts' router loss, as GPT.forward adds it
            loss = loss + raw.config.aux_loss_weight * raw.last_aux_loss
        return loss

    def step_metrics(self, step_s: float) -> dict[str, Any]:
        """The last step's RL figures for its metrics row (the trainer adds them to loss and lr)."""
        s = dict(self.step_stats)
        s["rollout_share"] = round(s.get("rollout_s", 0.0) / step_s, 4) if step_s > 0 else None
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in s.items()}

    def validate(self, model: torch.nn.Module, precision: Any, d: Any) -> dict[str, float]:
        row = held_out_pass(self.rollouts, self.val_prompts, self.cfg.rl.pass_k, self.cfg.train.seed, d)
        return {"val_loss": 1.0 - row["pass@1"], **row}

    def describe(self, row: dict[str, Any]) -> str:
        k = self.cfg.rl.pass_k
        return f"held-out pass@1 {row['pass@1']:.3f}, pass@{k} {row[f'pass@{k}']:.3f} ({row['eval_prompts']} prompts)"


def _shaping(r: Any) -> str:
    """What the run does to rewards and advantages beyond GRPO's, for its opening line."""
    until = f" for {r.advantage_k_steps} steps, then 1" if r.advantage_k_steps else ""
    return ((f"; advantages of the best of {r.advantage_k}{until}" if r.advantage_k > 1 else "")
            + (f"; unlikeliness {r.unlikeliness:g}" if r.unlikeliness > 0 else ""))


def _exact(task: str) -> bool:
    from londinium.tasks.catalog import task as task_named

    return task_named(task).metric != "chrf"


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)
