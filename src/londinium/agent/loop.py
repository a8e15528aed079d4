"""The tool-calling loop: thought -> tool call -> observation, until a final answer or the step limit.

    result = run_agent("Who speaks of the sea?", base_url="http://127.0.0.1:8000/v1", model="main",
                       mcp=["londinium mcp -w ws"], max_steps=6, transcript="agent.jsonl")
    result.answer, result.steps, result.stopped   # "final_answer" or "max_steps"

Each step asks the model (any OpenAI-compatible server, through the official `openai` client) for tool
calls with `tool_choice="required"`, among the MCP servers' tools and one more, `final_answer`, as
smolagents' ToolCallingAgent does: a model that must call a tool still has a way to stop, and under
constrained decoding (londinium serve) every call is well formed, even from an untrained model. A
call that fails (a tool error, bad arguments) is answered with its error and followed by a
reflection message (Reflexion): say what went wrong, then try another way; so is a call cut off by
`max_tokens` (an untrained model's strings rarely close). When the steps run out,
the model is asked once more, without tools, for its answer from what it found. Every thought,
call, observation, reflection and the answer go to the transcript, one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from londinium.agent.toolbus import AgentError, ToolBus

FINAL_ANSWER = {"type": "function", "function": {
    "name": "final_answer", "description": "Give the final answer to the task, and end.",
    "parameters": {"type": "object", "properties": {"answer": {"type": "string", "description": "The answer."}},
                   "required": ["answer"], "additionalProperties": False}}}
SYSTEM = ("You solve the user's task with the tools you are given: call them, read what they return, and call "
          "final_answer with the answer when you have it. Cite what a tool returned.")
REFLECT = ("The call to {name} failed: {error}\nReflect on what went wrong in one sentence, then call a tool "
           "again in a different way, or give your final answer.")
OUT_OF_STEPS = "You have used all your steps. Give your final answer now, from what the tools returned."


@dataclass
class AgentResult:
    answer: str
    steps: int  # model calls that asked for tools
    stopped: str  # "final_answer" or "max_steps"
    transcript: list[dict[str, Any]] = field(default_factory=list)


class _Transcript:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.started = time.perf_counter()

    def add(self, step: int, kind: str, **data: Any) -> None:
        self.rows.append({"step": step, "type": kind, "t_s": round(time.perf_counter() - self.started, 3), **data})


async def run_agent_async(task: str, base_url: str, model: str, mcp: Sequence[str], max_steps: int = 8,
                          tools: Sequence[str] | None = None, api_key: str = "unused", max_tokens: int | None = None,
                          temperature: float | None = None, seed: int | None = None,
                          max_observation_chars: int = 2000, rows: list[dict[str, Any]] | None = None) -> AgentResult:
    """`run_agent` in a running event loop; the transcript's rows are appended to `rows` as they come."""
    import openai

    if max_steps < 1:
        raise AgentError(f"--max-steps must be at least 1, got {max_steps}")
    log = _Transcript(rows if rows is not None else [])
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
    log.add(0, "task", content=task, model=model, base_url=base_url, mcp=list(mcp))
    sampling = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)) if v is not None}

    async def ask(step: int, **extra: Any) -> Any:
        try:
            reply = await client.chat.completions.create(model=model, messages=messages, **sampling, **extra)
        except openai.APIStatusError as e:
            raise AgentError(f"the model at {base_url} refused step {step}: {e.status_code} {e.message}") from None
        except openai.APIConnectionError as e:
            raise AgentError(f"the model at {base_url} did not answer ({e}); is the server running?") from None
        return reply.choices[0]

    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600) as client, \
            ToolBus(mcp, tools) as bus:
        offered = [*bus.tools, FINAL_ANSWER]
        log.add(0, "tools", names=[t["function"]["name"] for t in offered], tools=offered)
        for step in range(1, max_steps + 1):
            # One call per step: the observation of each comes before the next is chosen.
            choice = await ask(step, tools=offered, tool_choice="required", parallel_tool_calls=False)
            message = choice.message
            if message.content:
                log.add(step, "thought", content=message.content)
            if not message.tool_calls and choice.finish_reason == "length":
                # A call cut off by max_tokens (a weak model's string that never closes): an error like any other.
                messages.append({"role": "assistant", "content": message.content or ""})
                error = "the reply was cut off at max_tokens before the call was complete"
                log.add(step, "observation", id=None, name=None, content=error, is_error=True)
                log.add(step, "reflection", content=REFLECT.format(name="a tool", error=error))
                messages.append({"role": "user", "content": REFLECT.format(name="a tool", error=error)})
                continue
            if not message.tool_calls:  # a model (or server) that answered in text: that is its answer
                log.add(step, "answer", content=message.content or "", finish_reason=choice.finish_reason)
                return AgentResult(message.content or "", step, "final_answer", log.rows)
            calls = [c.model_dump() for c in message.tool_calls]
            messages.append({"role": "assistant", "content": message.content, "tool_calls": calls})
            for call in message.tool_calls:
                name, arguments = call.function.name, call.function.arguments
                log.add(step, "call", id=call.id, name=name, arguments=arguments)
                if name == "final_answer":
                    answer = _final(arguments)
                    log.add(step, "answer", content=answer)
                    return AgentResult(answer, step, "final_answer", log.rows)
                seen = await bus.call(name, arguments)
                text = seen.text if len(seen.text) <= max_observation_chars else seen.text[:max_observation_chars] + " [...]"
                log.add(step, "observation", id=call.id, name=name, content=text, is_error=seen.is_error)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
                if seen.is_error:
                    reflection = REFLECT.format(name=name, error=text)
                    log.add(step, "reflection", content=reflection)
                    messages.append({"role": "user", "content": reflection})
        messages.append({"role": "user", "content": OUT_OF_STEPS})
        choice = await ask(max_steps + 1)
        answer = choice.message.content or ""
        log.add(max_steps + 1, "answer", content=answer, finish_reason=choice.finish_reason)
        return AgentResult(answer, max_steps, "max_steps", log.rows)


def _final(arguments: str) -> str:
    try:
        value = json.loads(arguments).get("answer", "")
    except (json.JSONDecodeError, AttributeError):
        return arguments
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def run_agent(task: str, base_url: str, model: str, mcp: Sequence[str], max_steps: int = 8,
              transcript: str | Path | None = None, **options: Any) -> AgentResult:
    """Run the loop to an answer (see the module's docstring); `options` are `run_agent_async`'s. The
    transcript (JSONL) is written atomically when the run ends, and also when it fails, with what it
    holds by then."""
    from londinium.files import write_jsonl

    rows: list[dict[str, Any]] = []
    try:
        return asyncio.run(run_agent_async(task, base_url, model, mcp, max_steps, rows=rows, **options))
    finally:
        if transcript is not None and rows:
            write_jsonl(transcript, rows)
