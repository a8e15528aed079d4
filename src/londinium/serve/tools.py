"""Tool calling on /v1/chat/completions: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`.

The model writes a call as the chat template renders one (`infer/chat_template.py`, the Hermes/Qwen
convention): `<tool_call>\\n{"name":"search_corpus","arguments":{"query":"Hamlet"}}\\n</tool_call>`.
Constrained decoding makes that text valid whatever the model, an untrained one included: a grammar
(llguidance's Lark, each tool's object inline as `%json`) admits only a call naming one of the tools
with arguments valid against its `parameters` schema.

- `required`, or a named function: the output must be one call (several, one per line, with
  `parallel_tool_calls`, the default as in OpenAI's API).
- `auto`: either a call or free text, chosen by the model at its first token. The text branch may not
  begin with "<", so the first character decides and the stream knows at once which it is sending;
  a model that has learnt the tags (SFT on tool transcripts) is free to use them, an untrained one
  lands in text nearly always. A marker token would be cleaner, but the vocabulary reserves none and
  never changes after `tokenizer train`.
- `none`: the tools are described in the prompt (as OpenAI does) and the output is free text.

A finished call comes back as `message.tool_calls` (ids `call_...`, `function.arguments` a JSON string),
`content: null`, `finish_reason: "tool_calls"`; streamed, as `delta.tool_calls` fragments: the index,
id and name first, then the arguments in pieces (`ToolCallStream`). A call cut off by `max_tokens` is
not a call: the text comes back as content with `finish_reason: "length"`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from londinium.infer.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from londinium.infer.constrain import Constraint, ConstraintError
from londinium.serve.errors import bad_request

CHOICES = ("none", "auto", "required")
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for a function's name
_ARGS_PREFIX = '{"name":'  # then the name as JSON, then ',"arguments":'
_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(\{.*?\})" + re.escape(TOOL_CALL_CLOSE))


@dataclass(frozen=True)
class ToolPlan:
    """A request's tools (OpenAI's dicts, for the chat template), what `tool_choice` asks and whether
    several calls may come at once; `constraint` is the grammar the output must match (None: free text)."""

    tools: list[dict[str, Any]]
    choice: str  # "none", "auto", "required", or the name of the one function to call
    parallel: bool
    constraint: Constraint | None = None

    @property
    def calls_tools(self) -> bool:
        return self.choice != "none"


def _function(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise bad_request(f"{where}: expected {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}} "
                          "(only function tools are supported)", param=where)
    f = tool["function"]
    unknown = sorted(set(f) - {"name", "description", "parameters", "strict"})
    if unknown:
        raise bad_request(f"{where}.function: unknown field {unknown[0]!r}; use name, description, parameters, strict",
                          param=f"{where}.function.{unknown[0]}")
    if not isinstance(f.get("name"), str) or not _NAME.fullmatch(f["name"]):
        raise bad_request(f"{where}.function.name must be 1 to 64 letters, digits, underscores or dashes, "
                          f"got {f.get('name')!r}", param=f"{where}.function.name")
    if not isinstance(f.get("description", ""), str):
        raise bad_request(f"{where}.function.description must be a string", param=f"{where}.function.description")
    if not isinstance(f.get("parameters", {}), dict):
        raise bad_request(f"{where}.function.parameters must be a JSON Schema object", param=f"{where}.function.parameters")
    return f


def _closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that names its properties and says
    nothing of others: arguments are decoded as OpenAI's strict mode decodes them. Still valid against
    the schema as given, but an untrained model no longer invents keys whose values never end."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_closed(v) if k not in ("const", "enum", "default", "examples") else v) for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: _closed(s) for name, s in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def _call_schema(f: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of one call of `f`: its name, then arguments valid against its parameters (a
    function without parameters takes none, as in OpenAI's API). Properties keep this order."""
    parameters = _closed(f.get("parameters")) or {"type": "object", "properties": {}, "additionalProperties": False}
    return {"type": "object", "properties": {"name": {"const": f["name"]}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False,
            # compact, as the chat template renders a call (a weak model given free whitespace spends its tokens on it)
            "x-guidance": {"whitespace_flexible": False}}


def _grammar(functions: list[dict[str, Any]], free_text: bool, parallel: bool) -> str:
    """The Lark grammar (llguidance's dialect) of what the model may write."""
    rules = [f"call_{i}: %json {json.dumps(_call_schema(f))}" for i, f in enumerate(functions)]
    call = f"call: {json.dumps(TOOL_CALL_OPEN)} ({' | '.join(f'call_{i}' for i in range(len(functions)))}) " \
           f"{json.dumps(TOOL_CALL_CLOSE)}"
    # One call ends the output at its closing tag; several may follow each other, one per line, and
    # the turn then ends with <|end|> or end-of-text as the model likes.
    calls = 'calls: call ("\\n" call)* <|end|>?' if parallel else "calls: call"
    # Free text that cannot begin with "<": the first character says which branch the model took.
    start = ["start: calls | text", "text: TEXT? <|end|>?", r"TEXT: /[^<](.|\n)*/"] if free_text else ["start: calls"]
    return "\n".join(["%llguidance {}", *start, calls, call, *rules])


def tool_plan(req: Any, engine: Any) -> ToolPlan | None:
    """The request's tools, checked (a 400 naming the `param` at fault) and compiled into a grammar
    once, before anything is queued; None when the request has no tools."""
    if req.functions or req.function_call not in (None, "none"):
        raise bad_request("functions and function_call are deprecated and not supported: send tools and tool_choice",
                          param="functions" if req.functions else "function_call")
    if not req.tools:  # an empty list is no tools, as leaving it out
        if req.tool_choice not in (None, "none"):
            raise bad_request("tool_choice needs tools: give the functions it may call", param="tool_choice")
        if req.parallel_tool_calls is not None:
            raise bad_request("parallel_tool_calls is only allowed when tools are given", param="parallel_tool_calls")
        return None
    functions = [_function(t, i) for i, t in enumerate(req.tools)]
    names = [f["name"] for f in functions]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise bad_request(f"tools: the function name {doubled[0]!r} is given twice; names must be unique", param="tools")
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if isinstance(choice, dict):
        f = choice.get("function")
        if choice.get("type") != "function" or not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise bad_request("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
                              "{'name': ...}}", param="tool_choice")
        if f["name"] not in names:
            raise bad_request(f"tool_choice names the function {f['name']!r}, which is not in tools ({', '.join(names)})",
                              param="tool_choice.function.name")
        choice = f["name"]
    elif choice not in CHOICES:
        raise bad_request(f"tool_choice {choice!r} is unknown; use 'none', 'auto', 'required' or a named function",
                          param="tool_choice")
    plan = ToolPlan(list(req.tools), choice, req.parallel_tool_calls is not False)
    if not plan.calls_tools:
        return plan
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise bad_request("response_format together with tool calls is not supported: send tool_choice 'none' to "
                          "get JSON content, or leave response_format out", param="response_format")
    for i, f in enumerate(functions):  # one by one, so the error names the tool whose schema is refused
        try:
            engine.grammars.check(Constraint.json_schema(_call_schema(f)))
        except ConstraintError as e:
            raise bad_request(f"tools[{i}].function.parameters: {e}", param=f"tools[{i}].function.parameters") from None
    chosen = functions if choice in CHOICES else [functions[names.index(choice)]]
    grammar = _grammar(chosen, free_text=choice == "auto", parallel=plan.parallel and choice in CHOICES)
    constraint = Constraint.lark(grammar)
    try:
        engine.grammars.check(constraint)
    except ConstraintError as e:
        raise bad_request(f"tools: {e}", param="tools") from None
    return ToolPlan(plan.tools, choice, plan.parallel, constraint)


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI's `tool_calls` from what the model wrote, or None if it is not whole calls (free text,
    or a call cut off by max_tokens)."""
    if not text.startswith(TOOL_CALL_OPEN):
        return None
    calls, end = [], 0
    for m in _CALL.finditer(text):
        if text[end:m.start()] not in ("", "\n"):
            return None
        try:
            call = json.loads(m.group(1))
        except json.JSONDecodeError:
            return None
        calls.append({"id": call_id(), "type": "function", "function": {
            "name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False, separators=(",", ":"))}})
        end = m.end()
    return calls if calls and text[end:] == "" else None


@dataclass
class ToolCallStream:
    """One streamed choice's text turned into `delta.tool_calls` fragments as it arrives: a call's
    index, id and name once its name is complete, then its arguments in pieces. Text that may still
    be the end of a call (`}` then the closing tag) is held back until the next piece says."""

    buffer: str = ""
    index: int = -1  # the call being streamed
    in_arguments: bool = False
    calls: int = 0  # whole calls so far

    def push(self, text: str) -> list[dict[str, Any]]:
        """The fragments (OpenAI's `delta.tool_calls` entries) that `text` completes."""
        self.buffer += text
        out: list[dict[str, Any]] = []
        while True:
            if not self.in_arguments:
                head = re.match(r"\n?" + re.escape(TOOL_CALL_OPEN + _ARGS_PREFIX) + r'("(?:[^"\\]|\\.)*"),"arguments":',
                                self.buffer)
                if not head:
                    return out
                self.index += 1
                out.append({"index": self.index, "id": call_id(), "type": "function",
                            "function": {"name": json.loads(head.group(1)), "arguments": ""}})
                self.buffer, self.in_arguments = self.buffer[head.end():], True
            end = "}" + TOOL_CALL_CLOSE  # the call object's brace, then the tag
            at = self.buffer.find(end)
            if at >= 0:
                if at:
                    out.append({"index": self.index, "function": {"arguments": self.buffer[:at]}})
                self.buffer, self.in_arguments = self.buffer[at + len(end):], False
                self.calls += 1
                continue
            keep = next((k for k in range(min(len(end), len(self.buffer)), 0, -1) if end.startswith(self.buffer[-k:])), 0)
            ready = self.buffer[:len(self.buffer) - keep]
            if ready:
                out.append({"index": self.index, "function": {"arguments": ready}})
                self.buffer = self.buffer[len(ready):]
            return out
