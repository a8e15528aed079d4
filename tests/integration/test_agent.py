"""`londinium agent` end to end: a real `londinium serve` process (an untrained model, so every call's
shape comes from the tool-call grammar), `londinium mcp` over stdio, the real CLI; and the same loop
from Python, where a tool error is followed by a reflection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from serve_helpers import served

from londinium.agent import run_agent
from londinium.files import read_jsonl
from londinium.workspace import Workspace

from tests.integration.agent_helpers import mcp_command, untrained_run
from tests.integration.mcp_helpers import mcp_workspace, server_env

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory) -> Workspace:
    ws = mcp_workspace(tiny_workspace, tmp_path_factory)
    untrained_run(ws)
    return ws


@pytest.fixture(scope="module")
def url(ws):
    with served(ws, untrained_run(ws)) as base:
        yield base + "/v1"


def test_agent_cli_calls_mcp_tools_and_ends_with_an_answer(ws, url, tmp_path):
    # model_info takes no arguments, so even an untrained model's call to it is whole; final_answer's
    # string rarely closes within max_tokens, which the loop records as an error and reflects on.
    transcript = tmp_path / "agent.jsonl"
    done = subprocess.run([sys.executable, "-m", "londinium", "agent", "What model are you?", "-w", str(ws.root),
                           "--model", url, "--mcp", mcp_command(ws), "--tool", "model_info", "--max-steps", "4",
                           "--max-tokens", "200", "--seed", "1", "--transcript", str(transcript)],
                          capture_output=True, text=True, timeout=600, env=server_env())
    assert done.returncode == 0, done.stderr
    rows = list(read_jsonl(transcript))
    assert rows[0]["type"] == "task" and rows[1]["names"] == ["model_info", "final_answer"]
    assert rows[-1]["type"] == "answer" and done.stdout.split() == rows[-1]["content"].split()
    assert max(r["step"] for r in rows[:-1]) <= 4
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in rows[1]["tools"]}
    calls = [r for r in rows if r["type"] == "call"]
    assert any(c["name"] == "model_info" for c in calls), rows
    for call in calls:  # every call the untrained model made names an offered tool, arguments valid against its schema
        jsonschema.validate(json.loads(call["arguments"]), schemas[call["name"]])
        if call["name"] == "model_info":
            [seen] = [r for r in rows if r["type"] == "observation" and r["id"] == call["id"]]
            assert not seen["is_error"] and seen["content"].startswith("run mcp,")  # the MCP server's own model
    for i, r in enumerate(rows):  # each failure is followed by a reflection
        if r["type"] == "observation" and r["is_error"]:
            assert rows[i + 1]["type"] == "reflection"


@pytest.mark.slow
def test_a_tool_error_is_answered_with_a_reflection(ws, url):
    oracle = f"{sys.executable} {Path(__file__).parent / 'failing_mcp.py'}"
    for seed in range(4):  # the untrained model picks consult_oracle or final_answer at random: seeds until it tries
        result = run_agent("Ask the oracle.", url, "tiny", [oracle], max_steps=3, max_tokens=200, seed=seed)
        failed = [i for i, r in enumerate(result.transcript) if r["type"] == "observation" and r["name"] == "consult_oracle"]
        if failed:
            break
    for i in failed:
        assert result.transcript[i]["is_error"] and "oracle is closed" in result.transcript[i]["content"]
        assert result.transcript[i + 1]["type"] == "reflection" and "oracle is closed" in result.transcript[i + 1]["content"]
    assert failed, result.transcript
    assert result.stopped in ("final_answer", "max_steps") and result.steps <= 3
    assert result.transcript[-1]["type"] == "answer"


def test_an_mcp_server_that_does_not_start_is_one_line(ws, url, tmp_path):
    done = subprocess.run([sys.executable, "-m", "londinium", "agent", "Hi", "-w", str(ws.root), "--model", url,
                           "--mcp", f"{sys.executable} -c 'raise SystemExit(3)'"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--mcp" in done.stderr and "did not answer" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_tool_call_measurement_runs(ws):
    """benchmarks/tool_calls.py in its quick mode (test_benchmarks runs the others on a 128-token model,
    too short for tool signatures)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "tool_calls.py"
    done = subprocess.run([sys.executable, str(script), "-w", str(ws.root), "--run", untrained_run(ws), "--quick"],
                          capture_output=True, text=True, timeout=600, env=server_env())
    assert done.returncode == 0 and "whole+valid" in done.stdout, done.stderr


@pytest.mark.slow
def test_the_held_out_tool_task_measurement_runs(ws, tmp_path):
    """benchmarks/tool_calls.py --task tool_search, quick, through a real server: the tiny corpus has no
    titles or short lines, so the items are cut from its test documents given both."""
    from londinium.tasks.cut import TaskSpec
    from londinium.tasks.items import write_items
    from londinium.tasks.tool_search import cut_tool_search

    docs = [{**d, "title": f"Work {k}", "text": d["text"].replace(". ", ".\n")} for k, d in enumerate(read_jsonl(ws.corpus_split("test")))]
    write_items(ws.task_items("tool_search"), cut_tool_search({"test": docs}, TaskSpec(split="test", items=4)))
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "tool_calls.py"
    done = subprocess.run([sys.executable, str(script), "-w", str(ws.root), "--run", untrained_run(ws), "--task", "tool_search",
                           "--quick", "--max-tokens", "40"], capture_output=True, text=True, timeout=600, env=server_env())
    assert done.returncode == 0 and "both (the issue)" in done.stdout and "\nrequired " in done.stdout, done.stderr[-3000:]


def test_a_run_that_cannot_be_served_is_one_line(ws):
    done = subprocess.run([sys.executable, "-m", "londinium", "agent", "Hi", "-w", str(ws.root), "--model", "no-such-run"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--model no-such-run" in done.stderr and "train it first" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
