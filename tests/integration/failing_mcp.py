"""An MCP server (the official SDK, over stdio) with one tool that always fails: the agent tests'
way to meet a real tool error."""

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("failing")


@server.tool()
def consult_oracle() -> str:
    """Ask the oracle (it is always closed)."""
    raise ToolError("the oracle is closed today")  # its message reaches the client


if __name__ == "__main__":
    server.run()
