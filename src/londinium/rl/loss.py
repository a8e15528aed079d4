"""The arithmetic of GRPO: group-relative advantages and the clipped policy loss with a KL penalty.

    adv = group_advantages(rewards, group_size, scale=True)          # [B]: (r - group mean) / (group std + eps)
    adv = pass_at_k_advantages(rewards, group_size, k=4, scale=True) # [B]: the same for the best of k samples
    rewards = unlikeliness_rewards(rewards, mean_logp, answers, group_size, weight=0.25)  # correct but likely: less
    loss, stats = policy_loss(logp, old_logp, ref_logp, adv, mask, clip_eps=0.2, beta=0.04, loss_type="grpo",
                              max_new_tokens=16)

Shao et al. 2024 (DeepSeekMath) as TRL's GRPOTrainer computes it: the group's standard deviation is
torch's (unbiased); the ratio exp(logp - old_logp) is clipped to [1 - eps, 1 + eps] and the smaller
of the clipped and unclipped objectives taken (PPO); the KL to the reference is the k3 estimator
exp(ref - logp) - (ref - logp) - 1 (Schulman's, unbiased and never negative), per token. On-policy
(old_logp is logp detached) the ratio is 1 and its gradient is the plain policy gradient A x grad logp.

How token losses become one number (`loss_type`):
- "grpo": each answer's tokens averaged, then the answers (the paper's; long answers weigh less per token);
- "dr_grpo": the sum over every answer token / (answers x max_new_tokens), a constant (Liu et al. 2025,
  "Understanding R1-Zero-Like Training": no length bias); with scale=False this is their Dr. GRPO;
- "token": the sum / the answer tokens of the batch (DAPO's and nanochat's token-level mean).

Two variants that keep what plain GRPO squeezes out (it sharpens: it raises pass@1 by moving mass onto
answers the policy already likes, and loses pass@k):
- `pass_at_k_advantages`: the advantages of the best of k samples instead of each sample's own (Walder &
  Karkhanis 2025, "Pass@K Policy Optimization"; Chen et al. 2025, "Pass@k Training"). Each sample gets the
  mean, over the k-subsets of its group that contain it, of the subset's best reward, minus the mean over all
  k-subsets (divided by their standard deviation when scaled). For 0/1 rewards a right answer gets
  1 - pass@k and a wrong one is pushed down only by the chance that the other k - 1 of its subset are all
  wrong too: a prompt the policy already solves in k tries teaches little, so mass is not piled onto its
  favourite answer. k = 1 is GRPO.
- `unlikeliness_rewards`: each reward scaled by 1 - weight x (rank / G), rank by the policy's mean token
  log-probability in the group, 0 for the least likely (He et al. 2025, "Rewarding the Unlikely"): a right
  answer the policy found unlikely keeps its reward, the policy's favourite gives some up.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import torch

EPS = 1e-4  # TRL's: a group whose rewards are all equal gets advantage 0, not 0 / 0


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each sample's reward minus its group's mean (groups are consecutive runs of `group_size`),
    divided by the group's standard deviation + EPS when `scale`."""
    groups = rewards.float().view(-1, group_size)
    adv = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (groups.std(dim=1, keepdim=True) + EPS)
    return adv.view(-1)


