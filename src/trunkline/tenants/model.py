"""Frozen tenant configuration: what one business's `tenant.toml` means once validated.

Everything here is plain data built by `loader.py`; nothing reads files or the environment. Secrets are
held in `Secret`, whose repr never shows the value, so a logged or printed config cannot leak a key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
BUILTIN_TOOL_NAMES = ("end_call", "transfer_call")
DEFAULT_TRANSFER_FAILED = "Sorry, I couldn't transfer you just now. Can I help you with anything else?"


@dataclass(frozen=True, slots=True)
class Secret:
    """A value taken from an environment variable; only `reveal()` gives it out."""

    env_name: str
    value: str = field(repr=False, compare=False)

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Secret(env={self.env_name!r})"

    __str__ = __repr__


HeaderValue = str | Secret


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """An OpenAI-compatible chat endpoint; `api_key` is None for keyless local servers."""

    base_url: str
    model: str
    api_key: Secret | None
    timeout_s: float
    temperature: float
    max_tokens: int


@dataclass(frozen=True, slots=True)
class AsrSettings:
    engine: Literal["local", "openai"]
    model: str
    base_url: str | None
    api_key: Secret | None


@dataclass(frozen=True, slots=True)
class TtsSettings:
    engine: Literal["local", "openai"]
    voice: str
    model: str | None
    base_url: str | None
    api_key: Secret | None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Opening range within one day, minutes since midnight, end exclusive (1440 = midnight)."""

    start_min: int
    end_min: int

    def contains(self, minute: int) -> bool:
        return self.start_min <= minute < self.end_min

    def spoken(self) -> str:
        return f"{_hhmm(self.start_min)} to {_hhmm(self.end_min)}"


def _hhmm(minutes: int) -> str:
    """Speakable 12-hour time: '8 AM', '1:30 PM', 'noon', 'midnight'."""
    hour, minute = divmod(minutes % 1440, 60)
    if minute == 0 and hour in (0, 12):
        return "midnight" if hour == 0 else "noon"
    suffix = "AM" if hour < 12 else "PM"
    hour12 = hour % 12 or 12
    return f"{hour12} {suffix}" if minute == 0 else f"{hour12}:{minute:02d} {suffix}"


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Weekly opening ranges in the tenant's time zone; `weekly[0]` is Monday."""

    timezone: str
    weekly: tuple[tuple[TimeRange, ...], ...]
    closed_dates: frozenset[date] = frozenset()

    def is_open(self, now: datetime) -> bool:
        """Whether the business is open at the aware instant `now` (time is passed in, never read)."""
        if now.tzinfo is None:
            raise ValueError("is_open needs an aware datetime")
        local = now.astimezone(ZoneInfo(self.timezone))
        if local.date() in self.closed_dates:
            return False
        minute = local.hour * 60 + local.minute
        return any(r.contains(minute) for r in self.weekly[local.weekday()])

    def summary(self) -> str:
        """Speakable summary, consecutive days with equal hours grouped: 'Monday to Friday 8:00 to 17:00'."""
        parts: list[str] = []
        day = 0
        while day < 7:
            end = day
            while end + 1 < 7 and self.weekly[end + 1] == self.weekly[day]:
                end += 1
            joiner = " and " if end == day + 1 else " to "
            days = WEEKDAY_NAMES[day] if end == day else f"{WEEKDAY_NAMES[day]}{joiner}{WEEKDAY_NAMES[end]}"
            ranges = self.weekly[day]
            parts.append(f"{days} {' and '.join(r.spoken() for r in ranges)}" if ranges else f"closed {days}")
            day = end + 1
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class AfterHours:
    """What to do when a call arrives outside business hours."""

    action: Literal["message", "transfer", "take_message"]
    message: str
    transfer_target: str | None


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Where `transfer_call` may send a caller: a default and optional named destinations."""

    target: str | None
    targets: Mapping[str, str]
    failed_message: str = DEFAULT_TRANSFER_FAILED  # said when the transfer fails (carrier refused, no answer)


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    enabled: bool
    disclosure: str | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_call_minutes: int
    max_tool_calls: int
    # calls of this tenant at once; more get 486 Busy Here (None: only the server's caps apply)
    max_concurrent_calls: int | None = None


@dataclass(frozen=True, slots=True)
class SilenceSettings:
    """Reprompt after `reprompt_after_s` of caller silence, at most `max_reprompts` times, then hang up."""

    reprompt_after_s: float
    reprompt_text: str
    max_reprompts: int
    goodbye_text: str


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Private/loopback destinations this tenant's tools may reach: exact host names or IP networks."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IpNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookToolConfig:
    """An HTTP tool: the LLM's arguments go out as JSON (POST/PUT/PATCH) or as query parameters."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    url: str
    headers: tuple[tuple[str, HeaderValue], ...]
    timeout_s: float
    retries: int
    max_response_bytes: int
    confirm_first: bool
    enabled: bool
    fallback: str

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "PUT", "DELETE", "HEAD")


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """An MCP tool server; its tools join the catalog as `<prefix>_<tool>`."""

    name: str
    transport: Literal["stdio", "http"]
    prefix: str
    command: str | None
    args: tuple[str, ...]
    env: tuple[tuple[str, HeaderValue], ...]
    cwd: str | None
    url: str | None
    headers: tuple[tuple[str, HeaderValue], ...]
    connect_timeout_s: float
    timeout_s: float
    include: tuple[str, ...] | None
    confirm_first: frozenset[str]
    max_result_chars: int
    fallback: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class SlotDef:
    """A value the offline intents policy pulls out of what the caller said."""

    name: str
    type: Literal["weekday", "time", "number", "choice", "pattern", "text"]
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True, slots=True)
class IntentToolCall:
    """A tool an intent runs once its slots are filled; argument values are templates over slots."""

    name: str
    arguments: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    reply: str
    slots: tuple[str, ...]
    ask: Mapping[str, str]
    tool: IntentToolCall | None


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """`llm` drives the call with the configured model; `intents` uses the offline matcher."""

    mode: Literal["llm", "intents"]
    fallback_reply: str


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One business, validated and frozen; a call keeps the version it started with."""

    tenant_id: str
    source_file: str
    display_name: str
    language: str
    numbers: tuple[str, ...]
    enabled: bool
    system_prompt: str
    greeting: str
    policy: PolicySettings
    llm: LlmSettings | None
    asr: AsrSettings
    tts: TtsSettings
    hours: BusinessHours | None
    after_hours: AfterHours | None
    transfer: TransferSettings
    recording: RecordingSettings
    redact_pii: bool
    limits: Limits
    silence: SilenceSettings
    network: NetworkSettings
    builtins: tuple[str, ...]
    webhooks: tuple[WebhookToolConfig, ...]
    mcp_servers: tuple[McpServerConfig, ...]
    slots: Mapping[str, SlotDef]
    intents: tuple[Intent, ...]

    def template_fields(self) -> dict[str, str]:
        """Tenant values a reply template may reference as `{tenant.<name>}`."""
        return {
            "tenant.name": self.display_name,
            "tenant.hours": self.hours.summary() if self.hours else "",
            "tenant.timezone": self.hours.timezone if self.hours else "",
        }


TENANT_TEMPLATE_FIELDS = frozenset({"tenant.name", "tenant.hours", "tenant.timezone"})
