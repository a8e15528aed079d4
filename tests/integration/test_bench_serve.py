"""`londinium bench serve` against a real `londinium serve` (uvicorn on 127.0.0.1, the tiny trained
run): a sweep writes results.json, report.md and plots whose figures agree with the server's usage
and with each other; --compare tables two runs; a dead port and a missing key become failed
requests, not a crash; bad flags exit 2. And the server's vLLM-style `ignore_eos` field."""

from __future__ import annotations

import json

import openai
import pytest
from serve_helpers import free_port, live_server, trained_run
from train_helpers import cli_in_process

from londinium.config import GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL, KEY = "tiny", "bench-key"


@pytest.fixture(scope="module")
def served(tiny_workspace):
    trained = load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")
    with live_server(create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(api_key=KEY, max_running=8),
                                GenerateConfig())) as url:
        yield url, Engine.from_trained(trained)


def bench(ws, url, *flags):
    return cli_in_process(["bench", "serve", "-w", str(ws.root), "--base-url", url, "--input-len", "16",
                           "--output-len", "8", "--num-prompts", "4", *flags])


@pytest.fixture(scope="module")
def sweep(served, tiny_workspace):
    url, _ = served
    rc, out, err = bench(tiny_workspace, url + "/v1", "--api-key", KEY, "--concurrency", "1,2",
                         "--goodput", "ttft:60000", "e2el:0.001", "--name", "sweep")
    assert rc == 0, err
    return out, json.loads(tiny_workspace.bench_results("sweep").read_text())


def test_sweep_writes_results_report_and_plots_with_sane_figures(sweep, tiny_workspace, served) -> None:
    out, results = sweep
    assert results["model"] == MODEL and results["ignore_eos"] is True  # --model came from GET /v1/models
    assert [lv["label"] for lv in results["levels"]] == ["c=1", "c=2"]
    tok = served[1].tokenizer
    for lv in results["levels"]:
        assert lv["completed"] == 4 and lv["failed"] == 0 and lv["errors"] == {}
        reqs = lv["requests"]
        assert all(r["usage"] for r in reqs)
        # ignore_eos fixed every output at max_tokens, and the server counted the prompt as our tokenizer does
        assert [r["output_tokens"] for r in reqs] == [8] * 4
        assert all(r["prompt_tokens"] == r["expected_prompt_tokens"] and 14 <= r["prompt_tokens"] <= 18 for r in reqs)
        assert lv["token_check"] == {"prompt_checked": 4, "prompt_matched": 4, "output_checked": 4, "output_matched": 4,
                                     "text_checked": 4, "text_matched": 4}
        assert lv["finish_reasons"] == {"length": 4}
        assert lv["total_output_tokens"] == 32 and lv["total_input_tokens"] == sum(r["prompt_tokens"] for r in reqs)
        for r in reqs:
            # A loaded server may merge a stream's queued tokens into one chunk (serve.stream_interval,
            # and a consumer that fell behind), so a request can have fewer gaps than tokens, even none.
            assert 0 < r["ttft"] <= r["latency"] and len(r["itl"]) <= 7
            assert r["tpot"] == pytest.approx((r["latency"] - r["ttft"]) / 7)
            assert r["ttft"] + sum(r["itl"]) == pytest.approx(r["latency"])
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
            s = lv[key]
            assert 0 <= s["median"] <= s["p90"] <= s["p99"], (key, s)
        assert lv["ttft_ms"]["median"] > 0 and lv["e2el_ms"]["median"] > 0
        assert lv["ttft_ms"]["p99"] <= lv["e2el_ms"]["p99"]
        assert lv["output_throughput"] == pytest.approx(32 / lv["duration_s"])
        assert lv["request_throughput"] == pytest.approx(4 / lv["duration_s"])
        assert lv["goodput"] == 0.0  # no request ends within 1 microsecond
    report = tiny_workspace.bench_report_md("sweep").read_text()
    assert "| metric | c=1 | c=2 |" in report and "TPOT p99 (ms)" in report and "ignore_eos" in report
    assert "| Successful requests | 4 | 4 |" in out
    for kind in ("throughput", "latency"):
        assert tiny_workspace.bench_plot("sweep", kind).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_tables_two_results_with_ratios(sweep, served, tiny_workspace) -> None:
    url, _ = served
    rc, _, err = bench(tiny_workspace, url + "/v1", "--api-key", KEY, "--max-concurrency", "2", "--model", MODEL,
                       "--goodput", "ttft:60000", "--name", "c2")
    assert rc == 0, err
    a, b = tiny_workspace.bench_results("sweep"), tiny_workspace.bench_results("c2")
    rc, out, err = cli_in_process(["bench", "serve", "--compare", str(a), str(b)])
    assert rc == 0, err
    la = json.loads(a.read_text())["levels"][1]
    lb = json.loads(b.read_text())["levels"][0]
    assert "| metric | A c=2 | B c=2 | B/A |" in out and "c=1" not in out.split("\n\n", 1)[1]
    row = next(line for line in out.splitlines() if line.startswith("| Output token throughput"))
    assert row.split("|")[4].strip() == f"{lb['output_throughput'] / la['output_throughput']:.2f}x"
    goodput = next(line for line in out.splitlines() if line.startswith("| Request goodput"))
    assert goodput.split("|")[2].strip() == "0.00" and goodput.split("|")[3].strip() == f"{lb['goodput']:.2f}"


