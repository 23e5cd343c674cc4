"""What the call store keeps: immutable records, read models, and their JSON form (for the spool).

Every record carries a client-generated id (`call_id` for call start/end, a uuid4 `id` otherwise), so writing
the same record twice (a replay after a lost commit acknowledgement) stores it once.
Times are timezone-aware datetimes; durations and latencies carry their unit in the name.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

from trunkline.store.errors import RecordDecodeError

MAX_TENANT_ID_LENGTH = 128

# Latency stages of a turn, in pipeline order; `TurnRecord.latency_ms` maps each to milliseconds elapsed
# since the caller's end of speech (cumulative, so the last one is the whole mouth-to-ear delay).
LATENCY_STAGES = ("endpoint", "transcript", "first_llm_token", "first_tts_audio", "first_rtp_out")


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Speaker(enum.StrEnum):
    CALLER = "caller"
    AGENT = "agent"


class ToolStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


def check_tenant_id(tenant_id: str) -> str:
    """Return `tenant_id` if usable as an RLS key; raise ValueError otherwise ('' would mean "no tenant")."""
    if not isinstance(tenant_id, str) or not tenant_id or len(tenant_id) > MAX_TENANT_ID_LENGTH:
        raise ValueError(f"tenant id must be 1..{MAX_TENANT_ID_LENGTH} characters")
    if "\x00" in tenant_id:
        raise ValueError("tenant id must not contain NUL")
    return tenant_id


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True, slots=True)
class MediaQuality:
    """RTP counters of a call leg at hang-up, and the far end's view of our stream from its RTCP reports.

    The far-end fields are None when the far end sent no RTCP report on our stream (SIPp sends none;
    carriers and softphones do). `far_end_loss_pct` is the loss of its latest report interval
    (RTCP fraction lost x 100), not the cumulative loss; `far_end_jitter_ms` is its latest reported
    interarrival jitter; `round_trip_ms` is the largest round trip seen during the call.
    """

    packets_received: int = 0
    packets_sent: int = 0
    packets_lost: int = 0
    packets_late: int = 0
    packets_discarded: int = 0
    concealed_frames: int = 0
    jitter_mean_ms: float = 0.0
    jitter_max_ms: float = 0.0
    far_end_loss_pct: float | None = None
    far_end_jitter_ms: float | None = None
    round_trip_ms: float | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call was set up (inbound answered or outbound dialled)."""

    tenant_id: str
    call_id: UUID
    direction: Direction
    from_number: str
    to_number: str
    started_at: datetime
    sip_call_id: str = ""
    codec: str | None = None
    answered_at: datetime | None = None

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        _check_aware("started_at", self.started_at)
        _check_aware("answered_at", self.answered_at)


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One utterance: the caller's transcript or the agent's reply (with what the caller actually heard)."""

    tenant_id: str
    call_id: UUID
    seq: int
    speaker: Speaker
    text: str
    started_at: datetime
    ended_at: datetime
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    interrupted: bool = False
    heard_text: str | None = None
    id: UUID = field(default_factory=uuid4)

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        _check_aware("started_at", self.started_at)
        _check_aware("ended_at", self.ended_at)


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool invocation by the agent; `arguments` and `result` are JSON values."""

    tenant_id: str
    call_id: UUID
    name: str
    arguments: Mapping[str, Any]
    result: Any
    status: ToolStatus
    started_at: datetime
    duration_ms: float
    turn_id: UUID | None = None
    id: UUID = field(default_factory=uuid4)

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        _check_aware("started_at", self.started_at)
        # Normalise to plain JSON now (tuples become lists, unknown objects their str()), so the record
        # can always be spooled and reads back equal.
        arguments = _as_json(dict(self.arguments))
        object.__setattr__(self, "arguments", arguments if isinstance(arguments, dict) else {"_": arguments})
        object.__setattr__(self, "result", _as_json(self.result))


def _as_json(value: Any) -> Any:
    """`value` as plain JSON data; its str() if it cannot be (odd dict keys, cycles)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Usage increments of a call (any number per call; they are summed per call)."""

    tenant_id: str
    call_id: UUID
    recorded_at: datetime
    llm_tokens_in: int = 0
    llm_tokens_out: int = 0
    asr_seconds: float = 0.0
    tts_characters: int = 0
    tts_seconds: float = 0.0
    tool_calls: int = 0
    minutes: float = 0.0
    id: UUID = field(default_factory=uuid4)

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        _check_aware("recorded_at", self.recorded_at)


