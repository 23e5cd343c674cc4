"""The store never loses or duplicates records when Postgres goes away: spool to disk, replay idempotently.

Runs its own PostgreSQL (it is stopped and restarted here), separate from the other store tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from tests.peers.postgres import PgPeer, running_postgres
from trunkline.store.callstore import PostgresCallStore, StoreOptions
from trunkline.store.embedded import DatabaseDsns
from trunkline.store.postgres import create_app_pool, write_records
from trunkline.store.records import (
    CallEnd,
    CallRecord,
    Direction,
    MediaQuality,
    Speaker,
    StoreRecord,
    ToolCallRecord,
    ToolStatus,
    TurnRecord,
    UsageRecord,
)
from trunkline.store.spool import REJECTED_FILE, Spool
from trunkline.store.writer import WriterMode, WriterStats

pytestmark = pytest.mark.integration

FAST = StoreOptions(
    reconnect_initial_s=0.05,
    reconnect_max_s=0.4,
    batch_max_records=50,
    connect_timeout_s=2,
    command_timeout_s=5,
)
T0 = datetime(2024, 7, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg() -> Iterator[PgPeer]:
    with running_postgres() as peer:
        yield peer


@pytest.fixture(scope="module")
def dsns(pg: PgPeer) -> DatabaseDsns:
    return asyncio.run(pg.new_database("spool"))


@dataclass
class Expected:
    """Ids of every record the simulated calls produced, by table."""

    calls: set[UUID] = field(default_factory=set)
    turns: list[UUID] = field(default_factory=list)
    tool_calls: list[UUID] = field(default_factory=list)
    usage: list[UUID] = field(default_factory=list)


class SimulatedCall:
    """Produces a call's records through the CallStore API, one phase (a few turns) at a time."""

    def __init__(self, store: PostgresCallStore, tenant: str, expected: Expected) -> None:
        self.store, self.tenant, self.expected = store, tenant, expected
        self.call_id = uuid4()
        self.seq = 0
        self.phase_turns: dict[str, list[UUID]] = {}

    def start(self) -> None:
        self.store.record_call_started(
            CallRecord(
                self.tenant, self.call_id, Direction.INBOUND, "+15550001", "+15550100", T0, codec="PCMU"
            )
        )
        self.expected.calls.add(self.call_id)

    async def talk(self, phase: str, exchanges: int, pace_s: float = 0.0) -> None:
        """Caller turn, tool call, agent turn and usage per exchange; `pace_s` spaces exchanges in time."""
        for _ in range(exchanges):
            at = T0 + timedelta(seconds=self.seq)
            caller = TurnRecord(
                self.tenant, self.call_id, self.seq, Speaker.CALLER, f"{phase} q{self.seq}", at, at
            )
            tool = ToolCallRecord(
                self.tenant,
                self.call_id,
                "lookup",
                {"q": self.seq},
                {"a": 1},
                ToolStatus.OK,
                at,
                3.0,
                caller.id,
            )
            agent = TurnRecord(
                self.tenant, self.call_id, self.seq + 1, Speaker.AGENT, f"{phase} a{self.seq}", at, at,
                {"endpoint": 90.0, "first_rtp_out": 640.0}, interrupted=True, heard_text="par",
            )  # fmt: skip
            usage = UsageRecord(
                self.tenant, self.call_id, at, llm_tokens_in=7, llm_tokens_out=2, tool_calls=1
            )
            for rec in (caller, tool, agent, usage):
                self._record(rec)
            self.phase_turns.setdefault(phase, []).extend([caller.id, agent.id])
            self.seq += 2
            await asyncio.sleep(pace_s)  # yield to the loop (and to the writer) between exchanges

    def _record(self, rec: StoreRecord) -> None:
        if isinstance(rec, TurnRecord):
            self.store.record_turn(rec)
            self.expected.turns.append(rec.id)
        elif isinstance(rec, ToolCallRecord):
            self.store.record_tool_call(rec)
            self.expected.tool_calls.append(rec.id)
        elif isinstance(rec, UsageRecord):
            self.store.record_usage(rec)
            self.expected.usage.append(rec.id)

    def end(self) -> None:
        media = MediaQuality(packets_received=500, packets_sent=498, packets_lost=2)
        self.store.record_call_ended(
            CallEnd(self.tenant, self.call_id, T0 + timedelta(minutes=2), "hangup", media=media)
        )


