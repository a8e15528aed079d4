"""`londinium distill` on the tiny workspace: a student trained against a frozen teacher run is an
ordinary run (checkpoints, metrics) that records its teacher; alpha = 1 is plain training bit for
bit; a teacher of another tokenizer, or none, is one named line. (Its bit-exact resume after SIGKILL
is in test_train_resume.py.)"""

from __future__ import annotations

import json
import shutil
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
