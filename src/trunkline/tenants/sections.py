"""Parsers for the plain settings sections of `tenant.toml` (speech, LLM, hours, limits, network, ...).

Each takes a `Table` and returns a frozen settings object, recording problems on the way; shared
helpers check URLs, E.164 numbers, transfer targets and resolve `*_env` secrets from a passed-in env.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trunkline.tenants.model import (
    DEFAULT_TRANSFER_FAILED,
    WEEKDAYS,
    AfterHours,
    AsrSettings,
    BusinessHours,
    IpNetwork,
    Limits,
    LlmSettings,
    NetworkSettings,
    RecordingSettings,
    Secret,
    SilenceSettings,
    TimeRange,
    TransferSettings,
    TtsSettings,
)
from trunkline.tenants.reader import Table

E164_RE = re.compile(r"^\+[1-9][0-9]{2,14}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SIP_URI_RE = re.compile(r"^sips?:[^@\s]+@[A-Za-z0-9.\-\[\]:]+(;[^\s]*)?$")
_RANGE_RE = re.compile(r"^([0-2][0-9]):([0-5][0-9])-([0-2][0-9]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a tenant file is checked against: its environment (for secrets) and operator policy."""

    env: Mapping[str, str]
    allowed_mcp_commands: frozenset[str] | None = None
    require_secrets: bool = True  # False for a disabled tenant: checked, but its env vars may be unset


def secret(t: Table, key: str, ctx: LoadContext, *, required: bool = False) -> Secret | None:
    """Read `key` as an env var *name* and resolve it; a missing variable is an error for this tenant."""
    name = t.text(key, required=required, max_len=128)
    if name is None:
        return None
    if not ENV_NAME_RE.match(name):
        # never echo the value: an operator may have pasted the secret itself here
        t.error(key, "must be the name of an environment variable (A-Z, 0-9, _), not a value")
        return None
    value = ctx.env.get(name)
    if not value:
        if ctx.require_secrets:
            t.error(key, f"environment variable {name} is not set")
        return None
    return Secret(name, value)


def url(t: Table, key: str, *, required: bool = False) -> str | None:
    value = t.text(key, required=required)
    if value is None:
        return None
    why = url_problem(value)
    if why:
        t.error(key, why)
        return None
    return str(value)