async def stored_ids(admin_dsn: str, tenants: list[str]) -> dict[str, list[UUID]]:
    conn = await asyncpg.connect(admin_dsn)  # the superuser sees every tenant: one global view to count
    try:
        out = {}
        for table in ("calls", "turns", "tool_calls", "usage"):
            rows = await conn.fetch(f"SELECT id FROM trunkline.{table} WHERE tenant_id = ANY($1)", tenants)
            out[table] = [UUID(str(r["id"])) for r in rows]
        out["ended"] = [
            UUID(str(r["id"]))
            for r in await conn.fetch(
                "SELECT id FROM trunkline.calls WHERE tenant_id = ANY($1) AND ended_at IS NOT NULL"
                " AND packets_lost = 2",
                tenants,
            )
        ]
        return out
    finally:
        await conn.close()


def assert_exactly_once(stored: dict[str, list[UUID]], expected: Expected) -> None:
    for table, want in (
        ("turns", expected.turns),
        ("tool_calls", expected.tool_calls),
        ("usage", expected.usage),
    ):
        assert len(want) == len(set(want))
        assert len(stored[table]) == len(want), table
        assert set(stored[table]) == set(want), table
    assert sorted(stored["calls"]) == sorted(expected.calls)
    assert sorted(stored["ended"]) == sorted(expected.calls)


def spooled_turn_ids(spool_dir: Path) -> set[UUID]:
    spool = Spool(spool_dir)
    spool.open()
    return {r.id for p in spool.segments() for r in spool.read(p).records if isinstance(r, TurnRecord)}


def idle_while_spooling(s: WriterStats) -> bool:
    return s.mode is WriterMode.SPOOLING and s.spooled > 0 and s.queued == 0 and s.in_flight == 0


async def test_postgres_stopped_during_active_calls_loses_and_duplicates_nothing(
    pg: PgPeer, dsns: DatabaseDsns, tmp_path: Path
) -> None:
    suffix = uuid4().hex[:6]
    tenants = [f"out-a-{suffix}", f"out-b-{suffix}", f"out-c-{suffix}"]
    expected = Expected()
    store = PostgresCallStore(dsns.app, tmp_path / "spool", options=FAST)
    await store.start()
    try:
        calls = [SimulatedCall(store, tenants[i % 3], expected) for i in range(6)]
        for c in calls:
            c.start()
        await asyncio.gather(*(c.talk("before", 3) for c in calls))
        await store.wait_idle(timeout=30)

        stopping = asyncio.create_task(asyncio.to_thread(pg.stop, "immediate"))
        await asyncio.gather(*(c.talk("stopping", 4, pace_s=0.01) for c in calls))  # spans the stop
        await stopping
        await asyncio.gather(*(c.talk("down", 3) for c in calls))
        stats = await store.wait_until(idle_while_spooling, timeout=30)
        assert stats.written > 0 and stats.spooled > 0
        on_disk = await asyncio.to_thread(spooled_turn_ids, tmp_path / "spool")
        assert {t for c in calls for t in c.phase_turns["down"]} <= on_disk  # durable while Postgres is down

        restarting = asyncio.create_task(asyncio.to_thread(pg.restart))
        await asyncio.gather(*(c.talk("restarting", 4, pace_s=0.01) for c in calls))
        await restarting
        await asyncio.gather(*(c.talk("after", 2) for c in calls))
        for c in calls:
            c.end()
        final = await store.wait_idle(timeout=60)
    finally:
        await store.aclose()
    assert (final.rejected, final.lost, final.dropped) == (0, 0, 0)
    assert final.replayed > 0
    assert_exactly_once(await stored_ids(dsns.admin, tenants), expected)
    assert spooled_turn_ids(tmp_path / "spool") == set()


