"""smolagents, unchanged: `ToolCallingAgent(tools=ToolCollection.from_mcp(<londinium mcp over stdio>),
model=OpenAIServerModel(api_base=<londinium serve>))` runs to a final answer within its step limit.

smolagents' MCP adapter (mcpadapt) needs Python >= 3.12 and the 1.x `mcp` client, while londinium runs
on the 2.x SDK, so smolagents lives in an interpreter of its own: `make smolagents` builds
.venv-smolagents (or point LONDINIUM_SMOLAGENTS_PYTHON at one). Without it this test is skipped with
the reason, except under CI=true, where it fails. The model is untrained: under the tool_choice
"required" smolagents sends, its calls are valid by the grammar alone; the answer's quality is not
measured here (docs/agents.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import served

from tests.integration.agent_helpers import untrained_run
from tests.integration.mcp_helpers import mcp_workspace, server_args, server_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def smolagents_python() -> str:
    python = os.environ.get("LONDINIUM_SMOLAGENTS_PYTHON") or str(ROOT / ".venv-smolagents" / "bin" / "python")
    if Path(python).is_file() and subprocess.run([python, "-c", "import smolagents, mcpadapt.core"],
                                                 capture_output=True).returncode == 0:
        return python
    reason = f"no interpreter with smolagents[mcp] at {python}: run `make smolagents` (or set LONDINIUM_SMOLAGENTS_PYTHON)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def test_smolagents_tool_calling_agent_reaches_a_final_answer(tiny_workspace, tmp_path_factory):
    python = smolagents_python()
    ws = mcp_workspace(tiny_workspace, tmp_path_factory)
    with served(ws, untrained_run(ws)) as base:
        done = subprocess.run([python, str(Path(__file__).parent / "peers" / "smolagents_run.py"), base + "/v1", "tiny", "4",
                               "Who hath gone to the sea?", "--", sys.executable, *server_args(ws)],
                              capture_output=True, text=True, timeout=600, env=server_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result["answer"], str) and 1 <= result["steps"] <= 4, result
    # final_answer is a tool call; at the limit smolagents asks once more, without tools, for the answer
    assert result["ended"] == "max_steps" or result["calls"][-1]["name"] == "final_answer", result
    for call in result["calls"]:
        assert call["name"] in {*result["tools"], "final_answer"}, call
