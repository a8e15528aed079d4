"""The agent's tools: every tool of the MCP servers it is given, through the official `mcp` client.

A server is a command line (spawned, spoken to over stdio) or an `http(s)://` URL (streamable HTTP).
Their tools are offered to the model as OpenAI function tools, each with the server's JSON Schema
as its `parameters`; a call goes back to the server that published the tool.
"""

from __future__ import annotations

import json
import shlex
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Sequence

from londinium.errors import LondiniumError


class AgentError(LondiniumError):
    """The agent cannot start or go on: an MCP server that does not answer, a tool name two servers
    publish, a model the endpoint refuses; the message names which and what to do."""


@dataclass(frozen=True)
class Observation:
    """What a tool call gave back: its text, and whether it failed (the call or the tool)."""

    text: str
    is_error: bool


def _server(spec: str) -> Any:
    """`mcp.Client`'s target for a `--mcp` value: a URL as is, a command line as stdio parameters."""
    from mcp import StdioServerParameters

    if spec.startswith(("http://", "https://")):
        return spec
    argv = shlex.split(spec)
    if not argv:
        raise AgentError("--mcp: an empty command; give a command line (e.g. 'londinium mcp') or an http(s) URL")
    return StdioServerParameters(command=argv[0], args=argv[1:])


class ToolBus:
    """The MCP servers an agent runs with, connected for the length of an `async with`."""

    def __init__(self, servers: Sequence[str], only: Sequence[str] | None = None, read_timeout_s: float = 300):
        self.servers, self.only, self.read_timeout_s = list(servers), list(only) if only else None, read_timeout_s
        self._stack = AsyncExitStack()
        self._owner: dict[str, Any] = {}  # tool name -> its server's client
        self.tools: list[dict[str, Any]] = []  # OpenAI function tools

    async def __aenter__(self) -> ToolBus:
        from mcp import Client

        await self._stack.__aenter__()
        try:
            for spec in self.servers:
                try:
                    client = await self._stack.enter_async_context(Client(_server(spec), read_timeout_seconds=self.read_timeout_s))
                    listed = (await client.list_tools()).tools
                except AgentError:
                    raise
                except Exception as e:  # noqa: BLE001 - any transport failure: one line naming the server
                    raise AgentError(f"--mcp {spec!r}: the MCP server did not answer ({type(e).__name__}: {e}); "
                                     "check the command or URL") from None
                for tool in listed:
                    if self.only is not None and tool.name not in self.only:
                        continue
                    if tool.name in self._owner:
                        raise AgentError(f"--mcp {spec!r}: the tool {tool.name!r} is published by two servers; "
                                         "give one of them, or pick tools with --tool")
                    self._owner[tool.name] = client
                    self.tools.append({"type": "function", "function": {
                        "name": tool.name, "description": tool.description or "", "parameters": tool.input_schema}})
            missing = sorted(set(self.only or ()) - set(self._owner))
            if missing:
                raise AgentError(f"--tool {missing[0]}: no MCP server publishes it (they publish: "
                                 f"{', '.join(sorted(self._owner)) or 'nothing'})")
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.aclose()

    async def call(self, name: str, arguments: str) -> Observation:
        """Run the tool `name` with `arguments` (a JSON object as text, as the model wrote it)."""
        if name not in self._owner:
            return Observation(f"there is no tool {name!r}; the tools are {', '.join(self._owner)}", True)
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as e:
            return Observation(f"the arguments are not JSON ({e})", True)
        if not isinstance(args, dict):
            return Observation("the arguments must be a JSON object", True)
        try:
            result = await self._owner[name].call_tool(name, args)
        except Exception as e:  # noqa: BLE001 - the server refused the call: the model sees why and may retry
            return Observation(f"{type(e).__name__}: {e}", True)
        text = "".join(getattr(c, "text", "") for c in result.content)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        return Observation(text, bool(result.is_error))
