"""Run by the smolagents test in smolagents' own interpreter (see test_smolagents.py): smolagents'
ToolCallingAgent, unchanged, with `londinium mcp` over stdio as its tools and `londinium serve` as its
model. Prints one JSON line: the final answer, the steps and every tool call the agent made.

    python smolagents_run.py BASE_URL MODEL MAX_STEPS TASK -- MCP_COMMAND...
"""

import json
import sys

from mcp import StdioServerParameters
from smolagents import OpenAIServerModel, ToolCallingAgent, ToolCollection

base_url, model, max_steps, task = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
command = sys.argv[sys.argv.index("--") + 1:]
params = StdioServerParameters(command=command[0], args=command[1:])
with ToolCollection.from_mcp(params, trust_remote_code=True, structured_output=False) as tools:
    offered = [t for t in tools.tools if t.name in ("search_corpus", "model_info")]
    agent = ToolCallingAgent(tools=offered, model=OpenAIServerModel(model_id=model, api_base=base_url, api_key="unused",
                                                                    max_tokens=300), max_steps=max_steps, verbosity_level=0)
    answer = agent.run(task)
    calls = [{"name": c.name, "arguments": c.arguments} for step in agent.memory.steps
             for c in (getattr(step, "tool_calls", None) or [])]
    steps = sum(1 for step in agent.memory.steps if type(step).__name__ == "ActionStep")
    print(json.dumps({"answer": str(answer), "steps": steps, "calls": calls,
                      "tools": {t.name: t.inputs for t in offered}}, ensure_ascii=False, default=str))
