"""benchmarks/gateway_overhead.py in its quick mode (a real upstream and the gateway as processes), so
the benchmark cannot rot, with a 45-second soak: its latencies are not judged here, only that it
measures, that no request failed, that the ledger matched every client, and that the gateway's
memory stayed bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_overhead_benchmark_runs_the_ledger_matches_every_client_and_memory_stays_bounded(tmp_path) -> None:
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gateway_overhead.py"), "--quick", "--soak-seconds", "45",
                        "--litellm", "", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["targets"] == ["direct", "gateway"] and f["ledger_requests"] == 150 and f["ledger_discrepancies"] == 0
    assert f["rate_gateway_errors"] == 0 and f["json_gateway_p50_ms"] > 0 and "gateway / litellm" not in r.stdout
    assert "ledger: 0 discrepancies in 150 mixed requests" in r.stdout
    assert f["soak_requests"] >= 1200 and f["rss_growth"] <= 0.05, f
