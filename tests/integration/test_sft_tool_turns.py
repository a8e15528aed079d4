"""`londinium sft` on tool-use transcripts of several calls, a tool error and the reflection after it:
read, masked and trained like single-call ones, and a fault in one is one named line and exit 2."""

from __future__ import annotations

import json

import pytest
from helpers.tool_transcripts import SEARCH, call, reflecting_line
from train_helpers import cli_in_process, sft_args, train_args

from londinium.train.monitor import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = ["mercy", "crown", "sea", "night", "grave", "blood", "honour", "love"]


def _lines() -> list[dict]:
    """Per word: a transcript that fails, reflects and calls again (without its `tools`, so that it fits a
    512-token context in the tests' 512-token vocabulary), and a single-call one."""
    out = []
    for word in WORDS:
        out.append({"messages": reflecting_line(f"Where is {word}?", f"Where {word} is spoken of.")["messages"]})
        out.append({"tools": [SEARCH], "messages": [
            {"role": "user", "content": f"Find {word}."}, {"role": "assistant", "content": None, "tool_calls": [call("c1", word)]},
            {"role": "tool", "tool_call_id": "c1", "content": f"The {word} of the king"}, {"role": "assistant", "content": word}]})
    return out


def test_transcripts_of_several_calls_and_an_error_train_and_a_fault_is_named(tiny_workspace, tmp_path):
    ws = tiny_workspace
    rc, _, err = cli_in_process(train_args(ws, "tools-base", 2, "--set", "model.context=512"))
    assert rc == 0, err
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in _lines()), encoding="utf-8")
    rc, out, err = cli_in_process(sft_args(ws, "tools-base", "tools-sft", 6, data, "--set", "sft.val_share=0.25"))
    assert rc == 0, err
    assert "(data 12)" in out, out  # every line read and none left out for its length; 4 of 16 held out
    evals = [r for r in read_metrics(ws.metrics_file("tools-sft")) if r["type"] == "eval"]
    assert evals and evals[-1]["val_tokens"] > 0 and evals[-1]["val_loss"] > 0  # held-out transcripts scored

    broken = reflecting_line()
    del broken["messages"][2]  # the failed call's result: the call now goes unanswered
    data.write_text("".join(json.dumps(line) + "\n" for line in [*_lines()[:3], broken]), encoding="utf-8")
    rc, _, err = cli_in_process(sft_args(ws, "tools-base", "tools-bad", 2, data))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{data}: line 4: field 'messages[1].tool_calls[0]' (id 'c1') has no tool result" in err
