"""Rollouts: the RL run's loader. Each batch is the experience of one step, sampled by the engine.

    rollouts = Rollouts(prompts, rewards, cfg.rl, seed, tokenizer, pad_id)
    rollouts.attach(policy, reference)    # the training model itself: the engine samples from its weights
    batch = rollouts.next_batch()         # RolloutBatch: prompt + answer ids, advantages, old/ref log-probs

One rollout is one batched engine call: `prompts_per_step` prompts, each a request for `group_size`
samples (n), so each prompt is prefilled once and its samples decoded together with every other
prompt's. The engine wraps the training model itself (not a copy): the weights an optimiser step
wrote are the weights the next rollout samples from, with no copy and no stale policy; its prefix
cache is cleared before each rollout, since it holds keys of older weights. A rollout is reused for
`updates_per_batch` steps (then its log-probabilities at sampling time, `old_logp`, feed the clipped
ratio).

Under DDP each process samples every world_size-th prompt of a rollout (whole groups, so the
advantages are computed where the group is), seeded by the prompt's place in the whole rollout: any
number of processes samples the same answers as one.

Resume is bit-exact without saving a random generator: prompt order is a shuffle seeded by (seed,
epoch) and each prompt's samples come from a seed made of (seed, rollout, prompt), so the state is the
count of rollouts done, plus the rollout being reused when a checkpoint falls between its updates.
A reward that raises stops the step before anything moved (`StepRefused`), so the trainer can save.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from londinium.rl.loss import pass_at_k_advantages, unlikeliness_rewards, zero_std_share
from londinium.rl.rewards import TaskReward, score
from londinium.rl.shared_prompt import answer_form, answer_logprobs
from londinium.tasks.check import END
from londinium.tasks.items import TaskItem
from londinium.train.objectives import Batch


@dataclass
class Prompt:
    item: TaskItem
    ids: list[int]  # the chat asking the item, up to the assistant's turn


@dataclass
class RolloutBatch(Batch):
    """A Batch (x: prompt + answer minus the last token, y: the answer's tokens, -1 elsewhere) and
    what the policy loss reads besides."""

    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    old_logp: torch.Tensor | None = None  # [B, A] answer tokens' at sampling time; None: on-policy
    ref_logp: torch.Tensor | None = None  # [B, A] under the frozen reference; None: beta = 0
    stats: dict[str, float] = field(default_factory=dict)


def seed_of(seed: int, rollout: int, prompt: int) -> int:
    """The sampling seed of a prompt of a rollout. (Python's hash of a tuple of ints is stable.)"""
    return hash((seed, rollout, prompt)) & (2**62 - 1)


class Rollouts:
    def __init__(self, prompts: Sequence[Prompt], rewards: dict[str, TaskReward], rl: Any, seed: int,
                 tokenizer: Any, pad_id: int):
        from londinium.infer.chat_template import END_OF_TURN

        self.prompts, self.rewards, self.rl, self.seed = list(prompts), rewards, rl, seed
        self.tokenizer, self.pad_id = tokenizer, pad_id
        self.end_id: int = tokenizer.token_to_id(END_OF_TURN)
        self.rollouts = 0  # rollouts sampled so far: the position in the prompt order and the seeds
        self.current: RolloutBatch | None = None
        self.uses_left = 0  # further steps the current rollout serves
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None
        self.engine: Any = None
        self.rank, self.world_size = 0, 1  # under DDP this process samples every world_size-th prompt of a rollout

    def attach(self, policy: torch.nn.Module, reference: torch.nn.Module | None) -> None:
        from londinium.infer.engine import Engine

        rl = self.rl
        running = max(rl.prompts_per_step * rl.group_size, rl.pass_k)  # a rollout, or one held-out prompt's k samples
        longest = max(len(p.ids) for p in self.prompts)
        self.policy, self.reference = policy, reference
        # Every prompt of a rollout prefilled in the first engine step, and every sample decoded together.
        self.engine = Engine(policy, self.tokenizer, max_running=running,
                             max_step_tokens=running + rl.prompts_per_step * longest + 1, prefix_cache_tokens=0)

    # ---- sampling --------------------------------------------------------------------------------

    def sample(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[Any]:
        """The engine's completions of `prompts`, n samples each (the policy in eval mode, no dropout)."""
        from londinium.infer.sampling import SamplingParams

        rl = self.rl
        params = [SamplingParams(max_tokens=rl.max_new_tokens, temperature=rl.temperature, top_k=rl.top_k, n=n, seed=s,
                                 stop_token_ids=[self.end_id]) for s in seeds]
        was = self.policy.training
        self.policy.eval()
        self.engine.prefixes.clear()  # keys of older weights must not be reused
        try:
            with torch.no_grad():
                return self.engine.generate([p.ids for p in prompts], params)
        finally:
            self.policy.train(was)

    def answer_text(self, choice: Any) -> str:
        """What a reward reads: the answer, with `<|end|>` when the model ended its turn."""
        ended = bool(choice.token_ids) and choice.token_ids[-1] == self.end_id
        return choice.text + (END if ended else "")

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_prompts(self) -> list[Prompt]:
        """The prompts of the next rollout: epochs of the train prompts, each in its own shuffled order."""
        n, per = len(self.prompts), self.rl.prompts_per_step
        picked, orders = [], {}
        for k in range(self.rollouts * per, (self.rollouts + 1) * per):
            epoch = k // n
            if epoch not in orders:
                orders[epoch] = self._order(epoch)
            picked.append(self.prompts[orders[epoch][k % n]])
        return picked

    # ---- the loader ------------------------------------------------------------------------------

    def next_batch(self) -> RolloutBatch:
        if self.current is not None and self.uses_left > 0:
            self.uses_left -= 1
            self.current.stats = {**self.current.stats, "rollout_s": 0.0, "reused": 1.0}
            return self.current
        rl, G = self.rl, self.rl.group_size
        mine = range(self.rank, rl.prompts_per_step, self.world_size)  # whole groups: advantages stay on this process
        everyone = self.next_prompts()
        prompts = [everyone[j] for j in mine]
        t0 = time.perf_counter()
        # Seeds by the prompt's place in the whole rollout: any number of processes samples the same answers.
        completions = self.sample(prompts, G, [seed_of(self.seed, self.rollouts, j) for j in mine])
        rollout_s = time.perf_counter() - t0
        rewards = []
        for p, c in zip(prompts, completions):
            reward = self.rewards[p.item.task]
            rewards += [score(reward, self.answer_text(choice), p.item) for choice in c.choices]  # may refuse the step
        r = torch.tensor(rewards, dtype=torch.float32)
        seqs = [(p.ids, choice.token_ids) for p, c in zip(prompts, completions) for choice in c.choices]
        x, y = self._tensors(seqs)
        shaped, k = r, self.advantage_k()
        if rl.unlikeliness > 0:
            choices = [choice for c in completions for choice in c.choices]
            shaped = unlikeliness_rewards(r, torch.tensor([ch.mean_logprob for ch in choices]),
                                          [tuple(ch.token_ids) for ch in choices], G, rl.unlikeliness)
        batch = RolloutBatch(x, y, None, int((x != self.pad_id).sum()), advantages=pass_at_k_advantages(shaped, G, k, rl.scale_rewards))
        if rl.updates_per_batch > 1:
            batch.old_logp = self._logprobs(self.policy, x, y)
        if rl.beta > 0:
            batch.ref_logp = self._logprobs(self.reference, x, y)
        lengths = torch.tensor([len(a) for _, a in seqs], dtype=torch.float32)
        batch.stats = {"reward_mean": float(r.mean()), "reward_std": float(r.std()) if len(r) > 1 else 0.0,
                       "frac_reward_zero_std": zero_std_share(r, G), "response_length": float(lengths.mean()),
                       "ended_turn": float(sum(a[-1:] == [self.end_id] for _, a in seqs)) / len(seqs),
                       "rollout_s": rollout_s, "reused": 0.0, "advantage_k": float(k)}
        self.rollouts += 1
        self.current, self.uses_left = (batch, rl.updates_per_batch - 1)
        return batch

    def advantage_k(self) -> int:
        """The k of the advantages for the rollout about to be sampled: rl.advantage_k for its first
        rl.advantage_k_steps steps (all of them when 0), then 1."""
        rl = self.rl
        held = rl.advantage_k_steps == 0 or self.rollouts * rl.updates_per_batch < rl.advantage_k_steps
        return rl.advantage_k if held else 1

    def _tensors(self, seqs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, padded on the right: the targets are the answer's tokens, -1 elsewhere."""
        width = max(len(p) + len(a) for p, a in seqs) - 1
        x = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(seqs), width), -1, dtype=torch.long)
        for i, (p, a) in enumerate(seqs):
            full = torch.tensor(p + a, dtype=torch.long)
            x[i, :len(full) - 1] = full[:-1]
            y[i, len(p) - 1:len(full) - 1] = full[len(p):]
        return x, y

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[B, A] log-probabilities of the answers (answer form, as the loss reads them) under `model`."""
        was = model.training
        model.eval()
        try:
            return answer_logprobs(model, model, x, y, self.rl.group_size, self.rl.temperature, self.pad_id)[0].cpu()
        finally:
            model.train(was)

    # ---- resume ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rollouts": self.rollouts, "uses_left": self.uses_left}
        if self.current is not None and self.uses_left > 0:  # a checkpoint between the updates of one rollout
            b = self.current
            state["current"] = {"x": b.x.cpu(), "y": b.y.cpu(), "tokens": b.tokens, "advantages": b.advantages,
                                "old_logp": b.old_logp, "ref_logp": b.ref_logp, "stats": dict(b.stats)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts, self.uses_left = int(state["rollouts"]), int(state["uses_left"])
        c = state.get("current")
        if c is not None:  # checkpoints before the answer form held whole-row log-probabilities: the same values
            old, ref = (answer_form(c[k], c["y"]) for k in ("old_logp", "ref_logp"))
            c = {**c, "old_logp": old, "ref_logp": ref}
        self.current = None if c is None else RolloutBatch(c["x"], c["y"], None, int(c["tokens"]), advantages=c["advantages"],
                                                           old_logp=c["old_logp"], ref_logp=c["ref_logp"], stats=dict(c["stats"]))
