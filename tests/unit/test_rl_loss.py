"""GRPO's arithmetic against values worked out by hand: group advantages (std-scaled and not), the
advantages of the best of k samples (against Chen et al.'s closed form and against enumerating every
k-subset), the unlikeliness reward, the policy loss on-policy, clipped and with the k3 KL, its three
normalisations, and pass@k."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from londinium.rl.loss import EPS, group_advantages, pass_at_k_advantages, policy_loss, unlikeliness_rewards, zero_std_share
from londinium.rl.objective import pass_at_k

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # two groups of 4; the second all equal


def test_advantages_are_reward_minus_group_mean_over_its_std():
    # Group 1: mean 0.5, unbiased std sqrt(4 x 0.25 / 3) = 0.57735; group 2: no spread, advantage 0.
    std = math.sqrt(1 / 3)
    want = [0.5 / (std + EPS), -0.5 / (std + EPS), -0.5 / (std + EPS), 0.5 / (std + EPS), 0, 0, 0, 0]
    assert group_advantages(REWARDS, 4, scale=True).tolist() == pytest.approx(want, abs=1e-6)
    assert want[0] == pytest.approx(0.86588, abs=1e-5)


def test_unscaled_advantages_are_reward_minus_group_mean():
    assert group_advantages(REWARDS, 4, scale=False).tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    assert group_advantages(torch.tensor([3.0, 1.0, 2.0, 2.0]), 2, scale=False).tolist() == [1.0, -1.0, 0.0, 0.0]


def test_frac_reward_zero_std_counts_groups_without_spread():
    assert zero_std_share(REWARDS, 4) == 0.5
    assert zero_std_share(torch.tensor([0.0, 0.0, 0.2, 0.2, 0.0, 1.0]), 2) == pytest.approx(2 / 3)


def test_pass_at_k_advantages_of_right_and_wrong_answers_are_chen_et_als_closed_form():
    # Group [1, 0, 0, 0], k = 2: mean best-of-2 reward R = 1 - C(3,2)/C(4,2) = 1/2, std sqrt(R(1-R)) = 1/2;
    # a right answer gets (1 - R)/std = 1, a wrong one (1 - R - C(2,1)/C(3,1))/std = -1/3.
    # Group [1, 1, 0, 0]: R = 5/6; right (1/6)/std, wrong (1/6 - 1/3)/std, std = sqrt(5/36).
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    s = math.sqrt(5 / 36)
    want = [1.0, -1 / 3, -1 / 3, -1 / 3, (1 / 6) / s, (1 / 6) / s, (-1 / 6) / s, (-1 / 6) / s]
    assert pass_at_k_advantages(r, 4, 2).tolist() == pytest.approx(want, abs=1e-3)  # EPS in the divisor
    assert pass_at_k_advantages(r, 4, 2, scale=False).tolist() == pytest.approx([0.5, -1 / 6, -1 / 6, -1 / 6, 1 / 6, 1 / 6, -1 / 6, -1 / 6])
    # A group whose every k-subset holds a right answer teaches nothing, though its rewards differ.
    assert pass_at_k_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), 4, 2).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_pass_at_k_advantages_are_the_mean_over_k_subsets_of_their_best_reward(k):
    # Enumerated: each sample's mean best reward over the k-subsets holding it, minus the mean over all
    # k-subsets, over their (population) standard deviation; continuous rewards with a tie, any order.
    rewards = torch.tensor([0.3, 0.9, 0.1, 0.3, 0.7, 0.0, 0.2, 0.3, 0.8, 0.5, 0.5, 0.6])
    G = 6
    want = []
    for g in rewards.view(-1, G).tolist():
        best = [max(g[i] for i in s) for s in itertools.combinations(range(G), k)]
        mean = sum(best) / len(best)
        std = math.sqrt(sum((b - mean) ** 2 for b in best) / len(best))
        for i in range(G):
            mine = [max(g[j] for j in s) for s in itertools.combinations(range(G), k) if i in s]
            want.append((sum(mine) / len(mine) - mean) / (std + EPS) if k > 1 else None)
    got = pass_at_k_advantages(rewards, G, k).tolist()
    if k == 1:  # GRPO itself, with its unbiased standard deviation
        assert got == group_advantages(rewards, G).tolist()
    else:
        assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="between 1 and the group size"):
        pass_at_k_advantages(rewards, G, G + 1)


def test_unlikeliness_scales_rewards_by_the_answers_likelihood_rank_in_its_group():
    # Ranks by mean log-probability, 0 the least likely: -3 -> 0, -2 -> 1, and the same answer sampled
    # twice (-0.1) shares ranks 2 and 3 -> 2.5; reward x (1 - 0.25 x rank / 4). Wrong answers stay 0.
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    logp = torch.tensor([-0.1, -0.1, -2.0, -3.0, -0.5, -0.2, -0.9, -0.4])
    answers = ["a", "a", "b", "c", "x", "y", "z", "w"]
    got = unlikeliness_rewards(rewards, logp, answers, 4, 0.25).tolist()
    assert got == pytest.approx([1 - 0.25 * 2.5 / 4, 1 - 0.25 * 2.5 / 4, 0, 1, 1 - 0.25 * 1 / 4, 0, 0, 0])
    assert unlikeliness_rewards(rewards, logp, answers, 4, 0.0).tolist() == rewards.tolist()


# Two answers: the first of 2 tokens (third position is padding), the second of 3.
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
ADV = torch.tensor([1.0, -2.0])


def _close(got: torch.Tensor, want: list) -> None:
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=1e-6)


def _logp() -> torch.Tensor:
    return torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -1.5, -3.0]], requires_grad=True)


def test_on_policy_loss_is_minus_the_advantage_and_its_gradient_the_policy_gradient():
    logp = _logp()
    loss, stats = policy_loss(logp, None, None, ADV, MASK, clip_eps=0.2, beta=0.0, loss_type="grpo", max_new_tokens=4)
    # ratio 1: each token's loss is -A; per answer the mean over its tokens; then the mean of answers.
    assert float(loss.detach()) == pytest.approx((-1.0 + 2.0) / 2)
    loss.backward()
    # d loss / d logp = -A / (tokens of the answer) / (answers); padding gets nothing.
    _close(logp.grad, [[-0.25, -0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert stats["clip_share"] == 0 and "kl" not in stats


@pytest.mark.parametrize("loss_type, grad_first, grad_second", [
    ("dr_grpo", -1 / (2 * 4), 2 / (2 * 4)),  # the sum over answers x max_new_tokens (4)
    ("token", -1 / 5, 2 / 5),  # the sum over the batch's 5 answer tokens
])
def test_token_sum_normalisations(loss_type, grad_first, grad_second):
    logp = _logp()
    loss, _ = policy_loss(logp, None, None, ADV, MASK, clip_eps=0.2, beta=0.0, loss_type=loss_type, max_new_tokens=4)
    total = 2 * -1.0 + 3 * 2.0  # -A summed over the answer tokens
    assert float(loss.detach()) == pytest.approx(total / (8 if loss_type == "dr_grpo" else 5))
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([grad_first, grad_first, 0.0])
    assert logp.grad[1].tolist() == pytest.approx([grad_second] * 3)


def test_a_reused_batch_clips_the_ratio_where_it_would_gain_past_the_range():
    logp = _logp()
    # Ratios: first answer exp(0.5) = 1.6487 on both tokens; second answer exp(0.5), exp(-0.5), 1.
    old = logp.detach() - torch.tensor([[0.5, 0.5, 0.0], [0.5, -0.5, 0.0]])
    loss, stats = policy_loss(logp, old, None, ADV, MASK, clip_eps=0.2, beta=0.0, loss_type="grpo", max_new_tokens=4)
    e = math.exp(0.5)
    # A = +1, ratio 1.6487: min(1.6487, 1.2) = 1.2 (clipped: no gradient). A = -2: min(-2r, -2 clip(r)):
    # r = 1.6487 -> -3.297 (unclipped); r = 0.6065 -> min(-1.213, -1.6) = -1.6 (clipped); r = 1 -> -2.
    first = -1.2
    second = (2 * e + 2 * 0.8 + 2 * 1.0) / 3
    assert float(loss.detach()) == pytest.approx((first + second) / 2, abs=1e-6)
    loss.backward()
    # d(2r)/d logp = 2r where unclipped, then / 3 tokens / 2 answers.
    _close(logp.grad, [[0.0, 0.0, 0.0], [2 * e / 6, 0.0, 2 / 6]])
    assert stats["clip_share"] == pytest.approx(3 / 5)


def test_the_kl_penalty_is_k3_per_token_weighted_by_beta():
    logp = _logp()
    ref = logp.detach() + torch.tensor([[0.5, 0.0, 7.0], [-0.5, 0.0, 0.0]])
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731
    loss, stats = policy_loss(logp, None, ref, torch.zeros(2), MASK, clip_eps=0.2, beta=0.1, loss_type="grpo", max_new_tokens=4)
    want = 0.1 * ((k3(0.5) + 0) / 2 + (k3(-0.5) + 0 + 0) / 3) / 2  # advantage 0: the penalty alone; padding ignored
    assert float(loss.detach()) == pytest.approx(want, abs=1e-7)
    assert stats["kl"] == pytest.approx((k3(0.5) + k3(-0.5)) / 5, abs=1e-6)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp)
    assert logp.grad[0, 0] == pytest.approx(0.1 * (1 - math.exp(0.5)) / 2 / 2, abs=1e-6)
    assert logp.grad[0, 2] == 0


def test_pass_at_k_is_the_unbiased_estimate():
    assert pass_at_k(8, 0, 1) == 0 and pass_at_k(8, 8, 8) == 1
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 8) == 1.0  # n = k: any correct sample
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - (7 * 6) / (10 * 9))
