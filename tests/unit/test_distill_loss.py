"""The distillation loss (`train/distill.py`) against a hand computation, and the T^2 factor's job."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from londinium.train.distill import distill_loss

STUDENT = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
TEACHER = [[2.0, -0.5, 0.0], [0.0, 1.0, 1.5]]
LABELS = [0, 2]


def softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def by_hand(alpha: float, t: float, kl: str) -> float:
    """alpha * mean CE + (1 - alpha) * T^2 * mean KL, written out position by position."""
    ce = kls = 0.0
    for s, te, y in zip(STUDENT, TEACHER, LABELS):
        ce += -math.log(softmax(s, 1.0)[y])
        q, p = softmax(s, t), softmax(te, t)
        a, b = (p, q) if kl == "forward" else (q, p)
        kls += sum(ai * math.log(ai / bi) for ai, bi in zip(a, b))
    n = len(LABELS)
    return alpha * ce / n + (1 - alpha) * t * t * kls / n


def loss(alpha: float, t: float, kl: str = "forward", labels: list[int] = LABELS) -> torch.Tensor:
    return distill_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(labels), alpha, t, kl)


@pytest.mark.parametrize("kl", ["forward", "reverse"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_the_loss_is_the_hand_computation(alpha, t, kl):
    assert loss(alpha, t, kl).item() == pytest.approx(by_hand(alpha, t, kl), rel=1e-6)


def test_the_two_directions_differ_and_agree_only_when_the_student_is_the_teacher():
    assert loss(0.0, 2.0, "forward").item() != pytest.approx(loss(0.0, 2.0, "reverse").item(), rel=1e-3)
    same = torch.tensor(TEACHER)
    for kl in ("forward", "reverse"):
        assert distill_loss(same, same, torch.tensor(LABELS), 0.0, 2.0, kl).item() == pytest.approx(0.0, abs=1e-7)


def test_alpha_one_is_exactly_the_cross_entropy_and_reads_no_teacher():
    student = torch.tensor(STUDENT)
    nan_teacher = torch.full_like(student, float("nan"))
    got = distill_loss(student, nan_teacher, torch.tensor(LABELS), 1.0, 2.0)
    assert torch.equal(got, F.cross_entropy(student, torch.tensor(LABELS)))


def test_positions_labelled_minus_one_are_left_out_of_both_terms():
    only_first = loss(0.5, 2.0, labels=[0, -1])
    ce = -math.log(softmax(STUDENT[0], 1.0)[0])
    p, q = softmax(TEACHER[0], 2.0), softmax(STUDENT[0], 2.0)
    kl = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert only_first.item() == pytest.approx(0.5 * ce + 0.5 * 4 * kl, rel=1e-6)


def soft_gradient_norm(t: float, scaled: bool) -> float:
    """|d loss / d student logits| of the soft term alone (alpha 0), with or without its T^2."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(64, 512, generator=g, dtype=torch.float64).requires_grad_()
    teacher = torch.randn(64, 512, generator=g, dtype=torch.float64)
    labels = torch.zeros(64, dtype=torch.long)
    loss = distill_loss(student, teacher, labels, 0.0, t) / (1.0 if scaled else t * t)
    (grad,) = torch.autograd.grad(loss, student)
    return grad.norm().item()


def test_the_t_squared_factor_keeps_the_soft_gradient_scale_across_temperatures():
    """Hinton et al.: the soft term's gradient shrinks as 1/T^2, so it is multiplied by T^2 to keep
    alpha's meaning when T changes. With it the gradient's size stays within a small factor over
    T in {1, 2, 4}; without it, it falls by about T^2."""
    scaled = [soft_gradient_norm(t, True) for t in (1.0, 2.0, 4.0)]
    unscaled = [soft_gradient_norm(t, False) for t in (1.0, 2.0, 4.0)]
    assert max(scaled) / min(scaled) < 1.5
    assert unscaled[0] / unscaled[2] > 8


# ---- against a top-k cache: k + 1 outcomes ---------------------------------------------------------

