"""Webhook tools against a real HTTP server on 127.0.0.1: SSRF guard, timeouts, caps, retries, redirects."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from trunkline.tenants.loader import LoadContext, load_tenant
from trunkline.tenants.model import NetworkSettings, Secret, WebhookToolConfig
from trunkline.tenants.sections import parse_network
from trunkline.tools.catalog import ToolBudget, ToolCatalog, ToolContext
from trunkline.tools.factory import base_catalog
from trunkline.tools.webhook import (
    WebhookTool,
    address_problem,
    build_request,
    make_http_client,
    webhook_spec,
)

ALLOW_LOCAL = NetworkSettings(allow_hosts=frozenset({"127.0.0.1"}))
CTX = ToolContext("acme", "call-1")


class MiniHttp:
    """A tiny HTTP/1.1 server on 127.0.0.1 with the routes these tests need; counts hits per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, object]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        parts = urlsplit(target)
        self.hits[parts.path] += 1
        request: dict[str, object] = {
            "method": method,
            "path": parts.path,
            "query": parse_qs(parts.query),
            "headers": headers,
            "body": body.decode(),
        }
        self.requests.append(request)
        query = parse_qs(parts.query)
        if parts.path == "/slow":
            await asyncio.Event().wait()  # never answers; cancelled when the server closes
        elif parts.path == "/fail":
            await self._reply(writer, 500, b"oops")
        elif parts.path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            for _ in range(256):  # 4 MiB, far above any cap used here
                writer.write(b"x" * 16384)
                await writer.drain()
        elif parts.path == "/big-declared":
            await self._reply(writer, 200, b"small", extra="Content-Length: 50000000\r\n", length=False)
        elif parts.path == "/redirect":
            await self._reply(
                writer, int(query.get("code", ["302"])[0]), b"", extra=f"Location: {query['to'][0]}\r\n"
            )
        else:
            await self._reply(writer, 200, json.dumps(request).encode(), ctype="application/json")

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        extra: str = "",
        ctype: str = "text/plain",
        length: bool = True,
    ) -> None:
        size = f"Content-Length: {len(body)}\r\n" if length else ""
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n{size}{extra}Connection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[MiniHttp]:
    srv = MiniHttp()
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


