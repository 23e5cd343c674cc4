"""The far end's RTCP view of our stream in the call record: spool form, migration 0002, reads and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.peers.postgres import shared_postgres
from trunkline.store.callstore import PostgresCallStore
from trunkline.store.cli import add_commands
from trunkline.store.embedded import DatabaseDsns
from trunkline.store.memory import MemoryCallStore
from trunkline.store.migrate import APP_ROLE, load_migrations
from trunkline.store.postgres import PostgresCallReader, create_app_pool, write_records
from trunkline.store.records import CallEnd, CallRecord, Direction, MediaQuality, StoredCall
from trunkline.store.spool import decode_lines, encode_lines, segment_name

pytestmark = pytest.mark.integration

T0 = datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
FAR_END_COLUMNS = ("far_end_loss_pct", "far_end_jitter_ms", "round_trip_ms")

# What a spool line of a call end looked like before the far-end fields existed (schema version 1).
OLD_CALL_END_LINE = (
    '{"kind":"call_end","tenant_id":"%(tenant)s","call_id":"%(call_id)s",'
    '"ended_at":"2024-07-01T10:02:00+00:00","end_reason":"caller_hangup","codec":"PCMU","answered_at":null,'
    '"media":{"packets_received":500,"packets_sent":498,"packets_lost":2,"packets_late":1,'
    '"packets_discarded":0,"concealed_frames":3,"jitter_mean_ms":1.5,"jitter_max_ms":4.25}}'
)
OLD_MEDIA = MediaQuality(500, 498, 2, 1, 0, 3, 1.5, 4.25)

REPORTED = MediaQuality(
    packets_received=1500, packets_sent=1498, packets_lost=4, jitter_mean_ms=2.0, jitter_max_ms=9.5,
    far_end_loss_pct=3 / 256 * 100, far_end_jitter_ms=3.375, round_trip_ms=56.25,
)  # fmt: skip
SILENT = MediaQuality(packets_received=700, packets_sent=702, jitter_mean_ms=0.5)  # e.g. SIPp: no RTCP
NO_SR_SEEN = MediaQuality(packets_received=10, far_end_loss_pct=0.0, far_end_jitter_ms=0.0)  # no round trip


def call_and_end(tenant: str, media: MediaQuality, call_id: UUID | None = None) -> tuple[CallRecord, CallEnd]:
    cid = call_id or uuid4()
    call = CallRecord(tenant, cid, Direction.INBOUND, "+15550001", "+15550100", T0, codec="PCMU")
    return call, CallEnd(tenant, cid, T0 + timedelta(minutes=2), "caller_hangup", media=media)


# --- spool form (pure) -------------------------------------------------------------------------------


def test_a_call_end_spooled_before_the_far_end_fields_still_loads() -> None:
    call_id = uuid4()
    line = OLD_CALL_END_LINE % {"tenant": "acme", "call_id": call_id}
    decoded = decode_lines(line.encode("ascii") + b"\n")
    assert decoded.bad_lines == () and decoded.torn_tail == b""
    [end] = decoded.records
    assert isinstance(end, CallEnd) and end.call_id == call_id
    assert end.media == OLD_MEDIA
    assert (end.media.far_end_loss_pct, end.media.far_end_jitter_ms, end.media.round_trip_ms) == (None,) * 3


optional_ms = st.none() | st.floats(0, 1e6, allow_nan=False)


@given(st.none() | st.floats(0, 100), optional_ms, optional_ms)
def test_far_end_fields_round_trip_through_the_spool(
    loss_pct: float | None, jitter_ms: float | None, rtt_ms: float | None
) -> None:
    media = MediaQuality(packets_received=5, far_end_loss_pct=loss_pct, far_end_jitter_ms=jitter_ms,
                         round_trip_ms=rtt_ms)  # fmt: skip
    _, end = call_and_end("acme", media)
    data = encode_lines([end])
    wire = json.loads(data)["media"]
    assert [wire[name] for name in FAR_END_COLUMNS] == [loss_pct, jitter_ms, rtt_ms]
    assert decode_lines(data).records == (end,)


# --- against PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dsns() -> DatabaseDsns:
    return asyncio.run(shared_postgres().new_database("media"))


@pytest.fixture
async def pool(dsns: DatabaseDsns) -> AsyncIterator[asyncpg.Pool]:
    p = await create_app_pool(dsns.app, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def test_migration_0002_adds_nullable_columns_the_app_role_may_read_and_write(
    dsns: DatabaseDsns,
) -> None:
    m = load_migrations()[1]
    assert (m.version, m.name) == (2, "far_end_quality")
    conn = await asyncpg.connect(dsns.admin)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = 'trunkline' AND table_name = 'calls' AND column_name = ANY($1)",
            list(FAR_END_COLUMNS),
        )
        assert sorted(tuple(r) for r in rows) == sorted(
            (c, "double precision", "YES", None) for c in FAR_END_COLUMNS
        )
        for column in FAR_END_COLUMNS:
            for privilege in ("SELECT", "UPDATE"):
                assert await conn.fetchval(
                    "SELECT has_column_privilege($1, 'trunkline.calls', $2, $3)", APP_ROLE, column, privilege
                ), (column, privilege)
        assert await conn.fetchval("SELECT max(version) FROM trunkline.schema_migrations") == 2
    finally:
        await conn.close()


@pytest.mark.parametrize("media", [REPORTED, SILENT, NO_SR_SEEN], ids=["reported", "silent", "no-sr-seen"])
async def test_far_end_view_is_written_at_call_end_and_read_back(
    pool: asyncpg.Pool, media: MediaQuality
) -> None:
    tenant = f"m-{uuid4().hex[:8]}"
    call, end = call_and_end(tenant, media)
    await write_records(pool, [call, end])
    reader = PostgresCallReader(pool)
    detail = await reader.get_call(tenant, call.call_id)
    assert detail is not None and detail.call.end_reason == "caller_hangup"
    assert detail.call.media == media
    [listed] = await reader.list_calls(tenant)
    assert listed.media == media


async def test_a_call_end_replay_overwrites_with_the_same_values(pool: asyncpg.Pool) -> None:
    tenant = f"m-{uuid4().hex[:8]}"
    call, end = call_and_end(tenant, REPORTED)
    await write_records(pool, [call, end, end])
    await write_records(pool, [end])
    detail = await PostgresCallReader(pool).get_call(tenant, call.call_id)
    assert detail is not None and detail.call.media == REPORTED


async def test_another_tenant_cannot_read_the_far_end_view(pool: asyncpg.Pool) -> None:
    a, b = f"ma-{uuid4().hex[:6]}", f"mb-{uuid4().hex[:6]}"
    call, end = call_and_end(a, REPORTED)
    await write_records(pool, [call, end])
    reader = PostgresCallReader(pool)
    assert await reader.get_call(b, call.call_id) is None
    assert await reader.list_calls(b) == []


async def test_an_old_spool_segment_replays_into_the_new_schema(dsns: DatabaseDsns, tmp_path: Path) -> None:
    tenant = f"m-{uuid4().hex[:8]}"
    call, _ = call_and_end(tenant, SILENT)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    old_end = OLD_CALL_END_LINE % {"tenant": tenant, "call_id": call.call_id}
    (spool_dir / segment_name(1)).write_bytes(encode_lines([call]) + old_end.encode("ascii") + b"\n")
    async with PostgresCallStore(dsns.app, spool_dir) as store:
        stats = await store.wait_idle(timeout=30)
        assert (stats.replayed, stats.rejected) == (2, 0)
        detail = await store.get_call(tenant, call.call_id)
    assert detail is not None and detail.call.end_reason == "caller_hangup"
    assert detail.call.media == OLD_MEDIA


async def test_memory_and_postgres_stores_agree_on_the_far_end_view(
    dsns: DatabaseDsns, tmp_path: Path
) -> None:
    tenant = f"m-{uuid4().hex[:8]}"
    pairs = [call_and_end(tenant, m) for m in (REPORTED, SILENT, NO_SR_SEEN)]
    memory = MemoryCallStore()
    async with PostgresCallStore(dsns.app, tmp_path / "spool") as pg:
        for store in (memory, pg):
            for call, end in pairs:
                store.record_call_started(call)
                store.record_call_ended(end)
        await pg.wait_idle(timeout=30)
        seen: list[list[StoredCall]] = []
        for store in (memory, pg):
            details = [await store.get_call(tenant, call.call_id) for call, _ in pairs]
            assert all(d is not None for d in details)
            seen.append([d.call for d in details if d is not None])
    assert [c.media for c in seen[0]] == [REPORTED, SILENT, NO_SR_SEEN]
    assert seen[0] == seen[1]


# --- the CLI -----------------------------------------------------------------------------------------


def test_call_detail_prints_the_far_end_view_only_when_reported(dsns: DatabaseDsns) -> None:
    tenant = f"m-{uuid4().hex[:8]}"
    pairs = {name: call_and_end(tenant, m) for name, m in (("reported", REPORTED), ("silent", SILENT),
                                                             ("no_sr", NO_SR_SEEN))}  # fmt: skip

    async def setup() -> None:
        p = await create_app_pool(dsns.app, max_size=1)
        try:
            await write_records(p, [r for pair in pairs.values() for r in pair])
        finally:
            await p.close()

    asyncio.run(setup())
    parser = argparse.ArgumentParser(prog="trunkline")
    add_commands(parser.add_subparsers(dest="command", required=True))

    def show(name: str) -> str:
        args = parser.parse_args(["calls", "show", str(pairs[name][0].call_id), "--tenant", tenant,
                                  "--database-url", dsns.app])  # fmt: skip
        out = io.StringIO()
        assert args.func(args, out) == 0
        return out.getvalue()

    reported = show("reported")
    assert "  far end     loss 1.2 %, jitter 3.4 ms, round trip 56 ms\n" in reported
    silent = show("silent")
    assert "rx 700 / tx 702 packets" in silent
    assert "far end" not in silent and "round trip" not in silent
    no_sr = show("no_sr")
    assert "  far end     loss 0.0 %, jitter 0.0 ms\n" in no_sr and "round trip" not in no_sr
