"""Row-level security of the call store, against a real PostgreSQL, as the application role."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from tests.peers.postgres import shared_postgres
from trunkline.store.callstore import PostgresCallStore
from trunkline.store.cli import add_commands
from trunkline.store.embedded import DatabaseDsns
from trunkline.store.memory import MemoryCallStore
from trunkline.store.postgres import create_app_pool, tenant_transaction, write_records
from trunkline.store.records import (
    CallEnd,
    CallRecord,
    Direction,
    Speaker,
    StoreRecord,
    TenantInfo,
    ToolCallRecord,
    ToolStatus,
    TurnRecord,
    UsageRecord,
)

pytestmark = pytest.mark.integration

TABLES = ("tenants", "calls", "turns", "tool_calls", "usage")
T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dsns() -> DatabaseDsns:
    return asyncio.run(shared_postgres().new_database("rls"))


@pytest.fixture
async def pool(dsns: DatabaseDsns) -> AsyncIterator[asyncpg.Pool]:
    p = await create_app_pool(dsns.app, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def tenants() -> Iterator[tuple[str, str]]:
    suffix = uuid4().hex[:8]
    yield f"a-{suffix}", f"b-{suffix}"


def call_records(tenant: str, call_id: UUID, n_turns: int) -> list[StoreRecord]:
    recs: list[StoreRecord] = [CallRecord(tenant, call_id, Direction.INBOUND, "+15550001", "+15550100", T0)]
    for i in range(n_turns):
        at = T0 + timedelta(seconds=2 * i)
        turn = TurnRecord(
            tenant, call_id, i, Speaker.CALLER if i % 2 == 0 else Speaker.AGENT, f"t{i}", at, at
        )
        recs.append(turn)
        recs.append(
            ToolCallRecord(tenant, call_id, "lookup", {"i": i}, {"ok": True}, ToolStatus.OK, at, 5, turn.id)
        )
        recs.append(UsageRecord(tenant, call_id, at, llm_tokens_in=10, llm_tokens_out=3, tool_calls=1))
    recs.append(CallEnd(tenant, call_id, T0 + timedelta(minutes=1), "caller_hangup"))
    return recs


async def seed(pool: asyncpg.Pool, tenant: str, n_calls: int, n_turns: int = 2) -> list[UUID]:
    ids = [uuid4() for _ in range(n_calls)]
    for call_id in ids:
        await write_records(pool, call_records(tenant, call_id, n_turns))
    return ids


async def counts(pool: asyncpg.Pool, tenant: str) -> dict[str, int]:
    async with tenant_transaction(pool, tenant) as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM trunkline.{t}") for t in TABLES}


async def test_app_role_owns_nothing_and_cannot_bypass_rls(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT current_user AS who, rolsuper, rolbypassrls,"
            " pg_has_role(current_user, 'trunkline_owner', 'MEMBER') AS in_owner,"
            " (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
            " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
            " + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)"
            " + (SELECT count(*) FROM pg_type WHERE typowner = r.oid) AS owned"
            " FROM pg_roles r WHERE rolname = current_user"
        )
        assert dict(row) == {
            "who": "trunkline_app", "rolsuper": False, "rolbypassrls": False, "in_owner": False, "owned": 0,
        }  # fmt: skip
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE trunkline.calls DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE trunkline_owner")


async def test_tenant_a_cannot_read_update_or_delete_tenant_b(
    pool: asyncpg.Pool, tenants: tuple[str, str]
) -> None:
    a, b = tenants
    await seed(pool, a, 2)
    await seed(pool, b, 3)
    b_before = await counts(pool, b)
    assert b_before == {"tenants": 1, "calls": 3, "turns": 6, "tool_calls": 6, "usage": 6}
    async with tenant_transaction(pool, a) as conn:
        for table in TABLES:
            owners = {r[0] for r in await conn.fetch(f"SELECT tenant_id FROM trunkline.{table}")}
            assert owners == {a}, table
            assert await conn.execute(f"UPDATE trunkline.{table} SET tenant_id = tenant_id") != "UPDATE 0"
            assert await conn.execute(
                f"UPDATE trunkline.{table} SET tenant_id = $1 WHERE tenant_id = $1", b
            ) == ("UPDATE 0")
            assert await conn.execute(f"DELETE FROM trunkline.{table} WHERE tenant_id = $1", b) == "DELETE 0"
        assert (
            await conn.execute("UPDATE trunkline.turns SET text = 'x' WHERE tenant_id <> $1", a) == "UPDATE 0"
        )
        assert await conn.execute("DELETE FROM trunkline.usage WHERE tenant_id <> $1", a) == "DELETE 0"
    assert await counts(pool, b) == b_before
    async with tenant_transaction(pool, b) as conn:
        assert {r[0] for r in await conn.fetch("SELECT text FROM trunkline.turns")} == {"t0", "t1"}


async def test_tenant_a_cannot_insert_or_move_rows_into_tenant_b(
    pool: asyncpg.Pool, tenants: tuple[str, str]
) -> None:
    a, b = tenants
    [a_call] = await seed(pool, a, 1)
    [b_call] = await seed(pool, b, 1)
    attempts = {
        "tenants": ("INSERT INTO trunkline.tenants (tenant_id) VALUES ($1)", (b + "-new",)),
        "calls": (
            "INSERT INTO trunkline.calls (id, tenant_id, direction, started_at)"
            " VALUES ($1, $2, 'inbound', now())",
            (uuid4(), b),
        ),
        "turns": (
            "INSERT INTO trunkline.turns (id, tenant_id, call_id, seq, speaker, text, started_at, ended_at)"
            " VALUES ($1, $2, $3, 9, 'caller', 'x', now(), now())",
            (uuid4(), b, b_call),
        ),
        "tool_calls": (
            "INSERT INTO trunkline.tool_calls (id, tenant_id, call_id, name, status, started_at, duration_ms)"
            " VALUES ($1, $2, $3, 'f', 'ok', now(), 1)",
            (uuid4(), b, b_call),
        ),
        "usage": (
            "INSERT INTO trunkline.usage (id, tenant_id, call_id, recorded_at) VALUES ($1, $2, $3, now())",
            (uuid4(), b, b_call),
        ),
        "move": ("UPDATE trunkline.usage SET tenant_id = $1 WHERE call_id = $2", (b, a_call)),
    }
    for sql, args in attempts.values():
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_transaction(pool, a) as conn:
                await conn.execute(sql, *args)
    assert await counts(pool, b) == {"tenants": 1, "calls": 1, "turns": 2, "tool_calls": 2, "usage": 2}


async def test_no_tenant_set_returns_zero_rows(pool: asyncpg.Pool, tenants: tuple[str, str]) -> None:
    a, _ = tenants
    await seed(pool, a, 2)
    async with pool.acquire() as conn:
        for table in TABLES:  # a connection that never had a tenant: the setting is NULL
            assert await conn.fetchval(f"SELECT count(*) FROM trunkline.{table}") == 0
        async with conn.transaction():
            await conn.execute("SELECT set_config('trunkline.tenant_id', $1, true)", a)
            assert await conn.fetchval("SELECT count(*) FROM trunkline.calls") == 2
        for table in TABLES:  # same connection after the tenant's transaction: the setting is ''
            assert await conn.fetchval(f"SELECT count(*) FROM trunkline.{table}") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO trunkline.tenants (tenant_id) VALUES ($1)", a + "-x")
    with pytest.raises(ValueError):
        async with tenant_transaction(pool, ""):
            pass


class Injected(Exception):
    """Raised inside a tenant transaction to abort it."""


@pytest.mark.parametrize("reset_session", [True, False], ids=["pool-reset", "no-pool-reset"])
async def test_interleaved_requests_with_failures_and_cancellations_never_cross_tenants(
    dsns: DatabaseDsns, reset_session: bool
) -> None:
    # Without the pool's RESET ALL only the transaction-local set_config keeps tenants apart.
    rng = random.Random(20240601)
    pool = await create_app_pool(dsns.app, max_size=4, reset_session=reset_session)
    try:
        names = [f"mix{i}-{uuid4().hex[:6]}" for i in range(5)]
        expected = {name: i + 1 for i, name in enumerate(names)}  # distinct call counts per tenant
        for name, n in expected.items():
            await seed(pool, name, n, n_turns=1)
        outcomes: dict[str, int] = {}
        violations: list[str] = []

        async def check(conn: asyncpg.Connection, tenant: str | None) -> None:
            rows = await conn.fetch(
                "SELECT tenant_id FROM trunkline.calls UNION ALL SELECT tenant_id FROM trunkline.turns"
            )
            want = [] if tenant is None else [tenant] * (2 * expected[tenant])
            if sorted(r[0] for r in rows) != want:
                violations.append(f"{tenant}: got {sorted({r[0] for r in rows})} x{len(rows)}")

        async def sleep_in_tx(tenant: str, inside: asyncio.Event) -> None:
            async with tenant_transaction(pool, tenant) as conn:
                await check(conn, tenant)
                inside.set()
                # short: a cancel request that reaches the server before the query is ignored by it
                await conn.execute("SELECT pg_sleep(0.3)")

        async def request(i: int) -> None:
            tenant = names[rng.randrange(len(names))]
            mode = rng.choice(["read", "read", "raise", "rollback_write", "cancel", "timeout", "no_tenant"])
            outcomes[mode] = outcomes.get(mode, 0) + 1
            if mode == "no_tenant":
                async with pool.acquire() as conn:
                    await check(conn, None)
            elif mode == "cancel":
                inside = asyncio.Event()
                task = asyncio.create_task(sleep_in_tx(tenant, inside))
                await inside.wait()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif mode == "timeout":  # cancellation at an arbitrary await: acquire, set_config, fetch, commit
                with contextlib.suppress(TimeoutError):
                    async with (
                        asyncio.timeout(rng.uniform(0, 0.004)),
                        tenant_transaction(pool, tenant) as conn,
                    ):
                        await check(conn, tenant)
            else:
                with contextlib.suppress(Injected):
                    async with tenant_transaction(pool, tenant) as conn:
                        await check(conn, tenant)
                        if mode == "rollback_write":
                            await write_records_in(conn, tenant)
                        if mode != "read":
                            raise Injected

        await asyncio.gather(*(request(i) for i in range(1000)))
        assert violations == []
        assert set(outcomes) == {"read", "raise", "rollback_write", "cancel", "timeout", "no_tenant"}
        for name, n in expected.items():  # rolled-back writes left nothing behind
            assert (await counts(pool, name))["calls"] == n
    finally:
        await pool.close()


async def write_records_in(conn: asyncpg.Connection, tenant: str) -> None:
    await conn.execute(
        "INSERT INTO trunkline.calls (id, tenant_id, direction, started_at)"
        " VALUES ($1, $2, 'outbound', now())",
        uuid4(),
        tenant,
    )


async def test_store_reads_only_return_the_tenants_calls(
    pool: asyncpg.Pool, tenants: tuple[str, str]
) -> None:
    from trunkline.store.postgres import PostgresCallReader

    a, b = tenants
    reader = PostgresCallReader(pool)
    await reader.sync_tenants([TenantInfo(a, "Alpha"), TenantInfo(b, "Beta")])
    a_calls = await seed(pool, a, 2, n_turns=3)
    [b_call] = await seed(pool, b, 1)
    assert {c.call_id for c in await reader.list_calls(a)} == set(a_calls)
    assert await reader.get_call(a, b_call) is None
    detail = await reader.get_call(a, a_calls[0])
    assert detail is not None
    assert [t.seq for t in detail.turns] == [0, 1, 2] and detail.call.turn_count == 3
    assert detail.usage.llm_tokens_in == 30 and detail.usage.tool_calls == 3
    assert len(detail.tool_calls) == 3 and detail.call.end_reason == "caller_hangup"
    async with tenant_transaction(pool, a) as conn:
        assert await conn.fetchval("SELECT display_name FROM trunkline.tenants") == "Alpha"


def test_cli_lists_and_shows_only_the_tenants_calls(dsns: DatabaseDsns, tenants: tuple[str, str]) -> None:
    a, b = tenants

    async def setup() -> tuple[list[UUID], list[UUID]]:
        p = await create_app_pool(dsns.app, max_size=1)
        try:
            return await seed(p, a, 2), await seed(p, b, 1)
        finally:
            await p.close()

    a_calls, b_calls = asyncio.run(setup())

    parser = argparse.ArgumentParser(prog="trunkline")
    add_commands(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> tuple[int, str]:
        args = parser.parse_args([*argv, "--tenant", a, "--database-url", dsns.app])
        out = io.StringIO()
        return args.func(args, out), out.getvalue()

    code, text = run("calls", "list", "--limit", "10")
    assert code == 0
    assert all(str(c) in text for c in a_calls) and str(b_calls[0]) not in text
    code, text = run("calls", "show", str(a_calls[0]))
    assert code == 0 and "caller: t0" in text and "agent: t1" in text and "tool lookup" in text
    assert run("calls", "show", str(b_calls[0])) == (1, "")
    assert run("calls", "show", "not-a-uuid") == (2, "")


@pytest.mark.parametrize("kind", ["memory", "postgres"])
async def test_memory_fake_and_postgres_store_agree(kind: str, dsns: DatabaseDsns, tmp_path: Path) -> None:
    a, b = f"ca-{uuid4().hex[:6]}", f"cb-{uuid4().hex[:6]}"
    store: MemoryCallStore | PostgresCallStore = (
        MemoryCallStore() if kind == "memory" else PostgresCallStore(dsns.app, tmp_path / "spool")
    )
    if isinstance(store, PostgresCallStore):
        await store.start()
    try:
        await store.sync_tenants([TenantInfo(a, "A"), TenantInfo(b, "B")])
        a_call, b_call = uuid4(), uuid4()
        recs = call_records(a, a_call, 3) + call_records(b, b_call, 1)
        for rec in recs + recs:  # everything twice: the second copy must change nothing
            submit(store, rec)
        if isinstance(store, PostgresCallStore):
            await store.wait_idle(timeout=30)
        [listed] = await store.list_calls(a)
        assert (listed.call_id, listed.turn_count, listed.end_reason) == (a_call, 3, "caller_hangup")
        assert await store.get_call(a, b_call) is None
        detail = await store.get_call(a, a_call)
        assert detail is not None
        assert [t.text for t in detail.turns] == ["t0", "t1", "t2"]
        assert [t.speaker for t in detail.turns] == [Speaker.CALLER, Speaker.AGENT, Speaker.CALLER]
        assert [tc.arguments for tc in detail.tool_calls] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert (detail.usage.llm_tokens_in, detail.usage.llm_tokens_out, detail.usage.tool_calls) == (
            30,
            9,
            3,
        )
        assert detail.turns == tuple(r for r in recs if isinstance(r, TurnRecord) and r.tenant_id == a)
    finally:
        if isinstance(store, PostgresCallStore):
            await store.aclose()


def submit(store: MemoryCallStore | PostgresCallStore, rec: StoreRecord) -> None:
    if isinstance(rec, CallRecord):
        store.record_call_started(rec)
    elif isinstance(rec, TurnRecord):
        store.record_turn(rec)
    elif isinstance(rec, ToolCallRecord):
        store.record_tool_call(rec)
    elif isinstance(rec, UsageRecord):
        store.record_usage(rec)
    else:
        store.record_call_ended(rec)
