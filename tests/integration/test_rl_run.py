"""`londinium rl` end to end on a copy of the tiny workspace: a base run trained by GRPO on the
generated arithmetic task through the real CLI, its per-step RL metrics, pass@k evaluations, curves
and report; a reward function that raises (one line, the steps done kept, --resume goes on);
bit-exact resume after SIGKILL with a rollout reused across updates and a KL reference; and two
processes under torchrun training as one does."""

from __future__ import annotations

import shutil
import sys
import tomllib

import pytest
import torch
from train_helpers import assert_same_weights, checkpoint_steps, cli_in_process, final_weights, run, train_args

from londinium.train.monitor import read_metrics
from londinium.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = "rl-base"
# Two prompts x four samples a rollout, answers of at most 6 tokens: seconds a step on the tiny model.
RL = ["rl.group_size=4", "rl.prompts_per_step=2", "rl.max_new_tokens=6", "rl.eval_prompts=4", "rl.pass_k=4",
      "rl.learning_rate=3e-3", "train.threads=1"]
REWARDS = '''
calls = 0

def variety(completion, item):
    """Distinct characters of the answer: differs between samples, so every group has a signal."""
    return len(set(completion)) / 8

def flaky(completion, item):
    global calls
    calls += 1
    if calls > 16:  # two rollouts of 8 samples, then it breaks
        raise ValueError("the scorer lost its table")
    return variety(completion, item)
'''


def rl_args(ws: Workspace, name: str, steps: int, eval_every: int, *extra: str) -> list[str]:
    args = ["rl", "-w", str(ws.root), "--run", BASE, "--task", "arith", "--name", name]
    for s in [*RL, f"rl.max_steps={steps}", f"rl.eval_every={eval_every}", *extra]:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory):
    """A copy of the tiny workspace (the task set is built into it) with a base run and the arith task."""
    root = tmp_path_factory.mktemp("rl") / "ws"
    shutil.copytree(tiny_workspace.root, root)
    ws = Workspace(root)
    rc, _, err = cli_in_process(train_args(ws, BASE, 6, "--set", "model.context=64"))
    assert rc == 0, err
    rc, _, err = cli_in_process(["tasks", "build", "-w", str(root), "--task", "arith",
                                 "--set", "tasks.train_items=64", "--set", "tasks.eval_items=8"])
    assert rc == 0, err
    mods = root.parent / "mods"
    mods.mkdir()
    (mods / "rl_test_rewards.py").write_text(REWARDS)
    sys.path.insert(0, str(mods))
    yield ws
    sys.path.remove(str(mods))
    sys.modules.pop("rl_test_rewards", None)


def test_rl_through_the_cli_logs_each_step_and_pass_at_k_and_writes_its_report(ws):
    rc, out, err = cli_in_process(rl_args(ws, "rl-cli", 4, 2, "rl.rewards=['rl_test_rewards:variety', 'ended_turn@0.5']"))
    assert rc == 0, err
    saved = tomllib.loads(ws.run_config_file("rl-cli").read_text())
    assert saved["train"]["objective"] == "grpo" and saved["rl"]["base"] == BASE and saved["model"]["context"] == 64
    assert saved["train"]["batch_size"] == 8  # a rollout's samples: 2 prompts x 4
    rows = read_metrics(ws.metrics_file("rl-cli"))
    train = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert r["reward_mean"] > 0 and r["frac_reward_zero_std"] < 1  # distinct characters vary within groups
        assert r["entropy"] > 0 and 1 <= r["response_length"] <= 6 and 0 < r["rollout_share"] < 1
    assert any(r["grad_norm"] > 0 for r in train)
    evals = [r for r in rows if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0 <= r["pass@1"] <= r["pass@4"] <= 1 and r["eval_prompts"] == 4 for r in evals)
    png, md = ws.rl_report("rl-cli")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "pass@1" in md.read_text() and "frac_reward_zero_std" in md.read_text()
    assert "rewards arith: rl_test_rewards:variety + 0.5 x ended_turn" in out  # summed, with its weight
    ws.clear_run("rl-cli")  # what `--force` does: the report is the run's own, not the user's
    assert not ws.run_dir("rl-cli").exists()


def test_a_reward_that_raises_is_one_line_and_the_steps_done_are_kept(ws):
    rc, _, err = cli_in_process(rl_args(ws, "rl-flaky", 4, 10, "rl.rewards=['rl_test_rewards:flaky']"))
    assert rc == 2
    [line] = err.strip().splitlines()
    assert "reward function rl_test_rewards:flaky raised ValueError: the scorer lost its table on task arith, item arith-train-" in line
    assert "--resume" in line
    assert checkpoint_steps(ws, "rl-flaky") == [2]  # the two steps done, saved though no evaluation was due
    sys.modules["rl_test_rewards"].calls = -100  # the function fixed
    rc, out, err = cli_in_process(rl_args(ws, "rl-flaky", 4, 10, "rl.rewards=['rl_test_rewards:flaky']") + ["--resume"])
    assert rc == 0, err
    assert "resuming from step 2" in out
    assert [r["step"] for r in read_metrics(ws.metrics_file("rl-flaky")) if r["type"] == "train"] == [1, 2, 3, 4]


