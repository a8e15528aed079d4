"""Run by the smolagents test in smolagents' own interpreter (see test_smolagents.py): smolagents'
ToolCallingAgent (or, with --code, its CodeAgent with structured outputs), unchanged, with `londinium mcp`
over stdio as its tools and `londinium serve` as its model. Prints one JSON line: the final answer, the
steps, how the run ended ("final_answer" or "max_steps"), every tool call the agent made, and (CodeAgent)
each step's reply and whether its code was read from it.

    python smolagents_run.py BASE_URL MODEL MAX_STEPS TASK [--code] -- MCP_COMMAND...
"""

import json
import sys

from mcp import StdioServerParameters
from smolagents import CodeAgent, OpenAIServerModel, ToolCallingAgent, ToolCollection

base_url, model, max_steps, task = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
command = sys.argv[sys.argv.index("--") + 1:]
params = StdioServerParameters(command=command[0], args=command[1:])
with ToolCollection.from_mcp(params, trust_remote_code=True, structured_output=False) as tools:
    offered = [t for t in tools.tools if t.name in ("search_corpus", "model_info")]
    served = OpenAIServerModel(model_id=model, api_base=base_url, api_key="unused", max_tokens=300)
    if "--code" in sys.argv[:sys.argv.index("--")]:
        # Each reply is JSON {"thought", "code"} under smolagents' own response_format, which londinium serve honours.
        agent = CodeAgent(tools=offered, model=served, max_steps=max_steps, verbosity_level=0, use_structured_outputs_internally=True)
    else:
        agent = ToolCallingAgent(tools=offered, model=served, max_steps=max_steps, verbosity_level=0)
    answer = agent.run(task)
    calls = [{"name": c.name, "arguments": c.arguments} for step in agent.memory.steps
             for c in (getattr(step, "tool_calls", None) or [])]
    actions = [step for step in agent.memory.steps if type(step).__name__ == "ActionStep"]
    # At the limit smolagents adds one more step, without tools, that asks for the answer (AgentMaxStepsError).
    out_of_steps = [step for step in actions if type(step.error).__name__ == "AgentMaxStepsError"]
    print(json.dumps({"answer": str(answer), "steps": len(actions) - len(out_of_steps), "calls": calls,
                      "ended": "max_steps" if out_of_steps else "final_answer",
                      "tools": {t.name: t.inputs for t in offered},
                      "replies": [{"text": step.model_output, "code": getattr(step, "code_action", None),
                                   "error": type(step.error).__name__ if step.error else None} for step in actions]},
                     ensure_ascii=False, default=str))
