"""Parse the `[tools]` section: built-ins, `[[tools.webhook]]` HTTP tools and `[[tools.mcp]]` servers.

Secret header/env values must come from environment variables (`{ env = "NAME" }`); a literal value
under a secret-looking header name is refused so keys never live in a tenant file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trunkline.tenants.model import (
    BUILTIN_TOOL_NAMES,
    HeaderValue,
    McpServerConfig,
    Secret,
    TransferSettings,
    WebhookToolConfig,
)
from trunkline.tenants.reader import Table
from trunkline.tenants.sections import ENV_NAME_RE, LoadContext, url_problem
from trunkline.tools.schema import schema_problem

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,23}$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
_SECRETISH = ("auth", "token", "secret", "key", "cookie", "password", "signature")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_FALLBACK = "Sorry, I couldn't get that done just now."
EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _secret_value(t: Table, key: str, spec: dict[str, Any], ctx: LoadContext, enabled: bool) -> Secret | None:
    env_name = spec.get("env")
    prefix = spec.get("prefix", "")
    if set(spec) - {"env", "prefix"} or not isinstance(env_name, str) or not isinstance(prefix, str):
        t.error(key, 'must be a string or { env = "NAME", prefix = "..." }')
        return None
    if not ENV_NAME_RE.match(env_name):
        t.error(key, f"{env_name!r} is not an environment variable name")
        return None
    value = ctx.env.get(env_name)
    if not value:
        if enabled and ctx.require_secrets:
            t.error(key, f"environment variable {env_name} is not set")
        return None
    return Secret(env_name, prefix + value)


def _pairs(
    t: Table, key: str, ctx: LoadContext, enabled: bool, *, headers: bool
) -> tuple[tuple[str, HeaderValue], ...]:
    """A table of names to literal strings or env-backed secrets (HTTP headers or process env)."""
    sub = t.table(key)
    if sub is None:
        return ()
    out: list[tuple[str, HeaderValue]] = []
    for name in sorted(sub.data):
        raw = sub.raw(name)
        if headers and (not _HEADER_NAME_RE.match(name) or name.lower() in _RESERVED_HEADERS):
            sub.error(name, "is not a header name a tool may set")
        elif not headers and not ENV_NAME_RE.match(name):
            sub.error(name, "is not an environment variable name")
        elif isinstance(raw, dict):
            value = _secret_value(sub, name, raw, ctx, enabled)
            if value is not None:
                out.append((name, value))
        elif not isinstance(raw, str) or "\r" in raw or "\n" in raw:
            sub.error(name, 'must be a single-line string or { env = "NAME" }')
        elif any(word in name.lower() for word in _SECRETISH):
            sub.error(name, 'looks secret: take it from an environment variable with { env = "NAME" }')
        else:
            out.append((name, raw))
    return tuple(out)


def _tool_name(t: Table, taken: set[str]) -> str | None:
    name = t.text("name", required=True, max_len=64)
    if name is None:
        return None
    if not TOOL_NAME_RE.match(name):
        t.error("name", "must be 1-64 letters, digits, '_' or '-'")
    elif name in BUILTIN_TOOL_NAMES:
        t.error("name", f"{name!r} is a built-in tool name")
    elif name in taken:
        t.error("name", f"duplicate tool name {name!r}")
    else:
        taken.add(name)
        return str(name)
    return None


def _parameters(t: Table) -> dict[str, Any]:
    raw = t.raw("parameters")
    if raw is None:
        return dict(EMPTY_OBJECT_SCHEMA)
    if not isinstance(raw, dict):
        t.error("parameters", "must be a table holding a JSON schema")
        return dict(EMPTY_OBJECT_SCHEMA)
    why = schema_problem(raw)
    if why:
        t.error("parameters", why)
        return dict(EMPTY_OBJECT_SCHEMA)
    return raw


def _url_template(t: Table, parameters: dict[str, Any]) -> str | None:
    value = t.text("url", required=True)
    if value is None:
        return None
    probe = PLACEHOLDER_RE.sub("x", value)
    why = url_problem(probe)
    if why:
        t.error("url", why)
        return None
    split = urlsplit(value)
    if "{" in split.netloc or "}" in split.netloc or "{" in split.scheme:
        t.error("url", "placeholders are only allowed in the path and query, never in the host")
        return None
    required = set(parameters.get("required", []))
    for name in PLACEHOLDER_RE.findall(value):
        if name not in parameters.get("properties", {}) or name not in required:
            t.error("url", f"placeholder {{{name}}} must be a required property in parameters")
            return None
    return str(value)


def parse_webhook(t: Table, ctx: LoadContext, taken: set[str]) -> WebhookToolConfig | None:
    name = _tool_name(t, taken)
    description = t.text("description", required=True, max_len=1000)
    enabled = t.flag("enabled", True)
    parameters = _parameters(t)
    method = t.choice("method", METHODS, "POST")
    url = _url_template(t, parameters)
    headers = _pairs(t, "headers", ctx, enabled, headers=True)
    timeout_s = t.number("timeout_s", 5.0, lo=0.1, hi=30.0)
    retries = t.integer("retries", 0, lo=0, hi=5)
    if retries and method not in ("GET", "PUT", "DELETE", "HEAD"):
        t.error("retries", f"only idempotent methods (GET, PUT, DELETE, HEAD) are retried, not {method}")
        retries = 0
    cap = t.integer("max_response_bytes", 64 * 1024, lo=1, hi=10 * 1024 * 1024)
    confirm_first = t.flag("confirm_first", False)
    fallback = t.text("fallback", DEFAULT_FALLBACK, max_len=300)
    t.finish()
    if name is None or description is None or url is None:
        return None
    return WebhookToolConfig(
        name,
        description,
        parameters,
        method,
        url,
        headers,
        timeout_s,
        retries,
        cap,
        confirm_first,
        enabled,
        fallback,
    )


def _cwd(t: Table, tenant_dir: Path) -> str | None:
    raw = t.text("cwd", max_len=500)
    if raw is None:
        return None
    path = (tenant_dir / raw).resolve()
    if not path.is_relative_to(tenant_dir.resolve()):
        t.error("cwd", "must stay inside the tenant directory")
        return None
    return str(path)


def _mcp_transport(
    t: Table, ctx: LoadContext, transport: str | None
) -> tuple[str | None, list[str], str | None]:
    command = t.text("command", required=transport == "stdio", max_len=500)
    args = t.strings("args") or []
    endpoint = t.text("url", required=transport == "http")
    if transport == "stdio" and endpoint is not None:
        t.error("url", "is only for transport 'http'")
    if transport == "http" and (command is not None or args):
        t.error("command", "command/args are only for transport 'stdio'")
    if endpoint is not None and (why := url_problem(endpoint)):
        t.error("url", why)
    allowed = ctx.allowed_mcp_commands
    if transport == "stdio" and command is not None and allowed is not None and command not in allowed:
        t.error("command", f"{command!r} is not in the server's allowed MCP commands")
    return command, args, endpoint


def parse_mcp(t: Table, ctx: LoadContext, tenant_dir: Path, seen: set[str]) -> McpServerConfig | None:
    name = t.text("name", required=True, max_len=24)
    if name is not None and not PREFIX_RE.match(name):
        t.error("name", "must start with a letter; letters, digits, '_' or '-', at most 24")
    prefix = t.text("prefix", name, max_len=24)
    if prefix is not None and (not PREFIX_RE.match(prefix) or prefix in seen):
        t.error("prefix", f"{prefix!r} is not a valid, unique tool prefix")
    seen.add(prefix or "")
    enabled = t.flag("enabled", True)
    transport = t.choice("transport", ("stdio", "http"), required=True)
    command, args, endpoint = _mcp_transport(t, ctx, transport)
    env = _pairs(t, "env", ctx, enabled, headers=False)
    headers = _pairs(t, "headers", ctx, enabled, headers=True)
    include = t.strings("include")
    confirm = t.strings("confirm_first") or []
    config = McpServerConfig(
        name=name or "",
        transport=transport or "stdio",
        prefix=prefix or "",
        command=command,
        args=tuple(args),
        env=env,
        cwd=_cwd(t, tenant_dir),
        url=endpoint,
        headers=headers,
        connect_timeout_s=t.number("connect_timeout_s", 20.0, lo=0.5, hi=120.0),
        timeout_s=t.number("timeout_s", 10.0, lo=0.1, hi=120.0),
        include=tuple(include) if include is not None else None,
        confirm_first=frozenset(confirm),
        max_result_chars=t.integer("max_result_chars", 8000, lo=100, hi=200_000),
        fallback=t.text("fallback", DEFAULT_FALLBACK, max_len=300),
        enabled=enabled,
    )
    t.finish()
    return config if name and prefix and transport else None


def parse_builtins(t: Table | None, transfer: TransferSettings) -> tuple[str, ...]:
    can_transfer = transfer.target is not None or bool(transfer.targets)
    default = ("end_call", "transfer_call") if can_transfer else ("end_call",)
    listed = t.strings("builtins") if t is not None else None
    if listed is None:
        return default
    assert t is not None
    for i, name in enumerate(listed):
        if name not in BUILTIN_TOOL_NAMES:
            t.item_error("builtins", i, f"unknown built-in {name!r} ({', '.join(BUILTIN_TOOL_NAMES)})")
        elif name == "transfer_call" and not can_transfer:
            t.item_error("builtins", i, "transfer_call needs [transfer] target or targets")
    return tuple(n for n in BUILTIN_TOOL_NAMES if n in listed)
