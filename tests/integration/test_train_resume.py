"""Bit-exact resume on one process: a run SIGKILLed mid-way and resumed ends exactly like one never
interrupted -- same weights, same logged losses -- even when its newest checkpoint is damaged.

The run that is killed is a real `python -m londinium train` subprocess; the reference and the
resumed runs go through the same CLI entry point in this process, which saves two interpreter
start-ups per test (torch's import is most of a tiny run's cost).
"""

from __future__ import annotations

import shlex
import sys
import shutil

import pytest
from train_helpers import (
    assert_same_weights,
    checkpoint_steps,
    cli_in_process,
    distill_args,
    distill_cmd,
    final_weights,
    logged,
    newest_checkpoint_dir,
    run,
    sft_args,
    sft_cmd,
    train_args,
    train_cmd,
    write_conversations,
)

from londinium.checkpoint import MODEL_FILE
from londinium.config import PRESETS
from londinium.train.trainer import resume_command

STEPS, KILL_AT = 24, 15


@pytest.fixture(scope="module")
def reference(tiny_workspace):
    """An uninterrupted run of STEPS steps."""
    rc, _, err = cli_in_process(train_args(tiny_workspace, "ref", STEPS))
    assert rc == 0, err
    return final_weights(tiny_workspace, "ref"), logged(tiny_workspace, "ref")


@pytest.fixture(scope="module")
def killed(tiny_workspace):
    """A subprocess run SIGKILLed after step KILL_AT, and an identical copy of what it left ("killed2")."""
    ws = tiny_workspace
    died = run(train_cmd(ws, "killed", STEPS), kill_at=KILL_AT)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])  # died by SIGKILL, no clean-up
    assert logged(ws, "killed")[0][-1][0] == KILL_AT  # it logged past its last checkpoint
    shutil.copytree(ws.run_dir("killed"), ws.run_dir("killed2"))
    shutil.copytree(ws.run_dir("killed"), ws.run_dir("killed3"))
    return ws


def test_resume_after_sigkill_is_bit_exact(killed, reference):
    ws = killed
    assert checkpoint_steps(ws, "killed") == [6, 12]
    rc, out, err = cli_in_process(train_args(ws, "killed", STEPS, "--resume"))
    assert rc == 0, err
    assert "resuming from step 12" in out
    ref_weights, (ref_train, ref_val) = reference
    assert_same_weights(final_weights(ws, "killed"), ref_weights)
    train_rows, val_rows = logged(ws, "killed")
    assert train_rows == ref_train  # every step's loss, each logged once, bit for bit
    assert val_rows == ref_val
    assert [s for s, _ in ref_train] == list(range(1, STEPS + 1))


def test_truncated_newest_checkpoint_is_named_and_resume_uses_the_previous(killed, reference):
    ws = killed
    newest = newest_checkpoint_dir(ws, "killed2")
    assert newest.name == "step-000012"
    weights = newest / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn write: truncated
    rc, out, err = cli_in_process(train_args(ws, "killed2", STEPS, "--resume"))
    assert rc == 0, err
    assert "step-000012" in out and "truncated" in out
    assert "resuming from step 6" in out
    assert_same_weights(final_weights(ws, "killed2"), reference[0])
    assert logged(ws, "killed2") == reference[1]


def test_existing_run_without_resume_or_force_is_refused(tiny_workspace, reference):
    rc, _, err = cli_in_process(train_args(tiny_workspace, "ref", STEPS + 6))  # a longer plan for a finished run
    assert rc == 2
    assert "--resume" in err and "--force" in err and "step 24" in err


def test_the_printed_resume_command_alone_continues_the_run_as_trained(killed, reference):
    """`londinium train --resume --run NAME -w WS` -- no --set, no preset -- takes the architecture
    and the plan from the run's saved config (the defaults are a 6-layer model of 1,000s of steps) and
    still ends bit-exactly like the uninterrupted run."""
    ws = killed
    command = resume_command(ws, "killed3")
    assert command == f"londinium train --resume --run killed3 -w {ws.root}"
    rc, out, err = cli_in_process(shlex.split(command)[1:])
    assert rc == 0, err
    assert "resuming from step 12" in out and f"{STEPS:,} steps" in out
    assert_same_weights(final_weights(ws, "killed3"), reference[0])
    assert logged(ws, "killed3") == reference[1]


def test_an_explicit_change_of_architecture_on_resume_is_refused_by_key(killed):
    ws = killed
    rc, _, err = cli_in_process(["train", "-w", str(ws.root), "--run", "killed", "--resume", "--set", "model.n_layer=3"])
    assert rc == 2
    assert "model.n_layer: 2 -> 3" in err and f"`londinium train --resume --run killed -w {ws.root}`" in err
    assert len(err.strip().splitlines()) == 1


