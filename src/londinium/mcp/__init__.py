"""The model and its corpus for agent hosts, over the Model Context Protocol (`londinium mcp`).

`service.py` does the work (generation, scoring, search) as plain Python; `server.py` publishes it
as MCP tools, resources and prompts with the official `mcp` SDK, over stdio or streamable HTTP.
"""
