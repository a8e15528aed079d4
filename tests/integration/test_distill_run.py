"""`londinium distill` on the tiny workspace: a student trained against a frozen teacher run is an
ordinary run (checkpoints, metrics) that records its teacher; alpha = 1 is plain training bit for
bit; a teacher of another tokenizer, or none, is one named line. (Its bit-exact resume after SIGKILL
is in test_train_resume.py.)"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tomllib

import pytest
from train_helpers import assert_same_weights, checkpoint_steps, cli_in_process, distill_args, final_weights, logged, train_args

from londinium.checkpoint import META_FILE, MODEL_FILE

STEPS = 12


@pytest.fixture(scope="module")
def teacher(tiny_workspace):
    """A plain run of the helpers' tiny shape, STEPS steps: the teacher, and alpha = 1's reference."""
    rc, _, err = cli_in_process(train_args(tiny_workspace, "teacher", STEPS))
    assert rc == 0, err
    return tiny_workspace


def test_a_student_is_trained_against_the_teacher_and_records_it(teacher):
    ws = teacher
    rc, out, err = cli_in_process(distill_args(ws, "teacher", "student", STEPS, "--teacher-checkpoint", "latest",
                                               extra=["model.n_layer=1", "model.n_embd=32", "distill.kl=reverse"]))
    assert rc == 0, err
    assert "distill: teacher run 'teacher' step-000012" in out and "reverse KL at temperature 2" in out
    assert checkpoint_steps(ws, "student") == [6, 12]
    train_rows, val_rows = logged(ws, "student")
    assert [s for s, _ in train_rows] == list(range(1, STEPS + 1)) and [s for s, _ in val_rows] == [6, 12]
    assert train_rows[-1][1] < train_rows[0][1]  # the combined loss fell
    recorded = tomllib.loads(ws.run_config_file("student").read_text(encoding="utf-8"))
    meta = json.loads((ws.checkpoints_dir("teacher") / "step-000012" / META_FILE).read_text(encoding="utf-8"))
    assert recorded["train"]["objective"] == "distill" and recorded["model"]["n_layer"] == 1
    assert recorded["distill"]["teacher"] == "teacher" and recorded["distill"]["teacher_checkpoint"] == "step-000012"
    assert recorded["distill"]["teacher_sha256"] == meta["files"][MODEL_FILE]["sha256"]
    rc, out, err = cli_in_process(distill_args(ws, "teacher", "student", STEPS, "--teacher-checkpoint", "latest",
                                               extra=["model.n_layer=1", "model.n_embd=32", "distill.kl=reverse"]))
    assert rc == 0, err
    assert "up to date" in out  # the same teacher, the same config: nothing to redo


def test_alpha_one_is_plain_training_bit_for_bit(teacher):
    """With alpha = 1 the loss is the labels' cross-entropy alone: a student of the teacher's own shape
    and seed ends with the teacher's weights and losses exactly."""
    ws = teacher
    rc, _, err = cli_in_process(distill_args(ws, "teacher", "alpha-one", STEPS, extra=["distill.alpha=1"]))
    assert rc == 0, err
    assert_same_weights(final_weights(ws, "alpha-one"), final_weights(ws, "teacher"))
    assert logged(ws, "alpha-one") == logged(ws, "teacher")


def test_a_teacher_of_another_tokenizer_is_refused_naming_both_runs(teacher):
    ws = teacher
    shutil.copytree(ws.run_dir("teacher"), ws.run_dir("foreign"))  # as if trained on another tokenizer
    for meta_file in ws.checkpoints_dir("foreign").glob(f"step-*/{META_FILE}"):
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        meta["tokenizer_sha256"] = "0" * 64
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
    rc, _, err = cli_in_process(distill_args(ws, "foreign", "student-foreign", STEPS))
    assert rc == 2
    assert "teacher run 'foreign'" in err and "student run 'student-foreign'" in err and "tokenizer" in err
    assert len(err.strip().splitlines()) == 1
    assert not ws.run_dir("student-foreign").exists() or not checkpoint_steps(ws, "student-foreign")


def test_distill_without_a_teacher_or_with_an_unknown_one_is_one_line(teacher):
    ws = teacher
    rc, _, err = cli_in_process(["distill", "-w", str(ws.root)])
    assert rc == 2 and "--teacher RUN" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli_in_process(["distill", "-w", str(ws.root), "--teacher", "nosuch"])
    assert rc == 2 and "unknown run 'nosuch'" in err and len(err.strip().splitlines()) == 1


# ---- the top-k teacher cache ------------------------------------------------------------------------

TOP_K = 8


def cache_dirs(ws) -> list:
    return sorted(p.name for p in (ws.root / "distill").iterdir()) if (ws.root / "distill").is_dir() else []