# The tiny preset's own recipe (#14: Llama blocks, WSD, batch 8 -- the batch stays the helpers') and
# the Muon option (two optimisers and their states), on the helpers' tiny shape: each must resume
# as bit-exactly as the GPT-2 runs above.
TINY_RECIPE = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in PRESETS["tiny"]["model"].items()
               if k in ("positions", "norm", "mlp", "bias", "tie_embeddings")] + [f"train.schedule={PRESETS['tiny']['train']['schedule']}"]
RECIPES = {
    "tiny": TINY_RECIPE,
    "muon": ["model.positions=rope", "model.norm=rmsnorm", "model.mlp=swiglu", "model.bias=false", "model.tie_embeddings=false",
             "train.optimizer=muon", "train.schedule=wsd", "train.decay_share=0.5"],
}


def recipe_args(ws, run_name: str, recipe: str, *flags: str) -> list[str]:
    args = train_args(ws, run_name, STEPS, *flags)
    return args + [a for s in RECIPES[recipe] for a in ("--set", s)]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_the_tiny_recipe_and_muon_resume_after_sigkill_bit_exactly(tiny_workspace, recipe):
    ws, ref, killed = tiny_workspace, f"{recipe}-ref", f"{recipe}-killed"
    rc, _, err = cli_in_process(recipe_args(ws, ref, recipe))
    assert rc == 0, err
    died = run([sys.executable, "-m", "londinium", *recipe_args(ws, killed, recipe)], kill_at=KILL_AT)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])
    rc, out, err = cli_in_process(recipe_args(ws, killed, recipe, "--resume"))
    assert rc == 0, err
    assert "resuming from step 12" in out
    assert_same_weights(final_weights(ws, killed), final_weights(ws, ref))
    assert logged(ws, killed) == logged(ws, ref)
    train_rows = logged(ws, ref)[0]
    assert train_rows[-1][1] < train_rows[0][1]  # it learnt something
    if recipe == "muon":  # the optimiser cannot change under a resumed run: its state would not fit
        rc, _, err = cli_in_process(["train", "-w", str(ws.root), "--run", killed, "--resume", "--set", "train.optimizer=adamw",
                                     "--set", f"train.max_steps={STEPS + 6}"])
        assert rc == 2
        assert "train.optimizer = 'muon'" in err and "'adamw'" in err


def test_an_sft_run_resumes_after_sigkill_bit_exactly(reference, tiny_workspace, tmp_path):
    """Supervised fine-tuning is an objective of the same trainer: its conversation loader (with
    replay rows) resumes from its cursor, and the command the refusal names (`londinium sft --resume
    --name`) continues it as trained."""
    ws = tiny_workspace
    data = write_conversations(ws, tmp_path / "chats.jsonl")
    rc, out, err = cli_in_process(sft_args(ws, "ref", "sft-ref", STEPS, data))
    assert rc == 0, err
    assert "base run 'ref' step-000024" in out and "replay: 2 of 8 rows" in out
    died = run(sft_cmd(ws, "ref", "sft-killed", STEPS, data), kill_at=KILL_AT)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])
    rc, _, err = cli_in_process(sft_args(ws, "ref", "sft-killed", STEPS, data))  # again, without --resume: refused
    hint = f"londinium sft --resume --name sft-killed -w {ws.root}"
    assert rc == 2 and f"`{hint}`" in err, err  # the stage that made the run, not `train`
    rc, out, err = cli_in_process(hint.split()[1:])
    assert rc == 0, err
    assert "resuming from step 12" in out
    assert_same_weights(final_weights(ws, "sft-killed"), final_weights(ws, "sft-ref"))
    assert logged(ws, "sft-killed") == logged(ws, "sft-ref")
    rows = logged(ws, "sft-ref")[0]
    assert rows[-1][1] < rows[0][1]  # the answers' loss fell


@pytest.mark.parametrize("cache", [[], ["--top-k", "8"]], ids=["teacher-on-the-fly", "top-k-cache"])
def test_a_distill_run_resumes_after_sigkill_bit_exactly(reference, tiny_workspace, cache):
    """Distillation is an objective of the same trainer: a student (one layer) against the frozen
    reference run resumes as any run does, and `distill --resume --name` continues it with its teacher
    (and, with --top-k, the same cached windows in the same order)."""
    ws, student, tag = tiny_workspace, ["model.n_layer=1", "distill.alpha=0.5", "distill.temperature=2"], "-".join(cache)
    ref, killed = f"student-ref{tag}", f"student-killed{tag}"
    rc, out, err = cli_in_process(distill_args(ws, "ref", ref, STEPS, "--teacher-checkpoint", "latest", *cache, extra=student))
    assert rc == 0, err
    assert "teacher run 'ref' step-000024" in out
    died = run(distill_cmd(ws, "ref", killed, STEPS, "--teacher-checkpoint", "latest", *cache, extra=student), kill_at=KILL_AT)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])
    rc, out, err = cli_in_process(["distill", "--resume", "--name", killed, "-w", str(ws.root)])
    assert rc == 0, err
    assert "resuming from step 12" in out
    assert_same_weights(final_weights(ws, killed), final_weights(ws, ref))
    assert logged(ws, killed) == logged(ws, ref)
