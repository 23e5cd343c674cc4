"""A tiny MCP tool server for tests (the SDK's MCPServer, formerly FastMCP), over stdio or streamable HTTP.

Run as `python mcp_echo_server.py` (stdio) or `python mcp_echo_server.py --http PORT` (127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def wait_forever() -> str:
    """Never answers (for timeout tests)."""
    await asyncio.Event().wait()
    return "unreachable"


@server.tool()
def explode() -> str:
    """Always fails."""
    raise RuntimeError("explode was called")


@server.tool()
def secret_env() -> str:
    """Say whether ECHO_SECRET reached this process (never its value)."""
    return "set" if os.environ.get("ECHO_SECRET") == "s3cret-value" else "unset"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
