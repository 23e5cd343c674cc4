"""Postgres side of the call store (asyncpg): the app-role pool, per-transaction tenant, writes and reads.

Every statement runs inside `tenant_transaction`, which sets `trunkline.tenant_id` with
`set_config(..., true)`: the setting is local to that transaction, so a pooled connection never carries a
tenant into the next one, whether the transaction commits, fails or is cancelled. RLS does the filtering;
explicit `tenant_id = $1` conditions are a second fence, not the first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg

from trunkline.store.errors import RecordRejected, StoreError, StoreUnavailable
from trunkline.store.migrate import TENANT_SETTING, check_app_connection
from trunkline.store.records import (
    CallDetail,
    CallEnd,
    CallRecord,
    Direction,
    MediaQuality,
    Speaker,
    StoredCall,
    StoreRecord,
    TenantLike,
    ToolCallRecord,
    ToolStatus,
    TurnRecord,
    UsageRecord,
    UsageTotals,
    check_tenant_id,
    record_kind,
)

SET_TENANT_SQL = f"SELECT set_config('{TENANT_SETTING}', $1, true)"
_DATA_ERROR_CLASSES = ("22", "23")  # data exception, integrity constraint violation: the record is at fault


def classify_error(exc: BaseException) -> StoreError:
    """Map a driver/OS error to RecordRejected (bad record) or StoreUnavailable (else: retry later)."""
    if isinstance(exc, RecordRejected | StoreUnavailable):
        return exc
    if isinstance(exc, StoreError):  # e.g. StoreConfigError from a new connection: keep records, retry later
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        name = f"{type(exc).__name__} ({state})"
        if state[:2] in _DATA_ERROR_CLASSES:
            return RecordRejected(name)
        return StoreUnavailable(name)
    if isinstance(exc, TypeError | ValueError | OverflowError):  # incl. asyncpg client-side DataError
        return RecordRejected(type(exc).__name__)  # a value the driver cannot encode
    return StoreUnavailable(type(exc).__name__)


def _scrub(value: Any) -> Any:
    """Drop NUL characters, which Postgres text and jsonb cannot hold."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_scrub(str(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _json_dumps(value: Any) -> str:
    return json.dumps(_scrub(value), allow_nan=False)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per new pooled connection: JSON codec, then refuse roles that could bypass RLS."""
    await conn.set_type_codec("jsonb", encoder=_json_dumps, decoder=json.loads, schema="pg_catalog")
    await check_app_connection(conn)


async def _rollback_only(_conn: asyncpg.Connection) -> None:
    """Pool reset that keeps session state (asyncpg still rolls back an open transaction first)."""


async def create_app_pool(
    dsn: str,
    *,
    max_size: int = 4,
    command_timeout_s: float = 10.0,
    connect_timeout_s: float = 5.0,
    reset_session: bool = True,
) -> asyncpg.Pool:
    """A lazily connecting pool for the app role (creating it never touches the network).

    `reset_session=False` skips asyncpg's RESET ALL on release; tests use it to show that the
    transaction-local tenant setting alone keeps tenants apart.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        command_timeout=command_timeout_s,
        timeout=connect_timeout_s,
        max_inactive_connection_lifetime=60.0,
        init=init_connection,
        reset=None if reset_session else _rollback_only,
    )


