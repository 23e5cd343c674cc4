"""MCP tools end to end: a real MCP server (tests/component/mcp_echo_server.py) over stdio and HTTP."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from trunkline.tenants.loader import LoadContext, load_tenant
from trunkline.tenants.model import McpServerConfig, NetworkSettings, TenantConfig
from trunkline.tools.catalog import ToolContext
from trunkline.tools.factory import build_catalog
from trunkline.tools.mcp_tools import McpToolSource, McpUnavailable
from trunkline.tools.webhook import make_http_client

ECHO_SERVER = Path(__file__).with_name("mcp_echo_server.py")
CTX = ToolContext("clinic", "call-1")
TENANT = f"""
display_name = "Clinic"
numbers = ["+15550100"]
greeting = "Hi"

[[intents]]
name = "hello"
examples = ["hi"]
reply = "Hi"

[[tools.mcp]]
name = "echo"
transport = "stdio"
command = {sys.executable!r}
args = [{str(ECHO_SERVER)!r}]
env = {{ ECHO_SECRET = {{ env = "CLINIC_ECHO_SECRET" }} }}
include = ["echo", "add", "wait_forever", "explode", "secret_env"]
confirm_first = ["add"]
timeout_s = 1.0
fallback = "The echo service is down."

[[tools.mcp]]
name = "ghost"
transport = "stdio"
command = "/nonexistent/trunkline-mcp-server"
connect_timeout_s = 5
"""


def tenant(tmp_path: Path) -> TenantConfig:
    tenant_dir = tmp_path / "clinic"
    tenant_dir.mkdir()
    (tenant_dir / "tenant.toml").write_text(TENANT)
    return load_tenant(tenant_dir, LoadContext(env={"CLINIC_ECHO_SECRET": "s3cret-value"}))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


async def test_stdio_mcp_server_end_to_end(tmp_path: Path, http: httpx.AsyncClient) -> None:
    async with AsyncExitStack() as stack:
        catalog = await build_catalog(tenant(tmp_path), http, stack)
        names = [t["function"]["name"] for t in catalog.openai_tools()]
        assert names == [
            "end_call",
            "echo_echo",
            "echo_add",
            "echo_wait_forever",
            "echo_explode",
            "echo_secret_env",
        ]
        spec = catalog.spec("echo_echo")
        assert spec is not None and spec.kind == "mcp" and spec.parameters["required"] == ["text"]

        echoed = await catalog.call("echo_echo", '{"text": "hello there"}', CTX)
        assert echoed.ok and echoed.content == "hello there"
        invalid = await catalog.call("echo_echo", '{"txt": "x"}', CTX)
        assert invalid.status == "invalid_arguments" and "'text' is a required property" in invalid.content
        assert (await catalog.call("echo_add", '{"a": 2, "b": 3}', CTX)).status == "needs_confirmation"
        added = await catalog.call("echo_add", '{"a": 2, "b": 3}', CTX, confirmed=True)
        assert added.ok and added.content == "5"

        hung = await catalog.call("echo_wait_forever", "{}", CTX)
        assert hung.status == "timeout" and hung.spoken_fallback == "The echo service is down."
        failed = await catalog.call("echo_explode", "{}", CTX)
        assert (
            not failed.ok
            and failed.status == "error"
            and failed.spoken_fallback == "The echo service is down."
        )
        # The session survives a timeout and a failing tool.
        assert (await catalog.call("echo_echo", '{"text": "still here"}', CTX)).content == "still here"
        assert (await catalog.call("echo_secret_env", "{}", CTX)).content == "set"
        assert (await catalog.call("ghost_anything", "{}", CTX)).status == "refused"


async def test_unreachable_server_raises_unavailable() -> None:
    cfg = McpServerConfig(
        name="ghost",
        transport="stdio",
        prefix="ghost",
        command="/nonexistent/mcp",
        args=(),
        env=(),
        cwd=None,
        url=None,
        headers=(),
        connect_timeout_s=5.0,
        timeout_s=1.0,
        include=None,
        confirm_first=frozenset(),
        max_result_chars=1000,
        fallback="x",
        enabled=True,
    )
    with pytest.raises(McpUnavailable):
        async with McpToolSource(cfg):
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> None:
    """Wait until the server accepts TCP connections (or fail if it exits first)."""
    async with asyncio.timeout(timeout_s):
        while True:
            assert proc.returncode is None, "MCP HTTP server exited"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


def http_cfg(port: int) -> McpServerConfig:
    return McpServerConfig(
        name="web",
        transport="http",
        prefix="web",
        command=None,
        args=(),
        env=(),
        cwd=None,
        url=f"http://127.0.0.1:{port}/mcp",
        headers=(),
        connect_timeout_s=15.0,
        timeout_s=5.0,
        include=("echo",),
        confirm_first=frozenset(),
        max_result_chars=1000,
        fallback="x",
        enabled=True,
    )


async def test_streamable_http_server_needs_explicit_allow() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ECHO_SERVER),
        "--http",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_listening(port, proc)
        with pytest.raises(McpUnavailable, match="loopback"):
            async with McpToolSource(http_cfg(port)):
                pass
        allow = NetworkSettings(allow_hosts=frozenset({"127.0.0.1"}))
        async with McpToolSource(http_cfg(port), network=allow) as source:
            ((spec, executor),) = source.tools()
            assert spec.name == "web_echo"
            outcome = await executor.run({"text": "over http"}, CTX)
            assert outcome.ok and outcome.content == "over http"
    finally:
        proc.terminate()
        await proc.wait()
