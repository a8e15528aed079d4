"""benchmarks/gpu_check.py rehearsed on the CPU: the script a GPU session runs once must not fail there.

`--dry-run` runs every section with tiny sizes (the real trainer in subprocesses included), so the
GPU run only changes sizes and the device. The figures are CPU figures and are not judged here;
what is checked is that every section ran and reports values that make sense.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path_factory.mktemp("gpu-check")
    proc = _run("--dry-run", "--out", str(out))
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else {}
    md = (out / "gpu_check.md").read_text() if (out / "gpu_check.md").is_file() else ""
    return proc, report, md


@pytest.mark.slow
def test_dry_run_runs_every_section(dry_run):
    proc, report, md = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["dry_run"] is True
    for key in ("environment", "training", "resume", "generation", "serving"):
        assert report[key]["status"] in ("ok", "not available"), (key, report[key])
        assert report[key]["seconds"] >= 0
    for title in ("## 1. Environment", "## 2. Training", "## 3. Bit-exact resume", "## 4. Generation", "## 5. Serving"):
        assert title in md
    assert "dry run on a CPU" in md  # a rehearsal is never mistaken for GPU figures


@pytest.mark.slow
def test_dry_run_environment_names_the_peak_and_versions(dry_run):
    env = dry_run[1]["environment"]
    assert env["torch"] == torch.__version__
    assert env["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert env["peak_tflops"] > 0 and env["peak_source"]
    assert isinstance(env["bf16_supported"], bool)


@pytest.mark.slow
def test_dry_run_training_rows_are_sane(dry_run):
    train = dry_run[1]["training"]
    ran = [r for r in train["rows"] if "skipped" not in r]
    assert {r["batch"] for r in ran} == set(dry_run[1]["plan"]["train_batches"])
    for r in ran:
        assert r["tokens_per_s"] > 0 and r["steps_timed"] > 0
        assert 0 < r["mfu"] < 1.5  # a CPU roof measured under load can sit below what a step reaches
        assert r["loss_decreased"] and r["loss_end"] < r["loss_start"]
        assert any("flash" in k or "math" in k or "efficient" in k for k in r["sdpa_ran"]), r["sdpa_ran"]
    assert train["sdpa_available"]["math"] == "ok"
    assert train["parameters"] > 0 and train["flops_per_token"] > 6 * train["parameters"] * 0.5


@pytest.mark.slow
def test_dry_run_resume_through_the_real_trainer_is_bit_exact(dry_run):
    res = dry_run[1]["resume"]
    assert res["same"] is True, res
    assert res["train_losses_compared"] == res["steps"] and res["val_losses_compared"] >= 2
    assert res["max_abs_weight_diff"] == 0.0 and res["tensors_differing"] == 0
    assert "resuming from step" in res["resume_line"]
    assert "bit for bit" in res["what_same_means"]


@pytest.mark.slow
def test_dry_run_generation_compares_engine_and_transformers(dry_run):
    gen = dry_run[1]["generation"]
    assert gen["max_abs_logit_diff_fp32"] < 1e-4  # the peer really has our weights
    assert [r["batch"] for r in gen["rows"]] == [1, 8, 64]
    for r in gen["rows"]:
        assert r["londinium_decode_tok_s"] > 0 and r["transformers_decode_tok_s"] > 0
        assert r["ratio"] == pytest.approx(r["londinium_decode_tok_s"] / r["transformers_decode_tok_s"], rel=0.01)


@pytest.mark.slow
def test_dry_run_serving_says_what_it_measured(dry_run):
    serve = dry_run[1]["serving"]
    if serve["status"] == "not available":
        assert "server not available in this build" in serve["note"]
    else:
        assert [r["concurrency"] for r in serve["rows"]] == [1, 4]
        assert all(r["completion_tokens_per_s"] > 0 for r in serve["rows"])
    assert serve["vllm"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the full check would run (minutes)")
def test_full_check_without_a_gpu_stops_with_a_clear_message(tmp_path):
    proc = _run("--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "sees no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["cuda_available"] is False
    assert "training" not in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the environment section is a GPU one")
def test_shell_wrapper_finds_a_python_with_torch_and_runs_the_check(tmp_path):
    """benchmarks/gpu_check.sh, the command a GPU machine runs: it picks the Python that imports torch."""
    proc = subprocess.run(["bash", str(SCRIPT.with_suffix(".sh")), "--env-only", "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{sys.executable} torch {torch.__version__}" in proc.stderr
    assert json.loads((tmp_path / "gpu_check.json").read_text())["environment"]["status"] == "ok"