@asynccontextmanager
async def tenant_transaction(pool: asyncpg.Pool, tenant_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction in which RLS sees exactly `tenant_id`."""
    check_tenant_id(tenant_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(SET_TENANT_SQL, tenant_id)
        yield conn


# --- writes --------------------------------------------------------------------------------------------


def group_by_tenant(records: Iterable[StoreRecord]) -> list[tuple[str, list[StoreRecord]]]:
    """Records per tenant in first-seen tenant order, keeping each tenant's records in order."""
    groups: dict[str, list[StoreRecord]] = {}
    for r in records:
        groups.setdefault(r.tenant_id, []).append(r)
    return list(groups.items())


def runs_by_kind(records: Sequence[StoreRecord]) -> list[tuple[str, list[StoreRecord]]]:
    """Split into maximal runs of consecutive records of the same kind (order kept; one executemany each)."""
    runs: list[tuple[str, list[StoreRecord]]] = []
    for r in records:
        kind = record_kind(r)
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(r)
        else:
            runs.append((kind, [r]))
    return runs


_ENSURE_TENANT = "INSERT INTO trunkline.tenants (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING"

_SQL: dict[str, str] = {
    "call": "INSERT INTO trunkline.calls (id, tenant_id, direction, from_number, to_number, sip_call_id,"
    " codec, started_at, answered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (id) DO NOTHING",
    "turn": "INSERT INTO trunkline.turns (id, tenant_id, call_id, seq, speaker, text, started_at, ended_at,"
    " latency_ms, interrupted, heard_text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT (id) DO NOTHING",
    "tool_call": "INSERT INTO trunkline.tool_calls (id, tenant_id, call_id, turn_id, name, arguments, result,"
    " status, started_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (id) DO NOTHING",
    "usage": "INSERT INTO trunkline.usage (id, tenant_id, call_id, recorded_at, llm_tokens_in,"
    " llm_tokens_out, asr_seconds, tts_characters, tts_seconds, tool_calls, minutes)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
    "call_end": "UPDATE trunkline.calls SET ended_at = $3, end_reason = $4, codec = COALESCE($5, codec),"
    " answered_at = COALESCE($6, answered_at), packets_received = $7, packets_sent = $8,"
    " packets_lost = $9, packets_late = $10, packets_discarded = $11, concealed_frames = $12,"
    " jitter_mean_ms = $13, jitter_max_ms = $14, far_end_loss_pct = $15, far_end_jitter_ms = $16,"
    " round_trip_ms = $17 WHERE id = $1 AND tenant_id = $2",
}


def _call_params(r: Any) -> tuple[Any, ...]:
    c: CallRecord = r
    return (c.call_id, c.tenant_id, c.direction.value, _scrub(c.from_number), _scrub(c.to_number),
            _scrub(c.sip_call_id), c.codec, c.started_at, c.answered_at)  # fmt: skip


def _turn_params(r: Any) -> tuple[Any, ...]:
    t: TurnRecord = r
    heard = None if t.heard_text is None else _scrub(t.heard_text)
    return (t.id, t.tenant_id, t.call_id, t.seq, t.speaker.value, _scrub(t.text), t.started_at, t.ended_at,
            dict(t.latency_ms), t.interrupted, heard)  # fmt: skip


def _tool_params(r: Any) -> tuple[Any, ...]:
    t: ToolCallRecord = r
    return (t.id, t.tenant_id, t.call_id, t.turn_id, _scrub(t.name), dict(t.arguments), t.result,
            t.status.value, t.started_at, t.duration_ms)  # fmt: skip


def _usage_params(r: Any) -> tuple[Any, ...]:
    u: UsageRecord = r
    return (u.id, u.tenant_id, u.call_id, u.recorded_at, u.llm_tokens_in, u.llm_tokens_out, u.asr_seconds,
            u.tts_characters, u.tts_seconds, u.tool_calls, u.minutes)  # fmt: skip


def _end_params(r: Any) -> tuple[Any, ...]:
    e: CallEnd = r
    m = e.media
    return (e.call_id, e.tenant_id, e.ended_at, _scrub(e.end_reason), e.codec, e.answered_at,
            m.packets_received, m.packets_sent, m.packets_lost, m.packets_late, m.packets_discarded,
            m.concealed_frames, m.jitter_mean_ms, m.jitter_max_ms, m.far_end_loss_pct, m.far_end_jitter_ms,
            m.round_trip_ms)  # fmt: skip


_PARAMS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "call": _call_params,
    "turn": _turn_params,
    "tool_call": _tool_params,
    "usage": _usage_params,
    "call_end": _end_params,
}


async def write_records(pool: asyncpg.Pool, records: Sequence[StoreRecord]) -> None:
    """Write records idempotently, one transaction per tenant; raises RecordRejected or StoreUnavailable."""
    try:
        async with pool.acquire() as conn:
            for tenant_id, group in group_by_tenant(records):
                async with conn.transaction():
                    await conn.execute(SET_TENANT_SQL, tenant_id)
                    for kind, run in runs_by_kind(group):
                        if kind == "call":  # a call must never be refused for an unsynced tenant
                            await conn.execute(_ENSURE_TENANT, tenant_id)
                        await conn.executemany(_SQL[kind], [_PARAMS[kind](r) for r in run])
    except Exception as exc:
        raise classify_error(exc) from exc


# --- reads ---------------------------------------------------------------------------------------------

_CALL_COLUMNS = (
    "c.id, c.tenant_id, c.direction, c.from_number, c.to_number, c.sip_call_id, c.codec, c.started_at,"
    " c.answered_at, c.ended_at, c.end_reason, c.packets_received, c.packets_sent, c.packets_lost,"
    " c.packets_late, c.packets_discarded, c.concealed_frames, c.jitter_mean_ms, c.jitter_max_ms,"
    " c.far_end_loss_pct, c.far_end_jitter_ms, c.round_trip_ms,"
    " (SELECT count(*) FROM trunkline.turns t WHERE t.call_id = c.id) AS turn_count"
)
_USAGE_SUMS = (
    "SELECT coalesce(sum(llm_tokens_in), 0)::bigint, coalesce(sum(llm_tokens_out), 0)::bigint,"
    " coalesce(sum(asr_seconds), 0), coalesce(sum(tts_characters), 0)::bigint, coalesce(sum(tts_seconds), 0),"
    " coalesce(sum(tool_calls), 0)::bigint, coalesce(sum(minutes), 0)"
    " FROM trunkline.usage WHERE call_id = $1 AND tenant_id = $2"
)


