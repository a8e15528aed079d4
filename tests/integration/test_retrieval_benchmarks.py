"""The retrieval benchmarks run in their quick mode, so neither rots unnoticed (figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.rag_helpers import OVERRIDES, rag_workspace

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", ["retrieval.py", "retrieval_peer.py"])
def test_retrieval_benchmark_quick(script, tiny_workspace, tmp_path_factory):
    ws = rag_workspace(tiny_workspace, tmp_path_factory)
    sets = [x for o in OVERRIDES for x in ("--set", o)]
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "-w", str(ws.root), "--quick", *sets],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recall@5" in out.stdout.lower()
    if script == "retrieval.py":
        assert "citations:" in out.stdout and "refusal" in out.stdout
    else:
        assert "LangChain EnsembleRetriever" in out.stdout and "lower" in out.stdout
