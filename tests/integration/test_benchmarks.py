"""Every script in benchmarks/ runs in its quick mode (`--quick`: toy sizes, one round), so none rots
unnoticed (DESIGN.md, principle 9). The figures are not judged here, only that each script ran to
its end: its own assertions (the peer's logits agree, the tokens equal) hold, and it printed its
summary."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import rope_run, trained_run
from train_helpers import write_conversations

from helpers.prose import local_sources

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
HELPERS = {"peers.py", "servers.py", "gateway_upstream.py", "presidio_service.py"}  # imported or started by the scripts, not run
HAVE_OWN_TEST = {"gpu_check.py": "test_gpu_check.py (--dry-run)", "recipe_search.py": "test_recipe_search.py",
                 "gateway_overhead.py": "test_gateway_benchmark.py (with a soak)",
                 "retrieval.py": "test_retrieval_benchmarks.py", "retrieval_peer.py": "test_retrieval_benchmarks.py",
                 "sft_peer.py": "test_sft_peer.py", "tool_calls.py": "test_agent.py (--quick, on a long-context model)"}

# script -> (extra arguments, built from the test's workspace and run; a line its output must hold)
QUICK: dict[str, tuple] = {
    "generate_speed.py": (lambda ws, run, tmp: [], "londinium decode / transformers decode"),
    "continuous_batching.py": (lambda ws, run, tmp: ["--shapes", "tiny"], "engine/floor"),
    "prefix_reuse.py": (lambda ws, run, tmp: ["--shapes", "tiny"], "same tokens either way"),
    "eval_perplexity.py": (lambda ws, run, tmp: [], "ratio londinium / transformers"),
    "train_throughput.py": (lambda ws, run, tmp: [], "ratio londinium / transformers"),
    "corpus_build.py": (lambda ws, run, tmp: ["--registry", str(local_sources(tmp))], "build / read-only ratio"),
    "export_load.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "export / save_pretrained"),
    "gguf_decode.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run, "--preset", "tiny"], "londinium int8 / llama.cpp q8_0"),
    "search_index.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp))], "index p50"),
    "tokenizer_speed.py": (lambda ws, run, tmp: ["-w", str(ws.root)], "GPT-2 in tiktoken"),
    "trainer_overhead.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp))], "ratio londinium / bare"),
    "serve_throughput.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "londinium / transformers serve"),
    "serve_peers.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp)), "--run", run], "londinium / peer"),
    "weight_dtypes.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "same greedy tokens"),
    "decode_floor.py": (lambda ws, run, tmp: [], "engine, empty model"),
    "speculative.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run, "--draft-run", run], "tokens/target pass"),
    "kv_dtypes.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "same greedy tokens"),
    "gateway_cache.py": (lambda ws, run, tmp: [], "hit/miss p50"),
    "gateway_pii.py": (lambda ws, run, tmp: [], "added latency per request"),
    "gateway_pii_peer.py": (lambda ws, run, tmp: ["--litellm", ""], "PII recall"),
    "semantic_cache.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp)), "--set", "retrieve.dim=32"], "held out at"),
    "constrained_decode.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "overhead: constrained"),
    "distill_cost.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp)), "--teacher", run, "--top-k", "8"], "top-8 cache"),
    "distill_peer.py": (lambda ws, run, tmp: ["-w", str(_copy(ws, tmp)), "--teacher", run, "--run", run,
                                              "--data", str(write_conversations(ws, tmp / "chats.jsonl")), "--rounds", "2"],
                         "TRL GKDTrainer"),  # two rounds: TRL goes first in the second
    "grpo_peer.py": (lambda ws, run, tmp: ["-w", str(_with_arith(ws, tmp)), "--run", run], "RL steps/minute"),
    "json_schema_peer.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run], "londinium / llama.cpp"),
    "constrained_forced.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", run, "--checkpoint", "latest"], "model passes with fast-forward"),
    "rope_context.py": (lambda ws, run, tmp: ["-w", str(ws.root), "--run", rope_run(ws), "--checkpoint", "latest"], "| ntk |"),
}
MARKS = {
    "gguf_decode.py": [pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                          reason="needs the llama extra (llama-cpp-python)")],
    "json_schema_peer.py": [pytest.mark.skipif(importlib.util.find_spec("starlette_context") is None,
                                               reason="needs the llama-server extra (llama-cpp-python[server])")],
    "tokenizer_speed.py": [pytest.mark.network],  # GPT-2's tokenizer files come from the package index once
    "gateway_pii.py": [pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is None,
                                          reason="needs the guardrails extra (presidio-analyzer)")],
    "gateway_pii_peer.py": [pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is None,
                                               reason="needs the guardrails extra (presidio-analyzer)")],
}
# Over ~10 s each on the 2-core machine even at toy sizes (importing transformers, starting real
# servers, fresh interpreters): they run with the slow tests (`make test`), the rest every time.
for _script in ("generate_speed.py", "eval_perplexity.py", "train_throughput.py", "trainer_overhead.py", "export_load.py", "weight_dtypes.py",
                "serve_throughput.py", "serve_peers.py", "gateway_pii.py", "gateway_pii_peer.py", "constrained_decode.py",
                "grpo_peer.py", "distill_peer.py", "json_schema_peer.py", "constrained_forced.py"):
    MARKS.setdefault(_script, []).append(pytest.mark.slow)


def _copy(ws, tmp: Path) -> Path:
    """A copy of the workspace for a script that writes into it (an index, training runs, bench/)."""
    target = tmp / "ws"
    shutil.copytree(ws.root, target)
    return target


def _with_arith(ws, tmp: Path) -> Path:
    """A copy of the workspace with the generated arithmetic task built (grpo_peer.py trains on it)."""
    target = _copy(ws, tmp)
    done = subprocess.run([sys.executable, "-m", "londinium", "tasks", "build", "-w", str(target), "--task", "arith",
                           "--set", "tasks.train_items=64", "--set", "tasks.eval_items=8"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_every_script_in_benchmarks_has_a_quick_run_here() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts - HELPERS - set(HAVE_OWN_TEST) == set(QUICK), "a new benchmark script needs a --quick run in QUICK"


@pytest.mark.parametrize("script", [pytest.param(s, marks=MARKS.get(s, [])) for s in QUICK])
def test_benchmark_runs_in_quick_mode(script: str, tiny_workspace, tmp_path) -> None:
    extra, expect = QUICK[script]
    run = trained_run(tiny_workspace)
    args = extra(tiny_workspace, run, tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert expect in proc.stdout, proc.stdout[-3000:]