def _stored_call(row: Any) -> StoredCall:
    media = MediaQuality(
        row["packets_received"], row["packets_sent"], row["packets_lost"], row["packets_late"],
        row["packets_discarded"], row["concealed_frames"], row["jitter_mean_ms"], row["jitter_max_ms"],
        row["far_end_loss_pct"], row["far_end_jitter_ms"], row["round_trip_ms"],
    )  # fmt: skip
    return StoredCall(
        row["tenant_id"], UUID(str(row["id"])), Direction(row["direction"]), row["from_number"],
        row["to_number"], row["sip_call_id"], row["codec"], row["started_at"], row["answered_at"],
        row["ended_at"], row["end_reason"], media, row["turn_count"],
    )  # fmt: skip


def _turn(row: Any) -> TurnRecord:
    return TurnRecord(
        row["tenant_id"], UUID(str(row["call_id"])), row["seq"], Speaker(row["speaker"]), row["text"],
        row["started_at"], row["ended_at"], row["latency_ms"], row["interrupted"], row["heard_text"],
        UUID(str(row["id"])),
    )  # fmt: skip


def _tool_call(row: Any) -> ToolCallRecord:
    turn_id = None if row["turn_id"] is None else UUID(str(row["turn_id"]))
    return ToolCallRecord(
        row["tenant_id"], UUID(str(row["call_id"])), row["name"], row["arguments"], row["result"],
        ToolStatus(row["status"]), row["started_at"], row["duration_ms"], turn_id, UUID(str(row["id"])),
    )  # fmt: skip


class PostgresCallReader:
    """Tenant-scoped reads and the tenants-table sync, over an app-role pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_calls(self, tenant_id: str, limit: int = 50) -> list[StoredCall]:
        """Newest calls first."""
        try:
            async with tenant_transaction(self._pool, tenant_id) as conn:
                rows = await conn.fetch(
                    f"SELECT {_CALL_COLUMNS} FROM trunkline.calls c WHERE c.tenant_id = $1"
                    " ORDER BY c.started_at DESC, c.id LIMIT $2",
                    tenant_id,
                    max(0, limit),
                )
        except ValueError:
            raise
        except Exception as exc:
            raise classify_error(exc) from exc
        return [_stored_call(r) for r in rows]

    async def get_call(self, tenant_id: str, call_id: UUID) -> CallDetail | None:
        """The call with its turns (in order), tool calls and summed usage; None if not this tenant's."""
        try:
            async with tenant_transaction(self._pool, tenant_id) as conn:
                row = await conn.fetchrow(
                    f"SELECT {_CALL_COLUMNS} FROM trunkline.calls c WHERE c.id = $1 AND c.tenant_id = $2",
                    call_id,
                    tenant_id,
                )
                if row is None:
                    return None
                turns = await conn.fetch(
                    "SELECT * FROM trunkline.turns WHERE call_id = $1 AND tenant_id = $2"
                    " ORDER BY seq, started_at, id",
                    call_id,
                    tenant_id,
                )
                tools = await conn.fetch(
                    "SELECT * FROM trunkline.tool_calls WHERE call_id = $1 AND tenant_id = $2"
                    " ORDER BY started_at, id",
                    call_id,
                    tenant_id,
                )
                sums = await conn.fetchrow(_USAGE_SUMS, call_id, tenant_id)
        except ValueError:
            raise
        except Exception as exc:
            raise classify_error(exc) from exc
        usage = UsageTotals(*sums)
        return CallDetail(_stored_call(row), tuple(map(_turn, turns)), tuple(map(_tool_call, tools)), usage)

    async def sync_tenants(self, tenants: Iterable[TenantLike]) -> None:
        """Upsert tenant ids and display names (one transaction per tenant, as that tenant)."""
        try:
            for t in tenants:
                async with tenant_transaction(self._pool, t.tenant_id) as conn:
                    await conn.execute(
                        "INSERT INTO trunkline.tenants (tenant_id, display_name) VALUES ($1, $2)"
                        " ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name,"
                        " updated_at = now()"
                        " WHERE tenants.display_name IS DISTINCT FROM EXCLUDED.display_name",
                        t.tenant_id,
                        _scrub(t.display_name),
                    )
        except ValueError:
            raise
        except Exception as exc:
            raise classify_error(exc) from exc