async def test_spool_left_by_a_previous_process_is_replayed_once_even_after_a_partial_replay(
    dsns: DatabaseDsns, tmp_path: Path
) -> None:
    tenant = f"crash-{uuid4().hex[:6]}"
    expected = Expected()
    unreachable = dsns.app.split("?")[0] + f"?host={tmp_path / 'no-such-socket-dir'}"
    first = PostgresCallStore(unreachable, tmp_path / "spool", options=FAST)
    await first.start()
    calls = [SimulatedCall(first, tenant, expected) for _ in range(3)]
    for c in calls:
        c.start()
        await c.talk("offline", 5)
        c.end()
    await first.wait_until(idle_while_spooling, timeout=30)
    await first.aclose()  # the "process" ends with everything in the spool

    spool = Spool(tmp_path / "spool")
    spool.open()
    spooled = [r for p in spool.segments() for r in spool.read(p).records]
    assert len(spooled) == 3 * (2 + 5 * 4)
    pool = await create_app_pool(dsns.app, max_size=1)
    try:  # a replay that committed the first half and then crashed before removing the segment
        await write_records(pool, spooled[: len(spooled) // 2])
    finally:
        await pool.close()

    async with PostgresCallStore(dsns.app, tmp_path / "spool", options=FAST) as second:
        final = await second.wait_idle(timeout=30)
    assert final.replayed == len(spooled) and final.rejected == 0
    assert_exactly_once(await stored_ids(dsns.admin, [tenant]), expected)


async def test_a_record_postgres_refuses_is_set_aside_and_the_rest_is_stored(
    dsns: DatabaseDsns, tmp_path: Path
) -> None:
    tenant = f"poison-{uuid4().hex[:6]}"
    expected = Expected()
    async with PostgresCallStore(dsns.app, tmp_path / "spool", options=FAST) as store:
        call = SimulatedCall(store, tenant, expected)
        call.start()
        await call.talk("one", 1)
        orphan = TurnRecord(
            tenant, uuid4(), 0, Speaker.CALLER, "no such call", T0, T0
        )  # foreign key violation
        store.record_turn(orphan)
        negative = ToolCallRecord(tenant, call.call_id, "f", {}, None, ToolStatus.ERROR, T0, -1.0)  # CHECK
        store.record_tool_call(negative)
        nan = TurnRecord(tenant, call.call_id, 99, Speaker.AGENT, "x", T0, T0, {"endpoint": float("nan")})
        store.record_turn(nan)  # jsonb has no NaN: refused by the driver
        await call.talk("two", 1)
        call.end()
        final = await store.wait_idle(timeout=30)
    assert final.rejected == 3
    assert_exactly_once(await stored_ids(dsns.admin, [tenant]), expected)
    rejected = (tmp_path / "spool" / REJECTED_FILE).read_text()
    assert all(str(r.id) in rejected for r in (orphan, negative, nan))


async def test_a_full_queue_drops_and_counts_instead_of_blocking(dsns: DatabaseDsns, tmp_path: Path) -> None:
    tenant = f"full-{uuid4().hex[:6]}"
    options = StoreOptions(queue_capacity=5)
    async with PostgresCallStore(dsns.app, tmp_path / "spool", options=options) as store:
        call_id = uuid4()
        store.record_call_started(CallRecord(tenant, call_id, Direction.OUTBOUND, "", "", T0))
        for i in range(20):  # no await in between: the writer cannot drain
            store.record_turn(TurnRecord(tenant, call_id, i, Speaker.AGENT, "x", T0, T0))
        assert store.stats().dropped == 16
        final = await store.wait_idle(timeout=30)
    assert final.written == 5 and final.submitted == 5