def url_problem(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http or https URL, got scheme {parts.scheme!r}"
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials; put them in headers taken from environment variables"
    return None


def transfer_target_problem(value: str) -> str | None:
    if E164_RE.match(value) or SIP_URI_RE.match(value):
        return None
    return f"must be an E.164 number like '+15550100' or a sip: URI, got {value!r}"


def parse_llm(t: Table, ctx: LoadContext) -> LlmSettings | None:
    base_url = url(t, "base_url") or "https://api.openai.com/v1"
    model = t.text("model", required=True, max_len=200)
    api_key = secret(t, "api_key_env", ctx)
    timeout_s = t.number("timeout_s", 10.0, lo=0.5, hi=120.0)
    temperature = t.number("temperature", 0.4, lo=0.0, hi=2.0)
    max_tokens = t.integer("max_tokens", 300, lo=16, hi=8192)
    t.finish()
    if model is None:
        return None
    return LlmSettings(base_url, model, api_key, timeout_s, temperature, max_tokens)


def parse_asr(t: Table | None, ctx: LoadContext) -> AsrSettings:
    if t is None:
        return AsrSettings("local", "bundled", None, None)
    engine = t.choice("engine", ("local", "openai"), "local")
    model = t.text("model", "bundled" if engine == "local" else "whisper-1", max_len=200)
    base_url = url(t, "base_url")
    api_key = secret(t, "api_key_env", ctx, required=engine == "openai")
    t.finish()
    return AsrSettings(engine, model, base_url, api_key)


def parse_tts(t: Table | None, ctx: LoadContext) -> TtsSettings:
    if t is None:
        return TtsSettings("local", "joe", None, None, None)
    engine = t.choice("engine", ("local", "openai"), "local")
    voice = t.text("voice", "joe" if engine == "local" else "alloy", max_len=200)
    model = t.text("model", None if engine == "local" else "tts-1", max_len=200)
    base_url = url(t, "base_url")
    api_key = secret(t, "api_key_env", ctx, required=engine == "openai")
    t.finish()
    return TtsSettings(engine, voice, model, base_url, api_key)


def _day_ranges(t: Table, day: str) -> tuple[TimeRange, ...]:
    value = t.raw(day)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        t.error(day, "must be a range like '08:00-17:00' or an array of them ([] = closed)")
        return ()
    ranges: list[TimeRange] = []
    for item in items:
        m = _RANGE_RE.match(item.strip())
        start = int(m[1]) * 60 + int(m[2]) if m else -1
        end = int(m[3]) * 60 + int(m[4]) if m else -1
        if not m or start >= 1440 or end > 1440 or start >= end:
            t.error(day, f"{item!r} is not a range like '08:00-17:00' (start before end, end at most 24:00)")
            return ()
        ranges.append(TimeRange(start, end))
    ranges.sort(key=lambda r: r.start_min)
    for a, b in itertools.pairwise(ranges):
        if b.start_min < a.end_min:
            t.error(day, f"ranges {a.spoken()} and {b.spoken()} overlap")
            return ()
    return tuple(ranges)


def parse_hours(t: Table) -> BusinessHours | None:
    tz = t.text("timezone", required=True, max_len=64)
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            t.error("timezone", f"unknown time zone {tz!r} (use an IANA name like 'America/New_York')")
            tz = None
    weekly = tuple(_day_ranges(t, day) for day in WEEKDAYS)
    closed: set[date] = set()
    for i, raw in enumerate(t.strings("closed_dates") or []):
        try:
            closed.add(date.fromisoformat(raw))
        except ValueError:
            t.item_error("closed_dates", i, f"{raw!r} is not a date like '2025-12-25'")
    t.finish()
    return BusinessHours(tz, weekly, frozenset(closed)) if tz else None


def parse_after_hours(t: Table, default_target: str | None) -> AfterHours | None:
    action = t.choice("action", ("message", "transfer", "take_message"), required=True)
    message = t.text("message", required=True)
    target = t.text("transfer_target", max_len=200)
    if target is not None and (why := transfer_target_problem(target)):
        t.error("transfer_target", why)
    if action == "transfer" and target is None and default_target is None:
        t.error("transfer_target", "action 'transfer' needs a transfer_target here or in [transfer]")
    t.finish()
    if action is None or message is None:
        return None
    return AfterHours(action, message, target or (default_target if action == "transfer" else None))


def parse_transfer(t: Table | None) -> TransferSettings:
    if t is None:
        return TransferSettings(None, MappingProxyType({}))
    target = t.text("target", max_len=200)
    if target is not None and (why := transfer_target_problem(target)):
        t.error("target", why)
        target = None
    named: dict[str, str] = {}
    sub = t.table("targets")
    if sub is not None:
        for name in sorted(sub.data):
            value = sub.text(name, max_len=200)
            if not re.match(r"^[a-z][a-z0-9_]{0,31}$", name):
                sub.error(name, "target names must be lower_snake_case, at most 32 characters")
            elif value is not None and (why := transfer_target_problem(value)):
                sub.error(name, why)
            elif value is not None:
                named[name] = value
    failed = t.text("failed_message", DEFAULT_TRANSFER_FAILED, max_len=300)
    t.finish()
    return TransferSettings(target, MappingProxyType(named), failed or DEFAULT_TRANSFER_FAILED)


def parse_recording(t: Table | None) -> RecordingSettings:
    if t is None:
        return RecordingSettings(False, None)
    enabled = t.flag("enabled", False)
    disclosure = t.text("disclosure", max_len=500)
    if enabled and disclosure is None:
        t.error("disclosure", "recording is enabled, so a disclosure line the caller hears is required")
    t.finish()
    return RecordingSettings(enabled, disclosure)


def parse_limits(t: Table | None) -> Limits:
    if t is None:
        return Limits(15, 10)
    concurrent = t.integer("max_concurrent_calls", 0, lo=1, hi=10_000)
    limits = Limits(
        t.integer("max_call_minutes", 15, lo=1, hi=240),
        t.integer("max_tool_calls", 10, lo=0, hi=100),
        concurrent or None,
    )
    t.finish()
    return limits


def parse_silence(t: Table | None) -> SilenceSettings:
    default = SilenceSettings(
        8.0, "Are you still there?", 2, "I haven't heard anything, so I'll hang up now. Goodbye!"
    )
    if t is None:
        return default
    settings = SilenceSettings(
        t.number("reprompt_after_s", default.reprompt_after_s, lo=2.0, hi=60.0),
        t.text("reprompt_text", default.reprompt_text, max_len=300),
        t.integer("max_reprompts", default.max_reprompts, lo=0, hi=10),
        t.text("goodbye_text", default.goodbye_text, max_len=300),
    )
    t.finish()
    return settings


def parse_network(t: Table | None) -> NetworkSettings:
    """`allow_private`: host names or IPs/CIDRs that tools may reach although they are not public."""
    if t is None:
        return NetworkSettings()
    hosts: set[str] = set()
    nets: list[IpNetwork] = []
    for i, entry in enumerate(t.strings("allow_private") or []):
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            continue
        except ValueError:
            pass
        if re.match(r"^[A-Za-z0-9]([A-Za-z0-9\-.]{0,251}[A-Za-z0-9])?$", entry):
            hosts.add(entry.lower())
        else:
            t.item_error("allow_private", i, f"{entry!r} is neither a host name nor an IP/CIDR")
    t.finish()
    return NetworkSettings(frozenset(hosts), tuple(nets))
