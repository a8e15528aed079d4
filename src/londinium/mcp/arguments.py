"""Tool and prompt arguments are checked against what the server publishes, before the SDK runs them.

The SDK (mcp 2.3) validates a tool's arguments with a pydantic model that ignores names it does not
know, so `generate` with a misspelt `temprature` ran at the default temperature and said nothing.
And a prompt that is unknown or lacks an argument came back as an error with code 0 and a traceback
in the log. `ArgumentCheck`, one middleware of the SDK's chain, answers instead:

- a tool call with an argument the tool's input schema does not list: a tool error (`is_error`, as
  for any other bad argument, so the model in the host can correct itself) naming the unknown
  arguments and the accepted ones; `tools/list` says so in every schema (`additionalProperties:
  false`);
- a tool call whose arguments the published schema refuses (validated with `jsonschema`): a tool
  error naming the argument, in one line. The SDK's pydantic models are lax, so `"temperature":
  "0.5"` ran at 0.5 and `"period_from": true` searched from the year 1: the schema says number and
  integer, and a client that sends otherwise is told, as `londinium serve` tells it;
- `prompts/get` for an unknown prompt, without a required argument or with an unknown one: a
  JSON-RPC invalid-params error (-32602, as the MCP specification asks) naming the prompt and the
  argument.
"""

from __future__ import annotations

import reprlib
from typing import Any, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent


def _said(error: Any) -> str:
    """jsonschema's message, in words for an optional argument of the wrong type (an anyOf of the type
    and null, whose own message is "not valid under any of the given schemas") and without the whole
    value when it is long (a list of 10,000 items)."""
    if error.validator in ("anyOf", "oneOf") and error.context and all(e.validator == "type" for e in error.context):
        types = " or ".join(str(sub.get("type")) for sub in error.validator_value if "type" in sub)
        return f"{reprlib.repr(error.instance)} is not of type {types}"
    if len(error.message) > 200:
        return f"{reprlib.repr(error.instance)} breaks the rule {error.validator} = {reprlib.repr(error.validator_value)}"
    return error.message


def _names(names: Any) -> str:
    return ", ".join(sorted(names)) or "none"


class ArgumentCheck:
    """SDK middleware (`MCPServer(middleware=[...])`, or appended to `server.middleware`) holding
    the tools' and prompts' published arguments; see the module docstring."""

    def __init__(self, server: Any):
        self.server = server
        self._tools: dict[str, set[str]] | None = None
        self._prompts: dict[str, dict[str, bool]] | None = None  # prompt -> {argument: required}
        self._schemas: dict[str, Draft202012Validator] = {}

    async def _published(self) -> tuple[dict[str, set[str]], dict[str, dict[str, bool]]]:
        if self._tools is None or self._prompts is None:  # tools and prompts are fixed once the server runs
            tools = await self.server.list_tools()
            self._tools = {t.name: set((t.input_schema or {}).get("properties", {})) for t in tools}
            self._schemas = {t.name: Draft202012Validator(t.input_schema or {}) for t in tools}
            self._prompts = {p.name: {a.name: bool(a.required) for a in p.arguments or []} for p in await self.server.list_prompts()}
        return self._tools, self._prompts

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if ctx.method == "tools/call":
            refused = (await self.unknown_tool_arguments(params.get("name"), params.get("arguments"))
                       or await self.invalid_tool_arguments(params.get("name"), params.get("arguments")))
            if refused:
                return CallToolResult(content=[TextContent(type="text", text=refused)], is_error=True)
        elif ctx.method == "prompts/get":
            await self.check_prompt(params.get("name"), params.get("arguments"))
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            for tool in result.get("tools", []):
                tool.get("inputSchema", {})["additionalProperties"] = False
        return result

    async def unknown_tool_arguments(self, name: Any, arguments: Any) -> str | None:
        """The error text for arguments `name` does not take; None when all are known (or the call is
        malformed in a way the SDK reports itself: an unknown tool, arguments that are no object)."""
        tools, _ = await self._published()
        if not isinstance(name, str) or name not in tools or not isinstance(arguments, Mapping):
            return None
        unknown = set(arguments) - tools[name]
        if not unknown:
            return None
        return (f"{name}: unknown argument{'s' if len(unknown) > 1 else ''} {_names(repr(a) for a in unknown)}; "
                f"it takes {_names(tools[name])}")

    async def invalid_tool_arguments(self, name: Any, arguments: Any) -> str | None:
        """The error text for arguments that the tool's published input schema refuses (a type, a
        bound, a missing one), naming the first; None when they conform (or the call is malformed
        in a way the SDK reports itself)."""
        await self._published()
        arguments = {} if arguments is None else arguments  # as the SDK reads a call without arguments
        if not isinstance(name, str) or name not in self._schemas or not isinstance(arguments, Mapping):
            return None
        error = best_match(self._schemas[name].iter_errors(dict(arguments)))
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        return f"{name}: {f'argument {where!r}: ' if where else ''}{_said(error)}"

    async def check_prompt(self, name: Any, arguments: Any) -> None:
        """Raise an invalid-params MCPError naming an unknown prompt, or a missing or unknown argument."""
        _, prompts = await self._published()
        if not isinstance(name, str):
            return  # the SDK's own validation answers that
        if name not in prompts:
            raise MCPError(INVALID_PARAMS, f"unknown prompt {name!r}; this server has: {_names(prompts)}")
        given = set(arguments) if isinstance(arguments, Mapping) else set()
        takes = prompts[name]
        missing = sorted(a for a, required in takes.items() if required and a not in given)
        if missing:
            raise MCPError(INVALID_PARAMS, f"prompt {name!r} needs the argument{'s' if len(missing) > 1 else ''} "
                                           f"{_names(repr(a) for a in missing)}; it takes {_names(takes)}")
        unknown = given - set(takes)
        if unknown:
            raise MCPError(INVALID_PARAMS, f"prompt {name!r}: unknown argument{'s' if len(unknown) > 1 else ''} "
                                           f"{_names(repr(a) for a in unknown)}; it takes {_names(takes)}")
