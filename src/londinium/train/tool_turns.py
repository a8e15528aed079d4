"""Tool turns in instruction data, as OpenAI's chat fine-tuning files write them, checked field by field.

    {"tools": [{"type": "function", "function": {"name": "search_corpus", "parameters": {...}}}],
     "messages": [{"role": "user", "content": "Which work has these words? ..."},
                  {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": "search_corpus", "arguments": "{\\"query\\":\\"...\\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

The assistant's calls are what it learns to write (the chat template puts them inside its turn); a
tool's result is read, never trained on (rendered as a `<tool_response>` in a user turn). Arguments
given as an object are written as compact JSON, the text the server's tool-call grammar produces.
Every error is a `DataError` naming the line and the field.
"""

from __future__ import annotations

import json
from typing import Any, Callable

Error = Callable[[str], Exception]  # a message -> the DataError to raise


def check_tools(value: Any, where: str, error: Error) -> tuple[dict[str, Any], ...]:
    """The line's `tools`: OpenAI function tools, each with a name; () when absent."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise error(f"{where}: field 'tools' must be a list of function tools")
    for i, tool in enumerate(value):
        f = _function(tool, where, f"tools[{i}]", "parameters", error)
        if not isinstance(f.get("parameters", {}), dict):
            raise error(f"{where}: field 'tools[{i}].function.parameters' must be a JSON Schema object")
    return tuple(value)


def check_calls(value: Any, where: str, field: str, error: Error) -> list[dict[str, Any]]:
    """An assistant message's `tool_calls`, each {"id", "type": "function", "function": {"name",
    "arguments": a JSON string of an object}} (an object given as arguments is written compactly)."""
    if not isinstance(value, list) or not value:
        raise error(f"{where}: field '{field}' must be a non-empty list of calls")
    calls = []
    for k, call in enumerate(value):
        at = f"{field}[{k}]"
        f = _function(call, where, at, "arguments", error)
        arguments = f.get("arguments")
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except ValueError:
                raise error(f"{where}: field '{at}.function.arguments' is not valid JSON; give a JSON object "
                            "(as a string or as an object)") from None
        else:
            parsed, arguments = arguments, json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        if not isinstance(parsed, dict):
            raise error(f"{where}: field '{at}.function.arguments' must be a JSON object, got {type(parsed).__name__}")
        if not isinstance(call.get("id", ""), str):
            raise error(f"{where}: field '{at}.id' must be a string")
        calls.append({"id": call.get("id", ""), "type": "function", "function": {"name": f["name"], "arguments": arguments}})
    return calls


def _function(entry: Any, where: str, at: str, body: str, error: Error) -> dict[str, Any]:
    """The `function` of a tool or call entry ({"type": "function", "function": {"name", body}}), named."""
    f = entry.get("function") if isinstance(entry, dict) else None
    if not isinstance(f, dict) or entry.get("type", "function") != "function":
        raise error(f"{where}: field '{at}' must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"{body}\": ...}}}}")
    if not isinstance(f.get("name"), str) or not f["name"]:
        raise error(f"{where}: field '{at}.function.name' must be a non-empty string")
    return f


def check_order(messages: list[dict[str, Any]], tools: tuple[dict[str, Any], ...], where: str, field: str,
                error: Error) -> None:
    """Tool turns as the chat API takes them, so a transcript of several calls (an error, the reflection
    after it, another call) trains like one of a single call: each call names one of the line's `tools`
    when it gives them; each tool message answers one call of the assistant turn before it (by
    `tool_call_id` when both have ids, else in the calls' order), and each call is answered once before
    the conversation goes on. Only the last turn's calls may stand unanswered: a line that ends by calling."""
    offered = {t["function"]["name"] for t in tools}
    pending: list[tuple[str, str]] = []  # (field, id) of the last assistant turn's calls not yet answered
    answered: list[str] = []  # ids of that turn's calls already answered
    turn = None  # field of the assistant turn whose calls the tool messages answer; None: no call to answer
    for i, m in enumerate(messages):
        at = f"{field}[{i}]"
        if m["role"] != "tool":
            if pending:
                call, call_id = pending[0]
                raise error(f"{where}: field '{call}'{f' (id {call_id!r})' if call_id else ''} has no tool result before "
                            f"'{at}'; answer each call with a tool message after its turn")
            calls = m.get("tool_calls") or []
            for k, call in enumerate(calls):
                name = call["function"]["name"]
                if tools and name not in offered:
                    raise error(f"{where}: field '{at}.tool_calls[{k}].function.name' is {name!r}, which 'tools' "
                                f"does not offer ({', '.join(sorted(offered))})")
            pending = [(f"{at}.tool_calls[{k}]", c["id"]) for k, c in enumerate(calls)]
            answered, turn = [], at if calls else None
            continue
        if turn is None:
            raise error(f"{where}: field '{at}' is a tool result with no assistant tool call before it")
        wanted = m.get("tool_call_id", "")
        ids = [call_id for _, call_id in pending] + answered
        if wanted and any(ids):  # matched by id; without ids on both sides, in the calls' order
            if wanted in answered:
                raise error(f"{where}: field '{at}.tool_call_id' is {wanted!r}, a call already answered; give each "
                            "call one tool message")
            match = [p for p in pending if p[1] == wanted]
            if not match:
                raise error(f"{where}: field '{at}.tool_call_id' is {wanted!r}, which no call of the assistant "
                            f"turn before it has ({', '.join(repr(c) for c in ids)})")
            done = match[0]
        elif pending:
            done = pending[0]
        else:
            raise error(f"{where}: field '{at}' is a tool result too many: every call of '{turn}' is answered; give "
                        "each call one tool message")
        pending.remove(done)
        answered.append(done[1])
