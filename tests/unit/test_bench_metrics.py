"""The serving-benchmark figures on hand-made request records: vLLM's definitions of TPOT, the
percentiles, the throughputs and goodput against SLOs, and the load-shape flags."""

from __future__ import annotations

import math

import pytest

from londinium.bench.serve_bench import BenchError, Level, RequestRecord, parse_goodput, parse_levels, summarize


def rec(ttft: float, latency: float, out: int, prompt: int = 10, ok: bool = True, error: str = "") -> RequestRecord:
    return RequestRecord(prompt_tokens=prompt, output_tokens=out, ttft=ttft, latency=latency, success=ok, error=error,
                         itl=[(latency - ttft) / (out - 1)] * (out - 1) if ok and out > 1 else [])


RECORDS = [
    rec(0.100, 1.100, 11),  # TPOT 100 ms
    rec(0.300, 0.800, 6),   # TPOT 100 ms, TTFT 300
    rec(0.050, 0.450, 5),   # TPOT 100 ms... (0.4 / 4)
    rec(0.020, 0.220, 3),   # TPOT 100 ms
    rec(0.900, 0.900, 1),   # one token: no TPOT (0 for goodput)
    rec(0, 0, 0, ok=False, error="HTTP 500: boom"),
    rec(0, 0, 0, ok=False, error="HTTP 500: boom"),
    rec(0, 0, 0, ok=False, error="ReadTimeout"),
]


def test_goodput_counts_only_successful_requests_that_meet_every_slo() -> None:
    s = summarize(RECORDS, duration_s=2.0, slos={"ttft": 200, "tpot": 100.0001})
    # ttft <= 200 ms: the 1st, 3rd and 4th (the 2nd is 300, the one-token one 900); all TPOT 100 ms
    assert s["goodput"] == pytest.approx(3 / 2.0)
    s = summarize(RECORDS, duration_s=2.0, slos={"ttft": 1000})
    assert s["goodput"] == pytest.approx(5 / 2.0)  # the one-token answer counts: its TPOT is 0
    s = summarize(RECORDS, duration_s=2.0, slos={"e2el": 500})
    assert s["goodput"] == pytest.approx(2 / 2.0)
    assert summarize(RECORDS, duration_s=2.0)["goodput"] is None


def test_throughputs_latencies_and_errors() -> None:
    s = summarize(RECORDS, duration_s=2.0)
    assert s["completed"] == 5 and s["failed"] == 3
    assert s["errors"] == {"HTTP 500: boom": 2, "ReadTimeout": 1}
    assert s["total_output_tokens"] == 26 and s["total_input_tokens"] == 50
    assert s["request_throughput"] == 2.5 and s["output_throughput"] == 13.0 and s["total_token_throughput"] == 38.0
    assert s["tpot_ms"]["mean"] == pytest.approx(100.0) and s["tpot_ms"]["p99"] == pytest.approx(100.0)
    ttfts = sorted([100, 300, 50, 20, 900])
    assert s["ttft_ms"]["median"] == pytest.approx(100) and s["ttft_ms"]["mean"] == pytest.approx(sum(ttfts) / 5)
    # numpy's linear interpolation: p90 of 5 values sits 0.6 of the way from the 4th to the 5th
    assert s["ttft_ms"]["p90"] == pytest.approx(300 + 0.6 * 600)
    assert s["e2el_ms"]["median"] == pytest.approx(800)
    assert s["itl_ms"]["median"] == pytest.approx(100)


def test_one_token_answers_have_no_tpot() -> None:
    assert RequestRecord(ttft=0.5, latency=0.5, output_tokens=1, success=True).tpot is None
    assert RequestRecord(ttft=0.1, latency=0.5, output_tokens=5, success=True).tpot == pytest.approx(0.1)


def test_parse_goodput_and_levels() -> None:
    assert parse_goodput(["ttft:500", "tpot:50"]) == {"ttft": 500.0, "tpot": 50.0}
    for bad in (["ttft"], ["ttft:-1"], ["itl:5"], ["ttft:nan"]):
        with pytest.raises(BenchError, match="--goodput"):
            parse_goodput(bad)
    assert parse_levels("1,4,16", None, None) == [Level(1), Level(4), Level(16)]
    assert parse_levels(None, None, 2.5) == [Level(None, 2.5)]
    assert [lv.label for lv in parse_levels("2", None, 4)] == ["rate=4/s c=2"]
    assert Level().label == "c=inf" and math.isinf(Level().request_rate)
    with pytest.raises(BenchError, match="--max-concurrency 0"):
        parse_levels(None, 0, None)