def hook(url: str, **overrides: object) -> WebhookToolConfig:
    base = WebhookToolConfig(
        name="lookup",
        description="Look something up",
        parameters={"type": "object", "properties": {"q": {"type": "string"}}},
        method="POST",
        url=url,
        headers=(("Authorization", Secret("HOOK_TOKEN", "Bearer t0ken")), ("X-Plain", "yes")),
        timeout_s=2.0,
        retries=0,
        max_response_bytes=4096,
        confirm_first=False,
        enabled=True,
        fallback="Sorry, the lookup is down.",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def catalog_for(
    cfg: WebhookToolConfig, http: httpx.AsyncClient, network: NetworkSettings = ALLOW_LOCAL, **kwargs: object
) -> ToolCatalog:
    return ToolCatalog("acme", [(webhook_spec(cfg), WebhookTool(cfg, network, http, **kwargs))])  # type: ignore[arg-type]


TENANT = """
display_name = "Acme"
numbers = ["+15550100"]
greeting = "Hi"
[[intents]]
name = "hello"
examples = ["hi"]
reply = "Hi"
[[tools.webhook]]
name = "book"
description = "Book a slot"
url = "{base}/book/{{day}}"
headers = {{ Authorization = {{ env = "ACME_HOOK_TOKEN", prefix = "Bearer " }} }}
[tools.webhook.parameters]
type = "object"
required = ["day"]
properties = {{ day = {{ type = "string" }}, time = {{ type = "string" }} }}
"""


async def test_tenant_webhook_reaches_local_server_only_with_explicit_allow(
    tmp_path: Path, server: MiniHttp, http: httpx.AsyncClient
) -> None:
    tenant_dir = tmp_path / "acme"
    tenant_dir.mkdir()
    text = TENANT.format(base=server.base)
    env = {"ACME_HOOK_TOKEN": "s3cret"}
    (tenant_dir / "tenant.toml").write_text(text + '[network]\nallow_private = ["127.0.0.1"]\n')
    allowed = base_catalog(load_tenant(tenant_dir, LoadContext(env=env)), http)
    result = await allowed.call("book", '{"day": "mon day", "time": "10:00"}', CTX)
    assert result.ok and result.status == "ok" and result.spoken_fallback is None
    seen = json.loads(result.content)
    assert seen["method"] == "POST" and seen["path"] == "/book/mon%20day"
    assert json.loads(str(seen["body"])) == {"time": "10:00"}
    assert seen["headers"]["authorization"] == "Bearer s3cret"
    assert seen["headers"]["host"] == f"127.0.0.1:{server.port}"

    (tenant_dir / "tenant.toml").write_text(text)
    refused = base_catalog(load_tenant(tenant_dir, LoadContext(env=env)), http)
    result = await refused.call("book", '{"day": "monday"}', CTX)
    assert not result.ok and result.status == "blocked"
    assert result.spoken_fallback == "Sorry, I couldn't get that done just now."
    assert server.hits["/book/monday"] == 0


async def test_slow_server_times_out_with_fallback(server: MiniHttp, http: httpx.AsyncClient) -> None:
    catalog = catalog_for(hook(f"{server.base}/slow", timeout_s=0.3), http)
    result = await catalog.call("lookup", "{}", CTX)
    assert result.status == "timeout" and result.spoken_fallback == "Sorry, the lookup is down."
    assert server.hits["/slow"] == 1


async def test_server_error_is_retried_only_for_idempotent_methods(
    server: MiniHttp, http: httpx.AsyncClient
) -> None:
    post = await catalog_for(hook(f"{server.base}/fail", retries=0), http).call("lookup", "{}", CTX)
    assert post.status == "http_error" and "HTTP 500" in post.content and server.hits["/fail"] == 1
    get = await catalog_for(hook(f"{server.base}/fail", method="GET", retries=2), http).call(
        "lookup", "{}", CTX
    )
    assert get.status == "http_error" and server.hits["/fail"] == 4  # 1 POST + 3 GET attempts
    # A config that sneaks retries onto a POST (bypassing the loader) is still not retried.
    sneaky = await catalog_for(hook(f"{server.base}/fail", retries=3), http).call("lookup", "{}", CTX)
    assert sneaky.status == "http_error" and server.hits["/fail"] == 5


@pytest.mark.parametrize("path", ["/big", "/big-declared"])
async def test_oversized_response_is_capped(server: MiniHttp, http: httpx.AsyncClient, path: str) -> None:
    result = await catalog_for(hook(server.base + path), http).call("lookup", "{}", CTX)
    assert result.status == "too_large" and result.spoken_fallback is not None and len(result.content) < 200


async def test_get_sends_arguments_as_query(server: MiniHttp, http: httpx.AsyncClient) -> None:
    cfg = hook(f"{server.base}/search?src=phone", method="GET")
    result = await catalog_for(cfg, http).call("lookup", '{"q": "3 bed"}', CTX)
    seen = json.loads(result.content)
    assert (
        seen["method"] == "GET" and seen["query"] == {"src": ["phone"], "q": ["3 bed"]} and seen["body"] == ""
    )


async def test_redirects_are_rechecked(server: MiniHttp, http: httpx.AsyncClient) -> None:
    def via(to: str, code: int = 302) -> str:
        return f"{server.base}/redirect?code={code}&to={quote(to, safe='')}"

    ok = await catalog_for(hook(via("/echo", 307)), http).call("lookup", '{"q": "x"}', CTX)
    assert ok.ok and json.loads(ok.content)["method"] == "POST" and server.hits["/echo"] == 1
    for target in ("http://127.0.0.2:9/echo", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/"):
        blocked = await catalog_for(hook(via(target)), http).call("lookup", "{}", CTX)
        assert blocked.status == "blocked", target
    loop = await catalog_for(hook(via(via("/echo"))), http).call("lookup", "{}", CTX)
    assert loop.ok  # two hops are fine
    four_hops = via(via(via(via("/echo"))))
    assert (
        await catalog_for(hook(four_hops), http).call("lookup", "{}", CTX)
    ).content == "lookup: too many redirects."


async def test_cross_origin_redirect_drops_tenant_headers(server: MiniHttp, http: httpx.AsyncClient) -> None:
    other = MiniHttp()
    await other.start()
    try:
        same = await catalog_for(hook(f"{server.base}/redirect?to=/echo"), http).call("lookup", "{}", CTX)
        assert json.loads(same.content)["headers"]["authorization"] == "Bearer t0ken"
        cross = hook(f"{server.base}/redirect?code=307&to={other.base}/echo")
        seen = json.loads((await catalog_for(cross, http).call("lookup", "{}", CTX)).content)
        assert "authorization" not in seen["headers"] and "x-plain" not in seen["headers"]
    finally:
        await other.close()


async def test_connects_to_the_checked_address_not_a_second_lookup(
    server: MiniHttp, http: httpx.AsyncClient
) -> None:
    answers: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        answers.append(host)
        return ["127.0.0.1"]

    network = parse_network_allow(["127.0.0.0/8"])
    cfg = hook(f"http://booking.internal.test:{server.port}/echo")
    result = await catalog_for(cfg, http, network, resolver=resolver).call("lookup", "{}", CTX)
    assert result.ok and answers == ["booking.internal.test"]
    assert json.loads(result.content)["headers"]["host"] == f"booking.internal.test:{server.port}"

    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]  # one public, one loopback answer: refused, nothing sent

    blocked = await catalog_for(cfg, http, NetworkSettings(), resolver=mixed).call("lookup", "{}", CTX)
    assert blocked.status == "blocked" and server.hits["/echo"] == 1


def self_signed(tmp_path: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    plain = serialization.NoEncryption()
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain)
    )
    return cert_path, key_path