def test_resume_after_sigkill_is_bit_exact_with_a_reused_rollout_and_a_reference(ws, monkeypatch):
    # Two updates per rollout: the checkpoint at step 3 falls between the two updates of the second
    # rollout, so the rollout itself is in the checkpoint; beta > 0 keeps a frozen reference. The
    # advantages are of the best of 2 for the first 4 steps, then each sample's own (the switch after
    # the resume), on rewards scaled by their unlikeliness.
    extra = ("rl.updates_per_batch=2", "rl.beta=0.05", "rl.rewards=['rl_test_rewards:variety']",
             "rl.advantage_k=2", "rl.advantage_k_steps=4", "rl.unlikeliness=0.25")
    rc, opening, err = cli_in_process(rl_args(ws, "rl-ref", 6, 3, *extra))
    assert rc == 0, err
    assert "advantages of the best of 2 for 4 steps, then 1; unlikeliness 0.25" in opening
    monkeypatch.setenv("PYTHONPATH", str(ws.root.parent / "mods"))  # the reward module, for the subprocess
    died = run([sys.executable, "-m", "londinium", *rl_args(ws, "rl-killed", 6, 3, *extra)], kill_at=5)
    assert died.returncode == -9, died.stderr[-2000:]
    assert checkpoint_steps(ws, "rl-killed") == [3]
    rc, out, err = cli_in_process(rl_args(ws, "rl-killed", 6, 3, *extra) + ["--resume"])
    assert rc == 0, err
    assert "resuming from step 3" in out
    assert_same_weights(final_weights(ws, "rl-killed"), final_weights(ws, "rl-ref"))
    keys = ("step", "loss", "reward_mean", "frac_reward_zero_std", "kl", "entropy", "clip_share", "advantage_k", "reused")

    def logged(name: str) -> list[tuple]:
        return [tuple(r.get(k) for k in keys) for r in read_metrics(ws.metrics_file(name)) if r["type"] == "train"]

    assert logged("rl-killed") == logged("rl-ref")
    assert [r[-1] for r in logged("rl-ref")] == [0.0, 1.0] * 3  # every rollout served two steps
    assert [r[-2] for r in logged("rl-ref")] == [2, 2, 2, 2, 1, 1]
    assert any(r[1] != 0 for r in logged("rl-ref"))


def test_advantages_of_the_best_of_a_whole_group_are_one_line(ws):
    rc, _, err = cli_in_process(rl_args(ws, "rl-k4", 2, 2, "rl.advantage_k=4"))
    assert rc == 2
    [line] = err.strip().splitlines()
    assert "rl.advantage_k = 4 must be below rl.group_size = 4" in line and not ws.run_dir("rl-k4").exists()


@pytest.mark.slow  # ~1 min: two torchrun processes beside a one-process run (the default run stays under ~10 min)
def test_under_torchrun_each_process_samples_its_groups_and_they_train_like_one_process(ws, monkeypatch):
    # Two prompts a rollout, one per process; its samples are seeded by the prompt's place in the whole
    # rollout, so both runs sample the same answers, and DDP's all-reduced gradient is the one process's
    # (the 'grpo' loss averages answers, and the processes hold equal shares) up to float rounding.
    extra = ("rl.updates_per_batch=2", "rl.beta=0.05", "rl.rewards=['rl_test_rewards:variety']")
    rc, _, err = cli_in_process(rl_args(ws, "rl-one", 4, 2, *extra))
    assert rc == 0, err
    monkeypatch.setenv("PYTHONPATH", str(ws.root.parent / "mods"))  # the reward module, for the subprocesses
    args = rl_args(ws, "rl-ddp", 4, 2, *extra)
    args[args.index("--run")] = "--run-name"  # torchrun's own parser takes --run as its --run-path
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "londinium", *args])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("max steps reached") == 1  # rank 0 speaks
    one, ddp = final_weights(ws, "rl-one"), final_weights(ws, "rl-ddp")
    assert one.keys() == ddp.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], atol=1e-5, rtol=0)
    rows = {n: read_metrics(ws.metrics_file(n)) for n in ("rl-one", "rl-ddp")}
    # The processes split the rollout (not each the whole of it): the tokens trained, summed over them, are one process's.
    tokens = [[r["tokens"] for r in rows[n] if r["type"] == "train"] for n in rows]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 4
    # pass@k over all held-out prompts, split between the processes and summed: the same draws, the same figures.
    evals = [[(r["step"], r["eval_prompts"], r["pass@1"], r["pass@4"]) for r in rows[n] if r["type"] == "eval"] for n in rows]
    assert evals[0] == evals[1] and [e[:2] for e in evals[0]] == [(2, 4), (4, 4)]