def test_the_top_k_loss_is_the_hand_computation_over_k_ids_and_the_tail():
    """k = 1 of 3 ids: the teacher's top id and "the other two", softened by T over those 2 outcomes."""
    from londinium.train.distill import topk_distill_loss
    from londinium.train.distill_cache import top_k_buckets

    t, alpha = 2.0, 0.5
    logprobs, ids = top_k_buckets(torch.tensor(TEACHER), 1)
    got = topk_distill_loss(torch.tensor(STUDENT), logprobs, ids, torch.tensor(LABELS), alpha, t)
    ce = kls = 0.0
    for s, te, y in zip(STUDENT, TEACHER, LABELS):
        p, q = softmax(te, 1.0), softmax(s, 1.0)
        top = max(range(3), key=lambda i: p[i])
        pb, qb = softmax([math.log(p[top]), math.log(1 - p[top])], t), softmax([math.log(q[top]), math.log(1 - q[top])], t)
        kls += sum(a * math.log(a / b) for a, b in zip(pb, qb))
        ce += -math.log(q[y])
    assert ids.flatten().tolist() == [0, 2]
    assert got.item() == pytest.approx(alpha * ce / 2 + (1 - alpha) * t * t * kls / 2, rel=1e-5)


def test_with_every_id_cached_the_top_k_loss_is_the_full_loss_at_t_one():
    from londinium.train.distill import topk_distill_loss
    from londinium.train.distill_cache import top_k_buckets

    logprobs, ids = top_k_buckets(torch.tensor(TEACHER), 3)  # no tail: its mass is floored, not NaN
    got = topk_distill_loss(torch.tensor(STUDENT), logprobs, ids, torch.tensor(LABELS), 0.3, 1.0)
    assert got.item() == pytest.approx(loss(0.3, 1.0).item(), rel=1e-5)


def test_sft_weights_mask_both_terms():
    """With SFT's per-target weights a position of weight 0 adds nothing, whatever the teacher says there."""
    weights = torch.tensor([0.5, 0.0])
    other_teacher = torch.tensor([TEACHER[0], [9.0, -9.0, 0.0]])
    a = distill_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), 0.5, 2.0, weights=weights)
    b = distill_loss(torch.tensor(STUDENT), other_teacher, torch.tensor(LABELS), 0.5, 2.0, weights=weights)
    assert torch.equal(a, b)
    ce = -math.log(softmax(STUDENT[0], 1.0)[0])
    p, q = softmax(TEACHER[0], 2.0), softmax(STUDENT[0], 2.0)
    kl = sum(x * math.log(x / y) for x, y in zip(p, q))
    assert a.item() == pytest.approx(0.5 * (0.5 * ce + 0.5 * 4 * kl), rel=1e-6)


def test_the_top_k_loss_gradient_is_the_exact_tails_even_when_the_tail_is_small():
    """The student's tail is summed id by id: in float32, with its top k holding all but ~1e-5 of its
    mass, the loss's gradient is the float64 one's (1 - the top k's mass would be off by 0.3%)."""
    from londinium.train.distill import _combine, topk_distill_loss
    from londinium.train.distill_cache import top_k_buckets

    g = torch.Generator().manual_seed(1)
    student = torch.randn(32, 64, generator=g, dtype=torch.float64)
    student[:, :4] += 16.0  # four ids hold all but ~1e-6 of the mass
    labels = torch.randint(0, 64, (32,), generator=g)
    teacher = torch.randn(32, 64, generator=g, dtype=torch.float64)
    teacher[:, :4] += 12.0  # the teacher's top 4 are those ids too: the tail is the small rest
    logprobs, ids = top_k_buckets(teacher, 4)

    def by_ids(s):
        log_q = F.log_softmax(s, -1)
        tail = torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), -1, keepdim=True)
        bq = torch.cat([log_q.gather(-1, ids), tail], -1)
        nll = F.nll_loss(log_q, labels, reduction="none")
        return _combine(nll, labels, F.log_softmax(bq / 2, -1), F.log_softmax(logprobs.double() / 2, -1), 0.5, 2.0, "forward", None)

    grads = []
    for fn, s in ((lambda s: topk_distill_loss(s, logprobs, ids, labels, 0.5, 2.0), student.float()), (by_ids, student)):
        s = s.clone().requires_grad_()
        fn(s).backward()
        grads.append(s.grad.double())
    assert (grads[0] - grads[1]).abs().max() < 1e-6 * grads[1].abs().max() * 100  # float32's rounding, not 0.3%
