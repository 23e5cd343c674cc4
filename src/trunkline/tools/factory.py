"""Build a tenant's `ToolCatalog` from its config: built-ins, enabled webhooks, then MCP servers.

Called by the composition root once per tenant version. MCP connections are entered on the given
`AsyncExitStack`; close that stack (in the task that built it) when the tenant version is retired.
An MCP server that cannot be reached is logged and left out; the rest of the catalog still works.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TextIO

import httpx

from trunkline.logs import get_logger
from trunkline.tenants.model import TenantConfig
from trunkline.tools.builtins import builtin_tools
from trunkline.tools.catalog import ToolCatalog, ToolExecutor, ToolSpec
from trunkline.tools.mcp_tools import McpToolSource, McpUnavailable
from trunkline.tools.webhook import Resolver, WebhookTool, system_resolver, webhook_spec

log = get_logger("trunkline.tools")


def base_catalog(
    tenant: TenantConfig, http: httpx.AsyncClient, *, resolver: Resolver = system_resolver
) -> ToolCatalog:
    """Built-ins and enabled webhook tools (no I/O; MCP tools are added by `build_catalog`)."""
    tools: list[tuple[ToolSpec, ToolExecutor]] = builtin_tools(tenant)
    for cfg in tenant.webhooks:
        if cfg.enabled:
            tools.append((webhook_spec(cfg), WebhookTool(cfg, tenant.network, http, resolver=resolver)))
    return ToolCatalog(tenant.tenant_id, tools)


async def build_catalog(
    tenant: TenantConfig,
    http: httpx.AsyncClient,
    stack: AsyncExitStack,
    *,
    errlog: TextIO | None = None,
    resolver: Resolver = system_resolver,
) -> ToolCatalog:
    """The full catalog of `tenant`, connecting its enabled MCP servers onto `stack`."""
    catalog = base_catalog(tenant, http, resolver=resolver)
    for server in tenant.mcp_servers:
        if not server.enabled:
            continue
        source = McpToolSource(server, network=tenant.network, errlog=errlog, resolver=resolver)
        try:
            await stack.enter_async_context(source)
        except McpUnavailable:
            log.warning("tools.mcp_skipped", tenant_id=tenant.tenant_id, server=server.name)
            continue
        catalog = catalog.with_tools(source.tools())
    return catalog