def test_the_cache_holds_the_teachers_top_k_and_its_loss_is_the_on_the_fly_loss_restricted_to_it(teacher):
    """One teacher pass writes, per position of every train window, the top-k log-probabilities, ids
    and the tail's mass; the cached loss equals the full distributions' KL coarsened by hand to those
    k ids and "the rest", with the teacher computed on the fly on the same windows."""
    import torch

    from londinium import checkpoint as ck
    from londinium.config import load_config
    from londinium.data.loader import open_shard
    from londinium.export.run import resolve_checkpoint
    from londinium.model.gpt import GPT
    from londinium.train.distill import topk_distill_loss
    from londinium.train.distill_cache import CachedWindows, _open

    ws = teacher
    rc, out, err = cli_in_process(distill_args(ws, "teacher", "unused", STEPS, "--teacher-checkpoint", "latest",
                                               "--top-k", str(TOP_K), "--cache-only"))
    assert rc == 0, err
    assert "building the top-8 cache" in out and not ws.run_dir("unused").exists()
    (name,) = cache_dirs(ws)
    path = ws.distill_cache_dir(name)
    cache = _open(path, name.rsplit("-", 1)[1])
    shard = open_shard(ws, "train")
    assert cache.windows == (len(shard) - 1) // 32 and cache.meta["teacher_checkpoint"] == "step-000012"

    loader = CachedWindows(cache, shard, batch_size=4, seed=7)
    batch = loader.next_batch()
    logprobs, ids = batch.teacher
    assert logprobs.shape == (4, 32, TOP_K + 1) and ids.shape == (4, 32, TOP_K)
    ckpt = resolve_checkpoint(ws, "teacher", "latest")
    model = GPT(load_config(ckpt.path / ck.CONFIG_FILE).model)
    ck.load_weights(model, ckpt)
    with torch.no_grad():
        p = torch.softmax(model.eval()(batch.x)[0].double(), dim=-1)  # the full teacher, on the fly
    top_p = p.gather(-1, ids)
    assert torch.allclose(logprobs[..., :TOP_K].double().exp(), top_p, atol=2e-3)  # float16 on disk
    assert torch.allclose(logprobs[..., TOP_K].double().exp(), 1 - top_p.sum(-1), atol=2e-3)
    assert (top_p.min(-1).values >= (p.topk(TOP_K + 1).values[..., -1] - 1e-4)).all()  # they are the top k

    student = torch.randn(4, 32, p.size(-1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, alpha = 2.0, 0.5
    q = torch.softmax(student, dim=-1)
    def soften(mass):  # k + 1 outcomes' probabilities -> softened by T over those outcomes
        s = mass ** (1 / t)
        return s / s.sum(-1, keepdim=True)
    pb = soften(torch.cat([top_p, 1 - top_p.sum(-1, keepdim=True)], -1))
    qb = soften(torch.cat([q.gather(-1, ids), 1 - q.gather(-1, ids).sum(-1, keepdim=True)], -1))
    kl = (pb * (pb / qb).log()).sum(-1).mean()
    ce = -(q.gather(-1, batch.y[..., None]).log()).mean()
    by_hand = alpha * ce + (1 - alpha) * t * t * kl
    got = topk_distill_loss(student, logprobs, ids, batch.y, alpha, t)
    assert got.item() == pytest.approx(by_hand.item(), rel=2e-3)

    again = CachedWindows(cache, shard, batch_size=4, seed=7)  # a resumed loader reads the same next batch
    again.load_state_dict(loader.state_dict())
    a, b = loader.next_batch(), again.next_batch()
    assert torch.equal(a.x, b.x) and torch.equal(a.teacher[1], b.teacher[1])


def test_a_student_reads_the_cache_and_another_teacher_gets_its_own(teacher):
    ws = teacher
    cached = ["model.n_layer=1", "model.n_embd=32"]
    rc, out, err = cli_in_process(distill_args(ws, "teacher", "cached-student", STEPS, "--teacher-checkpoint", "latest",
                                               "--top-k", str(TOP_K), extra=cached))
    assert rc == 0, err
    assert "teacher top-8 cache teacher-top8-" in out
    train_rows, val_rows = logged(ws, "cached-student")
    assert len(train_rows) == STEPS and train_rows[-1][1] < train_rows[0][1] and [s for s, _ in val_rows] == [6, 12]
    before = cache_dirs(ws)
    assert len(before) == 1  # the student read the cache the first test (or it) wrote: one teacher pass
    rc, out, err = cli_in_process(distill_args(ws, "teacher", "unused", STEPS, "--teacher-checkpoint", "step-6",
                                               "--top-k", str(TOP_K), "--cache-only"))
    assert rc == 0, err
    assert "building" in out and len(cache_dirs(ws)) == 2  # other weights: another key, never the stale cache

    (ws.distill_cache_dir(before[0]) / "meta.json").write_text("{", encoding="utf-8")
    rc, _, err = cli_in_process(distill_args(ws, "teacher", "cached-2", STEPS, "--teacher-checkpoint", "latest",
                                             "--top-k", str(TOP_K), extra=cached))
    assert rc == 2 and "unreadable" in err and "delete that folder" in err and len(err.strip().splitlines()) == 1
    shutil.rmtree(ws.distill_cache_dir(before[0]))


# ---- SFT distillation -------------------------------------------------------------------------------

def test_an_sft_teacher_distils_into_an_sft_student_on_the_answers(teacher, tmp_path, monkeypatch):
    """`--sft BASE`: the student fine-tunes BASE on the conversations against an SFT teacher. With
    alpha = 1 it is `londinium sft` bit for bit (the same loader, mask and loss); with alpha 0.5 it
    trains and validates as an SFT run (the answers' loss) and records its teacher."""
    from train_helpers import SFT_TINY, SFT_TRAIN, sft_args, write_conversations

    ws, steps = teacher, 6
    data = write_conversations(ws, tmp_path / "chat.jsonl")
    rc, _, err = cli_in_process(sft_args(ws, "teacher", "teacher-sft", steps, data))
    assert rc == 0, err
    sft_sets = [*SFT_TRAIN, *SFT_TINY, f"sft.max_steps={steps}"]  # as sft_args sets them

    def student(name: str, alpha: float) -> tuple[int, str, str]:
        args = ["distill", "-w", str(ws.root), "--teacher", "teacher-sft", "--sft", "teacher", "--name", name]
        for s in [*sft_sets, f"sft.data=[{json.dumps(str(data))}]", "sft.tasks=[]", f"distill.alpha={alpha}"]:
            args += ["--set", s]
        return cli_in_process(args)

    rc, _, err = student("sft-alpha-one", 1.0)
    assert rc == 0, err
    assert_same_weights(final_weights(ws, "sft-alpha-one"), final_weights(ws, "teacher-sft"))
    assert logged(ws, "sft-alpha-one") == logged(ws, "teacher-sft")
    rc, out, err = student("sft-student", 0.5)
    assert rc == 0, err
    assert "sft: base run 'teacher'" in out and "teacher run 'teacher-sft'" in out
    recorded = tomllib.loads(ws.run_config_file("sft-student").read_text(encoding="utf-8"))
    assert recorded["train"]["objective"] == "distill" and recorded["distill"]["sft"] is True
    assert recorded["sft"]["base"] == "teacher"
    assert final_weights(ws, "sft-student").keys() == final_weights(ws, "teacher-sft").keys()
    assert logged(ws, "sft-student")[1] != logged(ws, "teacher-sft")[1]  # the teacher's targets changed the path
    check_replay_rows_are_distilled_too(ws, "sft-student")
    # The student is an assistant: `londinium chat` answers through the template, as for an SFT run.
    monkeypatch.setattr(sys, "stdin", io.StringIO("Thou art\n"))
    rc, out, err = cli_in_process(["chat", "-w", str(ws.root), "--run", "sft-student", "--checkpoint", "latest", "--greedy",
                                   "--max-tokens", "4"])
    assert rc == 0, err
    assert "fine-tuned assistant" in out.splitlines()[0]


def check_replay_rows_are_distilled_too(ws, student: str) -> None:
    """The student's loss on a batch with replay rows: both terms on every trained position, the
    replay rows' included (labels alone there were measured worse on the answers: docs/LOG.md)."""
    import torch
    import torch.nn.functional as F

    from londinium.config import load_config
    from londinium.data.loader import open_shard
    from londinium.model.load import load_run
    from londinium.tokenizer import tokenizer_sha256
    from londinium.train.distill import distill_loss
    from londinium.train.objectives import open_objective
    from londinium.train.sft_batches import replay_rows

    cfg = load_config(ws.run_config_file(student))
    sha = tokenizer_sha256(ws)
    objective = open_objective(ws, cfg, open_shard(ws, "train", sha), open_shard(ws, "val", sha), lambda m: None)
    model = load_run(ws, run=student, checkpoint="latest").model
    batch = objective.make_loader(0, 1).next_batch()
    chats = cfg.train.batch_size - replay_rows(cfg.train.batch_size, cfg.sft.replay_share)
    assert 0 < chats < cfg.train.batch_size  # SFT_TINY's replay share gives the batch replay rows
    d, keep, w = cfg.distill, batch.weights > 0, batch.weights
    with torch.no_grad():
        got = objective.loss(model, model, batch)
        student_logits, teacher_logits = model(batch.x)[0], objective.teacher.model(batch.x)[0]
        want = distill_loss(student_logits[keep], teacher_logits[keep], batch.y[keep], d.alpha, d.temperature, d.kl,
                            weights=w[keep])
        on_chats, on_replay = keep.clone(), keep.clone()
        on_chats[chats:], on_replay[:chats] = False, False
        labels_on_replay = (F.cross_entropy(student_logits[on_replay], batch.y[on_replay], reduction="none") * w[on_replay]).sum() \
            + distill_loss(student_logits[on_chats], teacher_logits[on_chats], batch.y[on_chats], d.alpha, d.temperature, d.kl,
                           weights=w[on_chats])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got.item() != pytest.approx(labels_on_replay.item(), rel=1e-3)