def pass_at_k_advantages(rewards: torch.Tensor, group_size: int, k: int, scale: bool = True) -> torch.Tensor:
    """Group-relative advantages of the best of k samples (max@k; pass@k for 0/1 rewards), computed exactly
    over every k-subset of each group. Sorted ascending, the sample at place j (from 0) is the best of a random
    k-subset with probability C(j, k-1) / C(G, k); a subset containing sample i is best at i with C(i, k-1)
    of the C(G-1, k-1) such subsets, at a better j with C(j-1, k-2)."""
    if not 1 <= k <= group_size:
        raise ValueError(f"k = {k} must be between 1 and the group size {group_size}")
    if k == 1:
        return group_advantages(rewards, group_size, scale)
    G = group_size
    groups = rewards.double().view(-1, G)
    ranked, order = groups.sort(dim=1)
    best = torch.tensor([_comb(j, k - 1) for j in range(G)], dtype=torch.float64) / _comb(G, k)
    mean = ranked @ best  # [P]: the mean best-of-k reward over the group's k-subsets
    std = (ranked.pow(2) @ best - mean.pow(2)).clamp(min=0).sqrt()
    # contains[i, j]: of the k-subsets containing place i, the share whose best is at place j.
    contains = torch.tensor([[_comb(i, k - 1) if j == i else _comb(j - 1, k - 2) if j > i else 0 for j in range(G)]
                             for i in range(G)], dtype=torch.float64) / _comb(G - 1, k - 1)
    adv_ranked = ranked @ contains.T - mean.unsqueeze(1)
    if scale:
        adv_ranked = adv_ranked / (std.unsqueeze(1) + EPS)
    adv = torch.empty_like(adv_ranked).scatter_(1, order, adv_ranked)
    return adv.float().view(-1)


def unlikeliness_rewards(rewards: torch.Tensor, mean_logp: torch.Tensor, answers: Sequence[Hashable], group_size: int,
                         weight: float) -> torch.Tensor:
    """Rewards x (1 - weight x rank / G), rank 0 for the answer of the group with the lowest mean token
    log-probability (`mean_logp`). The same answer sampled twice (equal `answers`) shares the mean of its
    ranks, so copies of one answer are treated alike (He et al. rank by argsort, which orders ties at random)."""
    out = rewards.float().clone().view(-1, group_size)
    logp = mean_logp.double().view(-1, group_size)
    for g in range(out.size(0)):
        keys = list(answers[g * group_size:(g + 1) * group_size])
        rank = torch.empty(group_size, dtype=torch.float64)
        rank[logp[g].argsort()] = torch.arange(group_size, dtype=torch.float64)
        for key in set(keys):
            same = [i for i, a in enumerate(keys) if a == key]
            rank[same] = rank[same].mean()
        out[g] = out[g] * (1 - weight * rank / group_size).float()
    return out.view(-1)


def _comb(n: int, k: int) -> int:
    return math.comb(n, k) if 0 <= k <= n else 0


def zero_std_share(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rewards are all equal: they give no learning signal (TRL's frac_reward_zero_std)."""
    groups = rewards.float().view(-1, group_size)
    return float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float, beta: float, loss_type: str, max_new_tokens: int
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a batch of answers ([B, T] per-token log-probabilities of the sampled tokens under
    the policy, `mask` 1 on answer tokens) and what it measured: KL (when beta > 0) and the share of
    clipped tokens. `old_logp` None: on-policy (the ratio is exp(logp - logp.detach()) = 1)."""
    mask = mask.float()
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    a = advantages.unsqueeze(1)
    unclipped, clipped = ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a
    per_token = -torch.min(unclipped, clipped)
    stats: dict[str, float] = {}
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference log-probabilities")
        diff = ref_logp - logp
        kl = torch.exp(diff) - diff - 1
        per_token = per_token + beta * kl
        stats["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
    # Tokens whose clipped term won the min (no gradient through them), as TRL's clip_ratio counts them.
    active = ((ratio > 1 + clip_eps) & (a > 0)) | ((ratio < 1 - clip_eps) & (a < 0))
    stats["clip_share"] = float((active.float() * mask).sum() / mask.sum().clamp(min=1))
    per_token = per_token * mask
    if loss_type == "grpo":
        loss = (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        loss = per_token.sum() / (mask.size(0) * max_new_tokens)
    elif loss_type == "token":
        loss = per_token.sum() / mask.sum().clamp(min=1)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}: 'grpo', 'dr_grpo' or 'token'")
    return loss, stats


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, T] log-probabilities of `targets` under softmax(logits / temperature), [B, T] entropies):
    the distribution the rollout sampled from (before top-k), as TRL scores it. Targets of -1 read 0."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = logp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return picked, entropy
