"""Load one `tenants/<tenant_id>/tenant.toml` into a frozen `TenantConfig`, or report every problem.

`load_tenant` raises `TenantFileInvalid` carrying `TenantConfigError(file, key, why)` items; it reads
only the tenant's own directory and takes the environment as a parameter (secrets are resolved here).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trunkline.tenants.intents import check_template, parse_intents, parse_slots
from trunkline.tenants.model import (
    TENANT_TEMPLATE_FIELDS,
    AfterHours,
    McpServerConfig,
    PolicySettings,
    TenantConfig,
    TransferSettings,
    WebhookToolConfig,
)
from trunkline.tenants.reader import Problems, Table, TenantConfigError, TenantFileInvalid
from trunkline.tenants.sections import (
    E164_RE,
    LoadContext,
    parse_after_hours,
    parse_asr,
    parse_hours,
    parse_limits,
    parse_llm,
    parse_network,
    parse_recording,
    parse_silence,
    parse_transfer,
    parse_tts,
)
from trunkline.tenants.tool_config import parse_builtins, parse_mcp, parse_webhook

TENANT_FILE = "tenant.toml"
TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MAX_FILE_BYTES = 256 * 1024
MAX_PROMPT_BYTES = 64 * 1024
DEFAULT_AFTER_HOURS = "Sorry, we're closed right now. Our hours are {tenant.hours}. Please call back then."
DEFAULT_FALLBACK_REPLY = "Sorry, I didn't catch that. Could you say it another way?"

__all__ = ["LoadContext", "TenantConfigError", "TenantFileInvalid", "load_tenant", "parse_tenant"]


def load_tenant(tenant_dir: Path, ctx: LoadContext) -> TenantConfig:
    """Read and validate `<tenant_dir>/tenant.toml`; the directory name is the tenant id."""
    path = tenant_dir / TENANT_FILE
    problems = Problems(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.add("(file)", f"cannot read: {exc.strerror or exc}")
        raise TenantFileInvalid(problems.errors) from None
    if len(data) > MAX_FILE_BYTES:
        problems.add("(file)", f"is {len(data)} bytes, at most {MAX_FILE_BYTES}")
        raise TenantFileInvalid(problems.errors)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("(file)", f"is not UTF-8 (byte {exc.start})")
        raise TenantFileInvalid(problems.errors) from None
    return parse_tenant(text, tenant_id=tenant_dir.name, file=str(path), tenant_dir=tenant_dir, ctx=ctx)


def parse_tenant(text: str, *, tenant_id: str, file: str, tenant_dir: Path, ctx: LoadContext) -> TenantConfig:
    """Validate TOML text as a tenant file; raises TenantFileInvalid listing every problem found."""
    problems = Problems(file)
    if not TENANT_ID_RE.match(tenant_id):
        problems.add(
            "(file)", f"directory name {tenant_id!r} is not a tenant id (lowercase letters, digits, -, _)"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add("(toml)", f"not valid TOML: {exc}")
        raise TenantFileInvalid(problems.errors) from None
    if data.get("enabled") is False:
        ctx = replace(ctx, require_secrets=False)
    config = _build(Table(data, "", problems), tenant_id, file, tenant_dir, ctx)
    if problems.errors or config is None:
        raise TenantFileInvalid(problems.errors or [TenantConfigError(file, "(file)", "invalid")])
    return config


def _numbers(t: Table) -> tuple[str, ...]:
    numbers = t.strings("numbers", required=True) or []
    seen: set[str] = set()
    for i, number in enumerate(numbers):
        if not E164_RE.match(number):
            t.item_error("numbers", i, f"{number!r} is not E.164 ('+' then 3 to 15 digits, no spaces)")
        elif number in seen:
            t.item_error("numbers", i, f"{number} is listed twice")
        seen.add(number)
    if t.has("numbers") and not numbers:
        t.error("numbers", "needs at least one number (DID)")
    return tuple(numbers)


def _prompt(t: Table, tenant_dir: Path, required: bool) -> str:
    inline = t.text("prompt", max_len=MAX_PROMPT_BYTES)
    name = t.text("prompt_file", max_len=255)
    if inline is not None and name is not None:
        t.error("prompt_file", "give either prompt or prompt_file, not both")
        return ""
    if name is None:
        if inline is None and required:
            t.error("prompt", "policy 'llm' needs a system prompt (prompt or prompt_file)")
        return inline or ""
    path = (tenant_dir / name).resolve()
    if not path.is_relative_to(tenant_dir.resolve()):
        t.error("prompt_file", "must stay inside the tenant directory")
        return ""
    try:
        data = path.read_bytes()
        if len(data) > MAX_PROMPT_BYTES:
            t.error("prompt_file", f"{name} is {len(data)} bytes, at most {MAX_PROMPT_BYTES}")
            return ""
        return data.decode("utf-8")
    except OSError as exc:
        t.error("prompt_file", f"cannot read {name}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        t.error("prompt_file", f"{name} is not UTF-8")
    return ""


def _policy(t: Table | None, has_llm: bool) -> PolicySettings:
    if t is None:
        return PolicySettings("llm" if has_llm else "intents", DEFAULT_FALLBACK_REPLY)
    mode = t.choice("mode", ("llm", "intents"), "llm" if has_llm else "intents")
    fallback = t.text("fallback_reply", DEFAULT_FALLBACK_REPLY, max_len=300)
    t.finish()
    return PolicySettings(mode, fallback)


def _after_hours(t: Table, hours_given: bool, default_target: str | None) -> AfterHours | None:
    sub = t.table("after_hours")
    if sub is None:
        return AfterHours("message", DEFAULT_AFTER_HOURS, None) if hours_given else None
    if not hours_given:
        sub.problems.add(sub.path, "after_hours needs an [hours] table to know when the business is closed")
    after = parse_after_hours(sub, default_target)
    if after is not None:
        check_template(sub, "message", after.message, TENANT_TEMPLATE_FIELDS)
    return after


@dataclass(frozen=True, slots=True)
class _Tools:
    builtins: tuple[str, ...]
    webhooks: tuple[WebhookToolConfig, ...]
    mcp: tuple[McpServerConfig, ...]


def _tools(t: Table | None, ctx: LoadContext, tenant_dir: Path, transfer: TransferSettings) -> _Tools:
    builtins = parse_builtins(t, transfer)
    if t is None:
        return _Tools(builtins, (), ())
    names: set[str] = set()
    webhooks = [w for sub in t.tables("webhook") if (w := parse_webhook(sub, ctx, names)) is not None]
    prefixes: set[str] = set()
    servers = [m for sub in t.tables("mcp", max_items=20) if (m := parse_mcp(sub, ctx, tenant_dir, prefixes))]
    t.finish()
    return _Tools(builtins, tuple(webhooks), tuple(servers))


def _identity(t: Table) -> dict[str, Any]:
    display_name = t.text("display_name", required=True, max_len=200)
    language = t.text("language", "en-US", max_len=35)
    if not LANGUAGE_RE.match(language or ""):
        t.error("language", f"{language!r} is not a language tag like 'en-US'")
    greeting = t.text("greeting", required=True, max_len=500)
    check_template(t, "greeting", greeting, TENANT_TEMPLATE_FIELDS)
    return {
        "display_name": display_name or "",
        "language": language or "en-US",
        "numbers": _numbers(t),
        "enabled": t.flag("enabled", True),
        "greeting": greeting or "",
        "redact_pii": t.flag("redact_pii", True),
    }


def _call_settings(t: Table, ctx: LoadContext) -> dict[str, Any]:
    return {
        "asr": parse_asr(t.table("asr"), ctx),
        "tts": parse_tts(t.table("tts"), ctx),
        "recording": parse_recording(t.table("recording")),
        "limits": parse_limits(t.table("limits")),
        "silence": parse_silence(t.table("silence")),
        "network": parse_network(t.table("network")),
    }


def _build(t: Table, tenant_id: str, file: str, tenant_dir: Path, ctx: LoadContext) -> TenantConfig | None:
    identity = _identity(t)
    llm_table = t.table("llm")
    llm = parse_llm(llm_table, ctx) if llm_table is not None else None
    policy = _policy(t.table("policy"), llm_table is not None)
    if policy.mode == "llm" and llm_table is None:
        t.error("llm", "policy mode 'llm' needs an [llm] table")
    prompt = _prompt(t, tenant_dir, required=policy.mode == "llm")
    hours_table = t.table("hours")
    hours = parse_hours(hours_table) if hours_table is not None else None
    transfer = parse_transfer(t.table("transfer"))
    tools = _tools(t.table("tools"), ctx, tenant_dir, transfer)
    slots = parse_slots(t.table("slots"))
    tool_names: dict[str, Any] = {w.name: w.parameters for w in tools.webhooks} | dict.fromkeys(
        tools.builtins
    )
    prefixes = {m.prefix for m in tools.mcp}
    intents = parse_intents(t.tables("intents", max_items=200), slots, tool_names, prefixes)
    if policy.mode == "intents" and not intents and "intents" not in t.data:
        t.error("intents", "policy mode 'intents' needs at least one [[intents]] entry")
    config = TenantConfig(
        tenant_id=tenant_id,
        source_file=file,
        system_prompt=prompt,
        policy=policy,
        llm=llm,
        hours=hours,
        after_hours=_after_hours(t, hours_table is not None, transfer.target),
        transfer=transfer,
        builtins=tools.builtins,
        webhooks=tools.webhooks,
        mcp_servers=tools.mcp,
        slots=MappingProxyType(slots),
        intents=intents,
        **identity,
        **_call_settings(t, ctx),
    )
    t.finish()
    return config if config.display_name and config.greeting else None
