"""`londinium export` on bad input, through the real command in a subprocess: exit status 2, one
line naming the problem, no traceback, and nothing half-written left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from londinium.config import ModelConfig
from londinium.tokenizer.codec import load_tokenizer

from integration.test_export_hf import save_random_run

GOOD = "export-cli-good"


@pytest.fixture(scope="module")
def ws(tiny_workspace):
    vocab = load_tokenizer(tiny_workspace).get_vocab_size()
    small = dict(n_layer=1, n_head=2, n_embd=32, context=32, vocab_size=vocab)
    save_random_run(tiny_workspace, GOOD, ModelConfig(**small))
    # learned positions with RMSNorm: GPT-2 has LayerNorm, Llama and Mixtral have RoPE
    save_random_run(tiny_workspace, "export-cli-unmappable", ModelConfig(norm="rmsnorm", **small))
    save_random_run(tiny_workspace, "export-cli-corrupt", ModelConfig(**small))
    weights = next(tiny_workspace.checkpoints_dir("export-cli-corrupt").glob("step-*")) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit pattern inside a tensor: same size, wrong hash
    weights.write_bytes(bytes(data))
    return tiny_workspace


def export(ws, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "londinium", "export", "-w", str(ws.root), *args],
                          capture_output=True, text=True, timeout=120)


def assert_clean_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("londinium: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for w in words:
        assert w in lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


@pytest.mark.parametrize("args,words", [
    (["--run", "no-such-run"], ["unknown run 'no-such-run'", "--run"]),
    (["--run", GOOD, "--checkpoint", "step-99"], ["no checkpoint step-99", "step-1"]),
    (["--run", GOOD, "--checkpoint", "/no/such/checkpoint"], ["--checkpoint /no/such/checkpoint"]),
    (["--run", "export-cli-corrupt"], ["model.safetensors is corrupted"]),
    (["--run", "export-cli-unmappable"], ["model.norm = 'rmsnorm'", "model.positions = 'learned'", "GPT2LMHeadModel"]),
    (["--run", GOOD, "--dtype", "int4"], ["export.dtype = 'int4'", "--dtype"]),
], ids=["unknown-run", "unknown-step", "unknown-dir", "corrupted", "unmappable", "bad-dtype"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(ws, tmp_path, args, words) -> None:
    out = tmp_path / "out"
    before = ws.manifest().keys()
    assert_clean_failure(export(ws, *args, "--out", str(out)), *words)
    assert leftovers(tmp_path) == [] and ws.manifest().keys() == before


def test_an_unwritable_output_is_refused(ws, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_clean_failure(export(ws, "--run", GOOD, "--out", str(blocker / "model")), str(blocker), "--out")
    assert leftovers(tmp_path) == ["a-file"]


def test_an_empty_output_directory_is_filled(ws, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()  # empty: nothing to lose (a folder with anything else in it: tests/integration/test_output_targets.py)
    ok = export(ws, "--run", GOOD, "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    assert "parameters" in ok.stdout and "load it:" in ok.stdout and "model.safetensors" in ok.stdout
    assert leftovers(tmp_path) == ["mine"]  # the staging directory and the lock beside the target are gone
