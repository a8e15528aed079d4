"""Knowledge distillation: the loss, the frozen teacher, and how `londinium distill` makes its run.

    loss = distill_loss(student_logits, teacher_logits, labels, alpha=0.5, temperature=2.0, kl="forward")
    teacher = Teacher.open(ws, cfg, log)            # a trained run of this workspace, frozen, eval mode

The loss is Hinton et al.'s (2015): `alpha * CE(labels) + (1 - alpha) * T^2 * KL`, both
distributions softened by the temperature T. The T^2 keeps the soft term's gradient the same size
whatever T is (its gradient with respect to the student's logits is (q_T - p_T) / T, and q_T - p_T
itself shrinks as 1/T), so alpha means the same share at every temperature. Forward KL
(teacher || student) is Hinton's, mass-covering; reverse KL (student || teacher) is MiniLLM's,
mode-seeking. A workspace has one tokenizer, so a teacher's logits and the student's index the same
vocabulary: no mapping between vocabularies is needed, only the check that the teacher was trained
on this tokenizer.

The student run is an ordinary run of the one trainer (`objectives.Distill` reads the shards as
pre-training does, or a top-k cache of the teacher (`distill_cache.py`, `topk_distill_loss` here);
`objectives.DistillSFT` reads SFT's conversations; `distill_run.py` makes its config); its config records the teacher, the checkpoint it resolved to and that
checkpoint's sha256, so a resumed or re-run student is compared against the same teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from londinium.config import Config, load_config
from londinium.errors import ConfigError
from londinium.workspace import Workspace


# The log-mass below which a tail counts as none: e^-80 keeps 0 x log 0 (k = V) out of the KL.
TAIL_FLOOR = -80.0


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float,
                 kl: str = "forward", weights: torch.Tensor | None = None) -> torch.Tensor:
    """`alpha * CE(labels) + (1 - alpha) * T^2 * KL`, averaged over the positions whose label is not -1
    (or, with `weights`, each position's term times its weight, summed: the SFT objective's mask).

    `student`, `teacher`: logits `[..., V]`; `labels`: `[...]`. With alpha = 1 it is exactly the
    cross-entropy (the teacher's logits are not read), with alpha = 0 only the soft term."""
    student, labels = student.float().reshape(-1, student.size(-1)), labels.reshape(-1)
    if alpha == 1:
        return cross_entropy(student, labels, weights)
    teacher = teacher.float().reshape(-1, teacher.size(-1))
    # The widest tensors of a step are [positions, V]: no division at T = 1, one log-softmax of the
    # student for both terms there, and no label term at alpha = 0 (GKD's setting).
    log_q = F.log_softmax(_soften(student, temperature), dim=-1)
    nll = None
    if alpha > 0:
        nll = (F.nll_loss(log_q, labels, ignore_index=-1, reduction="none") if temperature == 1
               else F.cross_entropy(student, labels, ignore_index=-1, reduction="none"))
    return _combine(nll, labels, log_q, F.log_softmax(_soften(teacher, temperature), dim=-1), alpha, temperature, kl, weights)


def _soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1 else logits / temperature


def topk_distill_loss(student: torch.Tensor, top_logprobs: torch.Tensor, top_ids: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float, kl: str = "forward", weights: torch.Tensor | None = None) -> torch.Tensor:
    """`distill_loss` against a teacher known only by its top-k (a `distill_cache`): the soft term is the
    KL between two distributions over k + 1 outcomes, the teacher's k most likely ids and "any other id".

    `top_logprobs` `[..., k + 1]`: the teacher's log-probabilities (at T = 1) of its top-k ids `top_ids`
    `[..., k]`, then the log of the mass of every other id (the tail). The student's k + 1 outcomes are
    its own log-probabilities of the same ids and of the rest. Both are softened by T over these k + 1
    outcomes (`bucket / T`, renormalised), so at T = 1 the term is exactly the full KL of the two
    distributions coarsened to those outcomes; at T > 1 the tail is softened as one outcome, not id by
    id (the teacher's ids beyond k are not known)."""
    student, labels = student.float().reshape(-1, student.size(-1)), labels.reshape(-1)
    if alpha == 1:
        return cross_entropy(student, labels, weights)
    k = top_ids.size(-1)
    ids = top_ids.reshape(-1, k).long()
    log_q = F.log_softmax(student, dim=-1)  # once, for both terms: the step's widest tensors are [positions, V]
    nll = F.nll_loss(log_q, labels, ignore_index=-1, reduction="none")
    top = log_q.gather(-1, ids)
    # The rest's mass summed id by id: 1 - (the top k's) would lose it to float32 rounding when it is tiny.
    tail = torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
    tail = tail.clamp(min=TAIL_FLOOR)  # as the cache floors the teacher's: no tail at all (k = V) is not -inf
    buckets_q = torch.cat([top, tail], dim=-1)
    buckets_p = top_logprobs.float().reshape(-1, k + 1)
    return _combine(nll, labels, F.log_softmax(buckets_q / temperature, dim=-1),
                    F.log_softmax(buckets_p / temperature, dim=-1), alpha, temperature, kl, weights)


def cross_entropy(student: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The labels' cross-entropy of logits `[N, V]`: the mean over labels not -1, or with `weights`
    (the SFT objective's per-target shares) the weighted sum, as `objectives.SFT` computes it."""
    if weights is None:
        return F.cross_entropy(student, labels, ignore_index=-1)
    nll = F.cross_entropy(student, labels, ignore_index=-1, reduction="none")
    return (nll * weights.reshape(-1)).sum()


def _combine(nll: torch.Tensor | None, labels: torch.Tensor, log_q: torch.Tensor, log_p: torch.Tensor, alpha: float,
             temperature: float, kl: str, weights: torch.Tensor | None) -> torch.Tensor:
    """alpha x CE + (1 - alpha) x T^2 x KL over the positions: `nll` the labels' cross-entropy per
    position (0 where the label is -1; None at alpha = 0), the softened student `log_q` and teacher
    `log_p` a row per position over the same outcomes."""
    if kl == "forward":
        divergence = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        divergence = (log_q.exp() * (log_q - log_p)).sum(-1)
    soft = (1 - alpha) * temperature ** 2
    if weights is not None:  # the SFT mask: weight 0 off the assistant's tokens, for both terms
        w = weights.reshape(-1)
        hard = alpha * (nll * w).sum() if nll is not None else 0.0
        return hard + soft * (divergence * w).sum()
    keep = (labels != -1).float()  # a weighted mean rather than a masked copy of [positions, V]
    hard = alpha * nll.sum() if nll is not None else 0.0
    return (hard + soft * (divergence * keep).sum()) / keep.sum().clamp(min=1)


@dataclass
class Teacher:
    """A trained run's checkpoint as a frozen model: eval mode (no dropout), no gradients."""

    model: torch.nn.Module
    run: str
    checkpoint: str  # as the run records it: 'step-000600' for one of the run's own, else its directory
    path: Path
    sha256: str  # of its weights file, as its meta.json recorded it

    @classmethod
    def open(cls, ws: Workspace, cfg: Config, student_tokenizer_sha256: str) -> Teacher:
        from londinium import checkpoint as ck
        from londinium.export.run import resolve_checkpoint
        from londinium.model.gpt import GPT

        d = cfg.distill
        if not d.teacher:
            raise ConfigError("train.objective = 'distill' needs distill.teacher, a trained run of this workspace: "
                              "`londinium distill --teacher RUN`")
        ckpt = resolve_checkpoint(ws, d.teacher, d.teacher_checkpoint)
        student = cfg.train.run_name
        trained_with = ckpt.meta.get("tokenizer_sha256")
        if trained_with != student_tokenizer_sha256:
            raise ck.CheckpointError(
                f"distill: teacher run '{d.teacher}' ({ckpt.path.name}) was trained with tokenizer sha256 {str(trained_with)[:12]}, "
                f"student run '{student}' uses {student_tokenizer_sha256[:12]} (the workspace's): their token ids mean different "
                "tokens; choose a teacher trained on this workspace's current tokenizer, or retrain it")
        sha256 = ckpt.meta.get("files", {}).get(ck.MODEL_FILE, {}).get("sha256", "")
        if d.teacher_sha256 and d.teacher_sha256 != sha256:
            raise ck.CheckpointError(
                f"distill: student run '{student}' was started with teacher '{d.teacher}' {d.teacher_checkpoint} of sha256 "
                f"{d.teacher_sha256[:12]}, which is now {sha256[:12]}: the teacher changed; restore it, or start a separate "
                "student with --name NAME (or --force)")
        trained = load_config(ckpt.path / ck.CONFIG_FILE).model
        if trained.vocab_size != cfg.model.vocab_size:
            raise ConfigError(f"distill: teacher run '{d.teacher}' has model.vocab_size = {trained.vocab_size}, student run "
                              f"'{student}' {cfg.model.vocab_size}: their logits must index the same ids; set the student's "
                              f"model.vocab_size = {trained.vocab_size}")
        if trained.context < cfg.model.context:
            raise ConfigError(f"distill: teacher run '{d.teacher}' reads {trained.context} tokens (model.context), student run "
                              f"'{student}' {cfg.model.context}: the teacher must see the student's whole window; "
                              f"set the student's model.context <= {trained.context}")
        model = GPT(trained)
        ck.load_weights(model, ckpt)
        model.eval().requires_grad_(False)
        own = ckpt.path.parent.resolve() == ws.checkpoints_dir(d.teacher).resolve()
        return cls(model, d.teacher, ckpt.path.name if own else str(ckpt.path), ckpt.path, sha256)

    @torch.inference_mode()  # lighter than no_grad (no version counters): the result is only read
    def logits(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits `[B, T, V]`, or `[N, V]` at the positions `keep` marks (`GPT.forward`)."""
        if next(self.model.parameters()).device != x.device:  # once: onto the device the student trains on
            self.model.to(x.device)
        logits, _ = self.model(x, keep=keep)
        return logits

    def num_params(self) -> int:
        return self.model.num_params()

    def describe(self, d: Any) -> str:
        """The banner's line: which teacher, and the loss `d` ([distill]) puts on it."""
        return (f"distill: teacher run '{self.run}' {self.checkpoint} ({self.num_params():,} parameters, frozen), "
                f"alpha {d.alpha:g} on the labels, {d.kl} KL at temperature {d.temperature:g}")


def open_teacher(ws: Workspace, cfg: Config, tokenizer_sha256: str) -> Teacher:
    """The student run's teacher, opened and checked; the run records what it is distilled from: the
    resolved checkpoint (a later 'best' of the teacher is another teacher) and its weights' hash, both
    into its config.toml and fingerprint."""
    teacher = Teacher.open(ws, cfg, tokenizer_sha256)
    cfg.distill.teacher_checkpoint, cfg.distill.teacher_sha256 = teacher.checkpoint, teacher.sha256
    return teacher
