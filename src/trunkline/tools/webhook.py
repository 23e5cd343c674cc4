"""HTTP webhook tools: SSRF-guarded, time-boxed, size-capped, retried only when idempotent.

Every hop (first request and each redirect) resolves the host, refuses loopback/private/link-local/
multicast/unspecified/reserved addresses unless the tenant's `[network] allow_private` names that
host or network, and then connects to the checked IP itself (Host header and TLS SNI keep the name),
so a DNS answer that changes between check and connect cannot redirect us. Secrets come from the
tenant's env-backed headers and are never logged; neither are URLs' paths or queries (they carry
arguments) — only the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx

from trunkline.logs import get_logger
from trunkline.tenants.model import NetworkSettings, Secret, WebhookToolConfig
from trunkline.tenants.tool_config import PLACEHOLDER_RE
from trunkline.tools.catalog import (
    BLOCKED,
    ERROR,
    HTTP_ERROR,
    INVALID_ARGUMENTS,
    TIMEOUT,
    TOO_LARGE,
    ToolContext,
    ToolOutcome,
    ToolSpec,
)

log = get_logger("trunkline.tools.webhook")
Resolver = Callable[[str, int], Awaitable[list[str]]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_QUERY_METHODS = ("GET", "DELETE", "HEAD")


def make_http_client(*, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The shared client for webhook tools: no proxies from the environment, no automatic redirects."""
    return httpx.AsyncClient(
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": "trunkline-webhook/0.1"},
    )


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: str, host: str, network: NetworkSettings) -> str | None:
    """Why a tool may not connect to `address` (resolved from `host`), or None when it may. Pure."""
    try:
        ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if host.lower() in network.allow_hosts or _in_networks(ip, network):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and address_problem(str(embedded), host, network):
            return f"{host} resolves to {ip}, which embeds the non-public address {embedded}"
    for kind, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"{host} resolves to a {kind} address ({ip}); allow it in [network] allow_private"
    if not ip.is_global:
        return f"{host} resolves to a non-public address ({ip}); allow it in [network] allow_private"
    return None


def _in_networks(ip: IpAddress, network: NetworkSettings) -> bool:
    return any(ip.version == net.version and ip in net for net in network.allow_networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: connect to `connect_url` (an IP), present `host_header` and `sni`."""

    connect_url: str
    host_header: str
    sni: str | None
    origin: tuple[str, str, int]


async def check_target(url: str, network: NetworkSettings, resolver: Resolver) -> Target | str:
    """Resolve and vet `url`; returns a Target to connect to, or the reason it is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "not a valid URL"
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return "only http and https URLs with a host are allowed"
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except OSError:
            return f"cannot resolve {host}"
    if not addresses:
        return f"cannot resolve {host}"
    for address in addresses:
        if why := address_problem(address, host, network):
            return why
    ip = addresses[0].split("%", 1)[0]
    literal = f"[{ip}]" if ":" in ip else ip
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = port == (443 if parts.scheme == "https" else 80)
    host_literal = f"[{host}]" if ":" in host else host
    return Target(
        connect_url=f"{parts.scheme}://{literal}:{port}{path}",
        host_header=host_literal if default_port else f"{host_literal}:{port}",
        sni=host if parts.scheme == "https" and literal != host_literal else None,
        origin=(parts.scheme, host.lower(), port),
    )


def build_request(cfg: WebhookToolConfig, arguments: dict[str, Any]) -> tuple[str, bytes | None]:
    """URL (placeholders filled, query for GET/DELETE/HEAD) and JSON body for the other methods. Pure."""
    rest = dict(arguments)
    used: set[str] = set()

    def fill(m: Any) -> str:
        value = str(rest.get(m[1], ""))
        if value in ("", ".", ".."):
            raise ValueError(f"{m[1]} cannot be empty, '.' or '..'")
        used.add(m[1])
        return quote(value, safe="")

    url = PLACEHOLDER_RE.sub(fill, cfg.url)
    for name in used:
        rest.pop(name, None)
    if cfg.method not in _QUERY_METHODS:
        return url, json.dumps(rest, separators=(",", ":")).encode()
    pairs: list[tuple[str, str]] = []
    for key, value in rest.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, _query_value(item)))
    if pairs:
        url += ("&" if "?" in url else "?") + urlencode(pairs)
    return url, None


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def webhook_spec(cfg: WebhookToolConfig) -> ToolSpec:
    attempts = 1 + (cfg.retries if cfg.idempotent else 0)
    return ToolSpec(
        name=cfg.name,
        description=cfg.description,
        parameters=cfg.parameters,
        kind="webhook",
        confirm_first=cfg.confirm_first,
        idempotent=cfg.idempotent,
        deadline_s=cfg.timeout_s * attempts + 1.0 * (attempts - 1) + 1.0,
        fallback=cfg.fallback,
    )


