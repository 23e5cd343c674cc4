"""Tools from MCP servers (the `mcp` SDK): stdio subprocesses or streamable-HTTP endpoints.

`McpToolSource` is an async context manager owning one connection: it lists the server's tools into
`(ToolSpec, executor)` pairs named `<prefix>_<tool>` and calls them with a timeout. Enter and exit it
in the same task (the SDK uses anyio cancel scopes); calls may come from any task.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from trunkline.logs import get_logger
from trunkline.tenants.model import McpServerConfig, NetworkSettings, Secret
from trunkline.tenants.tool_config import TOOL_NAME_RE
from trunkline.tools.catalog import ERROR, TIMEOUT, ToolContext, ToolExecutor, ToolOutcome, ToolSpec
from trunkline.tools.schema import schema_problem
from trunkline.tools.webhook import Resolver, check_target, system_resolver

log = get_logger("trunkline.tools.mcp")
MAX_LIST_PAGES = 10
MAX_DESCRIPTION_CHARS = 1000


class McpUnavailable(Exception):
    """The MCP server could not be started, reached or listed; its tools are left out of the catalog."""


def _plain(pairs: tuple[tuple[str, str | Secret], ...]) -> dict[str, str]:
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in pairs}


def render_result(result: Any, max_chars: int) -> tuple[bool, str]:
    """(ok, text) from a CallToolResult: text parts joined, else the structured content as JSON."""
    parts: list[str] = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, separators=(",", ":"), default=str)
    return not result.is_error, text[:max_chars]


class McpTool:
    """Executor for one MCP tool: `tools/call` with the server's own name, bounded by `timeout_s`."""

    def __init__(self, source: McpToolSource, remote_name: str) -> None:
        self._source = source
        self._remote = remote_name

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        return await self._source.call(self._remote, arguments)


class McpToolSource:
    """One tenant's connection to one MCP server."""

    def __init__(
        self,
        cfg: McpServerConfig,
        *,
        network: NetworkSettings | None = None,
        errlog: TextIO | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.cfg = cfg
        self._network = network or NetworkSettings()
        self._errlog = errlog or sys.stderr
        self._resolver = resolver
        self._stack: AsyncExitStack | None = None
        self._client: Client | None = None
        self._tools: list[tuple[ToolSpec, ToolExecutor]] = []

    async def __aenter__(self) -> McpToolSource:
        stack = AsyncExitStack()
        try:
            # asyncio.timeout, not an anyio scope: the client's task groups outlive this block.
            async with asyncio.timeout(self.cfg.connect_timeout_s):
                client = await stack.enter_async_context(Client(await self._transport(stack), mode="legacy"))
                self._client = client
                self._tools = await self._list_tools(client)
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, McpUnavailable):
                log.warning("tools.mcp_unavailable", server=self.cfg.name, error=str(exc))
                raise
            if isinstance(exc, Exception):
                log.warning("tools.mcp_unavailable", server=self.cfg.name, error=type(exc).__name__)
                raise McpUnavailable(f"MCP server {self.cfg.name!r}: {type(exc).__name__}") from exc
            raise
        self._stack = stack
        log.info("tools.mcp_connected", server=self.cfg.name, tools=[s.name for s, _ in self._tools])
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _transport(self, stack: AsyncExitStack) -> Any:
        cfg = self.cfg
        if cfg.transport == "stdio":
            params = StdioServerParameters(
                command=cfg.command or "", args=list(cfg.args), env=_plain(cfg.env) or None, cwd=cfg.cwd
            )
            return stdio_client(params, errlog=self._errlog)
        target = await check_target(cfg.url or "", self._network, self._resolver)
        if isinstance(target, str):
            raise McpUnavailable(f"MCP server {cfg.name!r}: {target}")
        http = httpx2.AsyncClient(
            headers=_plain(cfg.headers),
            timeout=httpx2.Timeout(cfg.timeout_s, read=max(cfg.timeout_s, 60.0)),
            trust_env=False,
        )
        await stack.enter_async_context(http)
        return streamable_http_client(cfg.url or "", http_client=http)

    async def _list_tools(self, client: Client) -> list[tuple[ToolSpec, ToolExecutor]]:
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            found.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return [entry for tool in found if (entry := self._entry(tool)) is not None]

    def _entry(self, tool: Any) -> tuple[ToolSpec, ToolExecutor] | None:
        cfg = self.cfg
        if cfg.include is not None and tool.name not in cfg.include:
            return None
        name = f"{cfg.prefix}_{tool.name}"
        schema = dict(tool.input_schema or {"type": "object", "properties": {}})
        why = None if TOOL_NAME_RE.match(name) else "name is not a valid tool name"
        why = why or schema_problem(schema)
        if why:
            log.warning("tools.mcp_tool_skipped", server=cfg.name, tool=str(tool.name)[:64], why=why)
            return None
        spec = ToolSpec(
            name=name,
            description=(tool.description or tool.name)[:MAX_DESCRIPTION_CHARS],
            parameters=schema,
            kind="mcp",
            confirm_first=tool.name in cfg.confirm_first,
            deadline_s=cfg.timeout_s + 1.0,
            fallback=cfg.fallback,
        )
        return spec, McpTool(self, tool.name)

    def tools(self) -> list[tuple[ToolSpec, ToolExecutor]]:
        """The listed tools (after `include`), ready for `ToolCatalog.with_tools()`."""
        return list(self._tools)

    async def call(self, remote_name: str, arguments: dict[str, Any]) -> ToolOutcome:
        client = self._client
        if client is None:
            return ToolOutcome(False, f"MCP server {self.cfg.name} is not connected.", ERROR)
        try:
            with anyio.fail_after(self.cfg.timeout_s):
                result = await client.call_tool(
                    remote_name, arguments, read_timeout_seconds=self.cfg.timeout_s
                )
        except TimeoutError:
            return ToolOutcome(False, f"{remote_name} did not answer in time.", TIMEOUT)
        except Exception as exc:  # the SDK raises MCPError, validation and transport errors
            log.warning(
                "tools.mcp_call_failed", server=self.cfg.name, tool=remote_name, error=type(exc).__name__
            )
            message = "did not answer in time" if "timed out" in str(exc) else "failed"
            return ToolOutcome(
                False, f"{remote_name} {message}.", TIMEOUT if "timed out" in str(exc) else ERROR
            )
        ok, text = render_result(result, self.cfg.max_result_chars)
        return ToolOutcome(ok, text or ("OK" if ok else f"{remote_name} failed."), "ok" if ok else ERROR)