def test_a_dead_port_and_a_missing_key_are_failed_requests(served, tiny_workspace) -> None:
    url, _ = served
    rc, out, err = bench(tiny_workspace, url + "/v1", "--model", MODEL, "--name", "nokey", "--warmup", "0")
    assert rc == 0, err
    [lv] = json.loads(tiny_workspace.bench_results("nokey").read_text())["levels"]
    assert lv["completed"] == 0 and lv["failed"] == 4
    [(msg, n)] = lv["errors"].items()
    assert n == 4 and msg.startswith("HTTP 401:") and "4 failed: HTTP 401" in out
    rc, out, err = bench(tiny_workspace, f"http://127.0.0.1:{free_port()}/v1", "--model", MODEL, "--name", "dead")
    assert rc == 0, err
    [lv] = json.loads(tiny_workspace.bench_results("dead").read_text())["levels"]
    assert lv["failed"] == 4 and all(m.startswith("ConnectError") for m in lv["errors"])
    assert lv["ttft_ms"]["median"] == 0.0 and lv["request_throughput"] == 0.0


@pytest.mark.parametrize("flags, says", [
    (["--concurrency", "1,x"], "--concurrency"),
    (["--concurrency", "1", "--max-concurrency", "2"], "exclude each other"),
    (["--goodput", "ttft:fast"], "--goodput"),
    (["--goodput", "latency:5"], "--goodput"),
    (["--request-rate", "0"], "--request-rate"),
    (["--output-len", "0"], "--output-len"),
    (["--range-ratio", "1.5"], "--range-ratio"),
    (["--base-url", "127.0.0.1:8000"], "--base-url"),
    (["--name", "../out"], "run name"),
    (["--prompts", "missing.jsonl"], "--prompts file"),
])
def test_bad_flags_exit_2_naming_the_flag(tiny_workspace, flags, says) -> None:
    rc, _, err = bench(tiny_workspace, "http://127.0.0.1:9/v1", "--model", MODEL, *flags)
    assert rc == 2 and says in err and "Traceback" not in err, err


def test_bad_base_url_and_compare_files_exit_2(tiny_workspace, tmp_path) -> None:
    rc, _, err = cli_in_process(["bench", "serve", "-w", str(tiny_workspace.root)])
    assert rc == 2 and "--base-url" in err
    rc, _, err = cli_in_process(["bench", "serve", "-w", str(tiny_workspace.root), "--base-url", f"http://127.0.0.1:{free_port()}/v1"])
    assert rc == 2 and "--model" in err  # no server to list the models of
    (tmp_path / "x.json").write_text("{}")
    rc, _, err = cli_in_process(["bench", "serve", "--compare", str(tmp_path / "x.json"), str(tmp_path / "none.json")])
    assert rc == 2 and "results.json" in err


def test_ignore_eos_decodes_past_the_end_of_text(served) -> None:
    url, engine = served
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    force_eos = {"logit_bias": {str(engine.eos_id): 100}}
    stops = client.completions.create(model=MODEL, prompt="Thou art", max_tokens=6, temperature=0, extra_body=force_eos)
    assert stops.choices[0].finish_reason == "stop" and stops.usage.completion_tokens < 6
    full = client.completions.create(model=MODEL, prompt="Thou art", max_tokens=6, temperature=0,
                                     extra_body={**force_eos, "ignore_eos": True})
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 6


def test_prompts_file_with_its_own_output_lengths_in_an_empty_workspace(served, tmp_path) -> None:
    """Any prompt file works without a workspace: no tokenizer, so the server's usage is the only count."""
    url, engine = served
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Thou art", "output_len": 3}\n\n{"prompt": "The king", "output_len": 5}\n')
    rc, out, err = cli_in_process(["bench", "serve", "-w", str(tmp_path / "ws"), "--base-url", url + "/v1", "--api-key", KEY,
                                   "--prompts", str(prompts), "--num-prompts", "4", "--warmup", "0", "--request-rate", "50"])
    assert rc == 0, err
    from londinium.workspace import Workspace

    [lv] = json.loads(Workspace(tmp_path / "ws").bench_results("serve").read_text())["levels"]
    assert lv["label"] == "rate=50/s" and lv["completed"] == 4
    assert sorted(r["output_tokens"] for r in lv["requests"]) == [3, 3, 5, 5]  # each row drawn once, then again
    assert sorted(r["prompt_tokens"] for r in lv["requests"]) == sorted(
        2 * [len(engine.tokenizer.encode(p).ids) for p in ("Thou art", "The king")])
    assert lv["token_check"]["prompt_checked"] == 0 and lv["token_check"]["text_checked"] == 0
    assert lv["token_check"]["output_checked"] == 4
    (tmp_path / "bad.jsonl").write_text('{"text": "no prompt field"}\n')
    rc, _, err = cli_in_process(["bench", "serve", "-w", str(tmp_path / "ws"), "--base-url", url + "/v1",
                                 "--prompts", str(tmp_path / "bad.jsonl")])
    assert rc == 2 and "bad.jsonl:1" in err and '"prompt"' in err