def backoff_s(attempt: int) -> float:
    """Delay before retry number `attempt` (1-based): 0.2 s doubling, capped at 1 s, with jitter."""
    return min(1.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class WebhookTool:
    """Executor for one `[[tools.webhook]]` entry."""

    def __init__(
        self,
        cfg: WebhookToolConfig,
        network: NetworkSettings,
        client: httpx.AsyncClient,
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.cfg = cfg
        self._network = network
        self._client = client
        self._resolver = resolver

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        try:
            url, body = build_request(self.cfg, arguments)
        except ValueError as exc:
            return ToolOutcome(False, str(exc), INVALID_ARGUMENTS)
        attempts = 1 + (self.cfg.retries if self.cfg.idempotent else 0)
        outcome = ToolOutcome(False, "not attempted", ERROR)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_s(attempt))
            outcome, retryable = await self._attempt_bounded(url, body)
            if outcome.ok or not retryable or attempt + 1 == attempts:
                return outcome
            log.info(
                "tools.webhook_retry",
                tenant_id=ctx.tenant_id,
                tool=self.cfg.name,
                attempt=attempt + 1,
                status=outcome.status,
            )
        return outcome

    async def _attempt_bounded(self, url: str, body: bytes | None) -> tuple[ToolOutcome, bool]:
        name = self.cfg.name
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                return await self._attempt(url, body)
        except (TimeoutError, httpx.TimeoutException):
            return ToolOutcome(False, f"{name}: the service did not answer in time.", TIMEOUT), True
        except httpx.HTTPError as exc:
            return ToolOutcome(
                False, f"{name}: could not reach the service ({type(exc).__name__}).", ERROR
            ), True

    async def _attempt(self, url: str, body: bytes | None) -> tuple[ToolOutcome, bool]:
        method = self.cfg.method
        origin: tuple[str, str, int] | None = None
        send_configured = True
        for _hop in range(MAX_REDIRECTS + 1):
            target = await check_target(url, self._network, self._resolver)
            if isinstance(target, str):
                log.warning(
                    "tools.webhook_blocked", tool=self.cfg.name, host=urlsplit(url).hostname, why=target
                )
                return ToolOutcome(False, f"{self.cfg.name}: destination not allowed.", BLOCKED), False
            if origin is not None and target.origin != origin:
                send_configured = False  # never hand the tenant's headers (secrets) to another origin
            origin = target.origin
            headers = self._headers(target, send_configured, body is not None)
            extensions = {"sni_hostname": target.sni} if target.sni else None
            request = self._client.build_request(
                method, target.connect_url, headers=headers, content=body, extensions=extensions
            )
            response = await self._client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = urljoin(url, location)
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None
                    continue
                return await self._read(response)
            finally:
                await response.aclose()
        return ToolOutcome(False, f"{self.cfg.name}: too many redirects.", ERROR), False

    def _headers(self, target: Target, send_configured: bool, has_body: bool) -> dict[str, str]:
        headers = {
            "Host": target.host_header,
            "Accept": "application/json, text/plain;q=0.9",
            "Accept-Encoding": "identity",  # the size cap then counts what the server sends
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        if send_configured:
            for name, value in self.cfg.headers:
                headers[name] = value.reveal() if isinstance(value, Secret) else value
        return headers

    async def _read(self, response: httpx.Response) -> tuple[ToolOutcome, bool]:
        cap = self.cfg.max_response_bytes
        declared = response.headers.get("content-length", "")
        too_large = ToolOutcome(
            False, f"{self.cfg.name}: the response was larger than {cap} bytes.", TOO_LARGE
        )
        if declared.isdigit() and int(declared) > cap:
            return too_large, False
        buf = bytearray()
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) > cap:
                return too_large, False
        try:
            text = buf.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:
            text = buf.decode("utf-8", errors="replace")
        status = response.status_code
        if 200 <= status < 300:
            return ToolOutcome(True, text if text.strip() else f"OK (HTTP {status})"), False
        retryable = status >= 500 or status in (408, 429)
        return ToolOutcome(False, f"{self.cfg.name}: HTTP {status}: {text[:500]}", HTTP_ERROR), retryable
