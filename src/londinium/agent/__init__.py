"""An agent: a tool-calling loop over MCP servers and any OpenAI-compatible model (docs/agents.md)."""

from londinium.agent.loop import AgentResult, run_agent, run_agent_async
from londinium.agent.toolbus import AgentError, ToolBus

__all__ = ["AgentError", "AgentResult", "ToolBus", "run_agent", "run_agent_async"]
