"""benchmarks/sft_peer.py in its quick mode on the tiny workspace: londinium's SFT and TRL's
SFTTrainer both fine-tune the same base on the same conversations and the comparison prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import cli_in_process, train_args, write_conversations

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_peer.py"


@pytest.mark.slow  # ~30 s: TRL's import and two short fine-tunings
def test_the_peer_benchmark_prints_both_trainers_figures(tiny_workspace, tmp_path):
    ws = tiny_workspace
    rc, _, err = cli_in_process(train_args(ws, "peer-base", 4, "--set", "model.context=64"))
    assert rc == 0, err
    data = write_conversations(ws, tmp_path / "chats.jsonl")
    done = subprocess.run([sys.executable, str(SCRIPT), "-w", str(ws.root), "--run", "peer-base", "--data", str(data), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRL SFTTrainer" in done.stdout and "ratio" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["finite"] and figures["ours_tok_s"] > 0 and figures["trl_tok_s"] > 0
    assert 0 <= figures["ours_exact"] <= 1 and figures["ours_answer_loss"] > 0 and figures["trl_answer_loss"] > 0