async def test_https_connects_to_checked_ip_and_verifies_the_name(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hooks.example.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    heads: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append((await reader.readuntil(b"\r\n\r\n")).decode())
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    network = parse_network_allow(["127.0.0.1/32"])
    try:
        async with make_http_client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            for host, ok in (("hooks.example.test", True), ("wrong.example.test", False)):
                cfg = hook(f"https://{host}:{port}/x", method="GET")
                result = await catalog_for(cfg, client, network, resolver=resolver).call("lookup", "{}", CTX)
                assert result.ok is ok, (host, result)
    finally:
        srv.close()
        await srv.wait_closed()
    assert len(heads) == 1 and f"host: hooks.example.test:{port}" in heads[0].lower()


def parse_network_allow(entries: list[str]) -> NetworkSettings:
    from trunkline.tenants.reader import Problems, Table

    problems = Problems("test")
    network = parse_network(Table({"allow_private": entries}, "network", problems))
    assert not problems.errors
    return network


async def test_catalog_refuses_before_anything_runs(server: MiniHttp, http: httpx.AsyncClient) -> None:
    confirm = hook(
        f"{server.base}/echo",
        name="book",
        confirm_first=True,
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    acme = catalog_for(confirm, http)
    other = ToolCatalog(
        "globex",
        [
            (
                webhook_spec(hook(f"{server.base}/echo", name="globex_secret")),
                WebhookTool(hook(f"{server.base}/echo"), ALLOW_LOCAL, http),
            )
        ],
    )
    assert [t["function"]["name"] for t in acme.openai_tools()] == ["book"]
    assert acme.openai_tools()[0]["type"] == "function"
    assert (await acme.call("globex_secret", "{}", CTX)).status == "refused"
    assert (await other.call("globex_secret", "{}", CTX)).status == "refused"  # ctx is tenant acme
    bad = await acme.call("book", '{"n": "two"}', CTX)
    assert bad.status == "invalid_arguments" and "n: 'two' is not of type 'integer'" in bad.content
    assert (await acme.call("book", '{"n": 2}', CTX)).status == "needs_confirmation"
    assert server.hits["/echo"] == 0
    assert (await acme.call("book", '{"n": 2}', CTX, confirmed=True)).ok
    budget = ToolContext("acme", "call-2", budget=ToolBudget(2))
    statuses = [(await acme.call("book", '{"n": 1}', budget, confirmed=True)).status for _ in range(3)]
    assert statuses == ["ok", "ok", "limit"] and server.hits["/echo"] == 3


PRIVATE_V4 = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="172.16.0.0/12"),
    st.ip_addresses(network="192.168.0.0/16"),
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="169.254.0.0/16"),
    st.ip_addresses(network="0.0.0.0/8"),
    st.ip_addresses(network="224.0.0.0/4"),
    st.ip_addresses(network="100.64.0.0/10"),
)


@given(PRIVATE_V4)
def test_every_non_public_v4_address_is_refused_unless_allowed(ip: object) -> None:
    assert address_problem(str(ip), "h.example", NetworkSettings()) is not None
    assert address_problem(f"::ffff:{ip}", "h.example", NetworkSettings()) is not None
    assert (
        address_problem(str(ip), "h.example", NetworkSettings(allow_hosts=frozenset({"h.example"}))) is None
    )
    assert address_problem(str(ip), "h.example", parse_network_allow([f"{ip}/32"])) is None


@pytest.mark.parametrize("ip", ["::1", "fe80::1", "fc00::1", "::", "ff02::1", "2002:7f00:1::1"])
def test_non_public_v6_addresses_are_refused(ip: str) -> None:
    assert address_problem(ip, "h.example", NetworkSettings()) is not None


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(ip: str) -> None:
    assert address_problem(ip, "h.example", NetworkSettings()) is None


def test_build_request_quotes_path_arguments_and_refuses_dot_segments() -> None:
    cfg = hook("https://api.example.com/items/{id}/notes?v=1", method="DELETE")
    assert build_request(cfg, {"id": "a/../b c", "force": True}) == (
        "https://api.example.com/items/a%2F..%2Fb%20c/notes?v=1&force=true",
        None,
    )
    with pytest.raises(ValueError, match=r"'\.\.'"):
        build_request(cfg, {"id": ".."})
    post = hook("https://api.example.com/items/{id}")
    assert build_request(post, {"id": "7", "qty": 2}) == ("https://api.example.com/items/7", b'{"qty":2}')
