"""`generate.compile`'s batch-1 libraries (infer/aot.py) are kept in the workspace: a later process
loads them instead of building them, for any checkpoint of the same shape, and gives the eager
step's greedy tokens; a library is keyed by what makes its code, so another shape or torch version
is not served by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from londinium.checkpoint import save_checkpoint
from londinium.config import Config, ModelConfig, to_toml
from londinium.infer.aot import library_key
from londinium.infer.fused import fused_step
from londinium.model.gpt import GPT
from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

RUNS = ("aot-a", "aot-b")  # two checkpoints of one Llama-style shape, different weights


def llama_config(vocab_size: int, n_embd: int = 32) -> ModelConfig:
    return ModelConfig(n_layer=2, n_head=2, n_embd=n_embd, context=64, vocab_size=vocab_size, positions="rope",
                       norm="rmsnorm", mlp="swiglu", bias=False)


@pytest.fixture(scope="module")
def ws(tiny_workspace):
    tok = load_tokenizer(tiny_workspace)
    for seed, run in enumerate(RUNS):
        cfg = Config()
        cfg.model = llama_config(tok.get_vocab_size())
        torch.manual_seed(seed)
        save_checkpoint(tiny_workspace.checkpoints_dir(run), 1, GPT(cfg.model), {"step": 1}, to_toml(cfg),
                        {"run": run, "tokenizer_sha256": tokenizer_sha256(tiny_workspace)})
    return tiny_workspace


def greedy(ws, run: str, *extra: str) -> tuple[list[int], list[float]]:
    """8 greedy tokens and their log-probabilities from `londinium generate` in a process of its own
    (a span of 64 keys: one library)."""
    args = [sys.executable, "-m", "londinium", "generate", "-w", str(ws.root), "--run", run, "--prompt", "Thou art",
            "--greedy", "--max-tokens", "8", "--ignore-eos", "--logprobs", "1", "--format", "json", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    [choice] = json.loads(r.stdout)["choices"]
    return choice["token_ids"], [e["logprob"] for e in choice["logprobs"]]


@pytest.mark.slow  # AOTInductor builds the library once: half a minute to a few minutes on 2 busy cores
def test_a_later_process_loads_the_compiled_step_for_any_checkpoint_of_its_shape(ws) -> None:
    compiled = ["--set", "generate.compile=true"]
    eager = {run: greedy(ws, run) for run in RUNS}
    assert eager[RUNS[0]][1] != pytest.approx(eager[RUNS[1]][1], abs=1e-3)  # the weights differ
    first = greedy(ws, RUNS[0], *compiled)  # builds the library
    [library] = ws.compiled_dir.glob("*.pt2")
    built = library.stat()
    # Then loaded by two more processes, one of them on other weights of the same shape.
    for run, (tokens, logprobs) in [(RUNS[0], first), *((run, greedy(ws, run, *compiled)) for run in RUNS)]:
        assert tokens == eager[run][0] and logprobs == pytest.approx(eager[run][1], abs=1e-4)
    # Not built again: a new build would have replaced the file (written atomically, so another inode).
    assert list(ws.compiled_dir.glob("*.pt2")) == [library]
    assert (library.stat().st_ino, library.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)


def test_a_library_is_keyed_by_the_shapes_the_span_and_the_torch_version() -> None:
    def key(n_embd: int = 32, span: int = 64, **kw: str) -> str:
        torch.manual_seed(0)
        step = fused_step(GPT(llama_config(64, n_embd)).eval())
        cache = step.model.new_slot_cache(1, 64)
        inputs = [torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), *cache.k, *cache.v, *step.tensors()]
        return library_key(inputs, span, step.eps, **kw)

    assert key() == key()  # the same shapes and versions: reused (other weights change nothing here)
    assert key(n_embd=48) != key()
    assert key(span=128) != key()
    assert key(torch_version="2.12.0") != key()


def test_a_file_where_the_libraries_go_is_refused_before_anything_is_built(tmp_path) -> None:
    from londinium.errors import PathError
    from londinium.infer.aot import AotStep

    torch.manual_seed(0)
    step = fused_step(GPT(llama_config(64)).eval())
    there = tmp_path / "compiled"
    there.write_text("a user's notes")
    with pytest.raises(PathError, match="compiled is not a folder"):
        AotStep(step, there)
    assert there.read_text() == "a user's notes"  # left as it was