@dataclass(frozen=True, slots=True)
class CallEnd:
    """The call ended: why, the negotiated codec and the media quality counters."""

    tenant_id: str
    call_id: UUID
    ended_at: datetime
    end_reason: str
    codec: str | None = None
    answered_at: datetime | None = None
    media: MediaQuality = MediaQuality()

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        _check_aware("ended_at", self.ended_at)
        _check_aware("answered_at", self.answered_at)


StoreRecord = CallRecord | TurnRecord | ToolCallRecord | UsageRecord | CallEnd

RECORD_KINDS: dict[str, type[StoreRecord]] = {
    "call": CallRecord,
    "turn": TurnRecord,
    "tool_call": ToolCallRecord,
    "usage": UsageRecord,
    "call_end": CallEnd,
}
_KIND_OF: dict[type, str] = {cls: kind for kind, cls in RECORD_KINDS.items()}
_FIELD_NAMES: dict[type, frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls)) for cls in RECORD_KINDS.values()
}


def record_kind(record: StoreRecord) -> str:
    """The short kind name ("turn", ...) used in the spool and for grouping writes."""
    return _KIND_OF[type(record)]


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Usage of one call, summed over its usage records."""

    llm_tokens_in: int = 0
    llm_tokens_out: int = 0
    asr_seconds: float = 0.0
    tts_characters: int = 0
    tts_seconds: float = 0.0
    tool_calls: int = 0
    minutes: float = 0.0


def sum_usage(records: Iterable[UsageRecord | UsageTotals]) -> UsageTotals:
    """Add usage records (or partial totals) field by field."""
    names = [f.name for f in dataclasses.fields(UsageTotals)]
    sums: dict[str, Any] = {name: 0 for name in names}
    for rec in records:
        for name in names:
            sums[name] += getattr(rec, name)
    return UsageTotals(**sums)


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant as the tenants table knows it (synced from tenant config)."""

    tenant_id: str
    display_name: str = ""


class TenantLike(Protocol):
    """Anything with a tenant id and display name (e.g. the tenant config)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def display_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A call as read back from the store."""

    tenant_id: str
    call_id: UUID
    direction: Direction
    from_number: str
    to_number: str
    sip_call_id: str
    codec: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    media: MediaQuality
    turn_count: int

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class CallDetail:
    """A call with its transcript (turns in order), tool calls and usage totals."""

    call: StoredCall
    turns: tuple[TurnRecord, ...]
    tool_calls: tuple[ToolCallRecord, ...]
    usage: UsageTotals


# --- JSON form (spool lines) -------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, MediaQuality):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def record_to_json(record: StoreRecord) -> dict[str, Any]:
    """A JSON-ready dict with a "kind" key; inverse of `record_from_json`."""
    out: dict[str, Any] = {"kind": record_kind(record)}
    for f in dataclasses.fields(record):
        out[f.name] = _encode(getattr(record, f.name))
    return out


def _opt(conv: Any) -> Any:
    return lambda v: None if v is None else conv(v)


_DECODERS: dict[str, Any] = {
    "call_id": UUID,
    "id": UUID,
    "turn_id": _opt(UUID),
    "started_at": datetime.fromisoformat,
    "ended_at": datetime.fromisoformat,
    "recorded_at": datetime.fromisoformat,
    "answered_at": _opt(datetime.fromisoformat),
    "direction": Direction,
    "speaker": Speaker,
    "status": ToolStatus,
    "media": lambda v: MediaQuality(**v),
    "latency_ms": lambda v: {str(k): float(x) for k, x in v.items()},
}


def record_from_json(data: Mapping[str, Any]) -> StoreRecord:
    """Rebuild a record from `record_to_json` output; RecordDecodeError if it does not fit."""
    try:
        cls = RECORD_KINDS[data["kind"]]
        kwargs = {}
        if "id" in _FIELD_NAMES[cls] and "id" not in data:
            raise KeyError("id")  # a fresh id would make the replay a duplicate
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                decoder = _DECODERS.get(f.name)
                kwargs[f.name] = decoder(value) if decoder is not None else value
        return cls(**kwargs)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordDecodeError(f"not a store record: {type(exc).__name__}") from exc
