"""Schema migrations, the RLS schema audit, role checks, and the embedded default (no database setup)."""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from tests.peers.postgres import shared_postgres
from trunkline.store.callstore import PostgresCallStore
from trunkline.store.cli import cmd_calls_list, cmd_calls_show
from trunkline.store.embedded import SUPERUSER
from trunkline.store.errors import MigrationError, StoreConfigError
from trunkline.store.migrate import (
    APP_ROLE,
    ensure_roles,
    load_migrations,
    migrate,
    parse_migrations,
    plan_migrations,
    tables_without_forced_rls,
)
from trunkline.store.records import CallRecord, Direction, Speaker, TenantInfo, TurnRecord
from trunkline.store.runtime import StoreSettings, open_call_store

pytestmark = pytest.mark.integration


# --- planning (pure) -------------------------------------------------------------------------------------


def test_migrations_are_ordered_by_version_and_must_be_contiguous() -> None:
    ms = parse_migrations([("0002_b.sql", "B"), ("0001_a.sql", "A")])
    assert [(m.version, m.name) for m in ms] == [(1, "a"), (2, "b")]
    with pytest.raises(MigrationError):
        parse_migrations([("0001_a.sql", "A"), ("0003_c.sql", "C")])
    with pytest.raises(MigrationError):
        parse_migrations([("0001_a.sql", "A"), ("0001_b.sql", "B")])
    with pytest.raises(MigrationError):
        parse_migrations([("1_a.sql", "A")])


def test_plan_applies_what_is_missing_and_refuses_edited_or_unknown_versions() -> None:
    ms = parse_migrations([("0001_a.sql", "A"), ("0002_b.sql", "B")])
    assert [m.version for m in plan_migrations(ms, {})] == [1, 2]
    assert [m.version for m in plan_migrations(ms, {1: ms[0].checksum})] == [2]
    assert plan_migrations(ms, {1: ms[0].checksum, 2: ms[1].checksum}) == ()
    with pytest.raises(MigrationError, match="edited"):
        plan_migrations(ms, {1: "something else"})
    with pytest.raises(MigrationError, match="unknown"):
        plan_migrations(ms, {1: ms[0].checksum, 3: "x"})
    with pytest.raises(MigrationError, match="missing"):
        plan_migrations(ms, {2: ms[1].checksum})


def test_shipped_migrations_load_from_the_package() -> None:
    ms = load_migrations()
    assert ms[0].version == 1 and "FORCE ROW LEVEL SECURITY" in ms[0].sql


# --- against PostgreSQL ----------------------------------------------------------------------------------


async def fresh_database() -> str:
    """An empty database on the shared server; returns its admin DSN."""
    peer = shared_postgres()
    name = f"mig_{uuid4().hex[:10]}"
    await peer.embedded.ensure_database(name)
    return peer.dsn(SUPERUSER, name)


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(await fresh_database())
    try:
        yield conn
    finally:
        await conn.close()


async def test_migrate_applies_once_and_is_idempotent(admin: asyncpg.Connection) -> None:
    shipped = load_migrations()
    assert await migrate(admin) == tuple(m.version for m in shipped)
    assert await migrate(admin) == ()
    rows = await admin.fetch("SELECT version, name FROM trunkline.schema_migrations ORDER BY version")
    assert [tuple(r) for r in rows] == [(m.version, m.name) for m in shipped]
    assert [m.name for m in shipped[:2]] == ["initial", "far_end_quality"]
    owners = await admin.fetch(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = relnamespace WHERE nspname = 'trunkline'"
    )
    assert [r[0] for r in owners] == ["trunkline_owner"]


async def test_concurrent_migrators_apply_each_version_once() -> None:
    dsn = await fresh_database()
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        versions = tuple(m.version for m in load_migrations())
        assert sorted(results) == [(), (), versions]
        assert await conns[0].fetchval("SELECT count(*) FROM trunkline.schema_migrations") == len(versions)
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_migration_is_refused(admin: asyncpg.Connection) -> None:
    await migrate(admin)
    await admin.execute("UPDATE trunkline.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="edited"):
        await migrate(admin)


async def test_every_table_with_a_tenant_column_has_forced_rls(admin: asyncpg.Connection) -> None:
    await migrate(admin)
    assert await tables_without_forced_rls(admin, schema=None) == []
    rows = await admin.fetch(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'trunkline' AND c.relkind = 'r' AND EXISTS"
        " (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')"
    )
    assert {r["relname"] for r in rows} == {"tenants", "calls", "turns", "tool_calls", "usage"}
    assert all(r["relrowsecurity"] and r["relforcerowsecurity"] and r["policies"] == 1 for r in rows)


async def test_the_rls_audit_catches_unprotected_tenant_data(admin: asyncpg.Connection) -> None:
    await migrate(admin)
    steps = [
        ("CREATE TABLE trunkline.leaky (id int, tenant_id text)", ["trunkline.leaky"]),
        ("ALTER TABLE trunkline.leaky ENABLE ROW LEVEL SECURITY", ["trunkline.leaky"]),
        ("ALTER TABLE trunkline.leaky FORCE ROW LEVEL SECURITY", ["trunkline.leaky"]),  # no policy yet
        ("CREATE POLICY p ON trunkline.leaky USING (tenant_id = current_setting('x', true))", []),
        ("CREATE VIEW trunkline.all_calls AS SELECT * FROM trunkline.calls", ["trunkline.all_calls"]),
        ("ALTER VIEW trunkline.all_calls SET (security_invoker = true)", []),
        (
            "CREATE TABLE public.other_app (tenant text)",
            [],
        ),  # outside our schema: only the full audit sees it
    ]
    for sql, flagged in steps:
        await admin.execute(sql)
        assert await tables_without_forced_rls(admin) == flagged, sql
    assert await tables_without_forced_rls(admin, schema=None) == ["public.other_app"]
    await admin.execute("ALTER TABLE trunkline.leaky NO FORCE ROW LEVEL SECURITY")
    with pytest.raises(MigrationError, match="leaky"):
        await migrate(admin)


async def test_the_store_refuses_a_role_that_could_bypass_rls_or_a_stale_schema(tmp_path: Path) -> None:
    dsn = await fresh_database()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await ensure_roles(conn)  # cluster-wide; may be the first test to need them
    finally:
        await conn.close()
    app_dsn = dsn.replace(f"{SUPERUSER}@", f"{APP_ROLE}@")
    with pytest.raises(StoreConfigError, match="no trunkline schema"):  # not migrated yet
        await PostgresCallStore(app_dsn, tmp_path / "s1").start()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    with pytest.raises(StoreConfigError, match="bypass"):  # the superuser
        await PostgresCallStore(dsn, tmp_path / "s2").start()
    with pytest.raises(StoreConfigError, match="rejected"):  # a role that does not exist
        await PostgresCallStore(dsn.replace(f"{SUPERUSER}@", "nobody_here@"), tmp_path / "s3").start()
    async with PostgresCallStore(app_dsn, tmp_path / "s4") as store:
        assert await store.list_calls("nobody") == []


def test_default_embedded_store_needs_no_database_setup() -> None:
    """No DATABASE_URL: the store starts its own PostgreSQL in the state dir; the CLI reads it back."""
    base = Path(tempfile.mkdtemp(prefix="trunkline-state-"))  # not under pytest's root-only tmp dirs
    try:
        _embedded_round_trip(base / "var")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _embedded_round_trip(state: Path) -> None:
    settings = StoreSettings.from_env({}, state_dir=state)
    call_id = uuid4()
    t0 = datetime(2024, 8, 1, tzinfo=UTC)

    async def record() -> None:
        store = await open_call_store(settings)
        try:
            await store.sync_tenants([TenantInfo("demo", "Demo")])
            store.record_call_started(CallRecord("demo", call_id, Direction.INBOUND, "+1555", "+1556", t0))
            store.record_turn(TurnRecord("demo", call_id, 0, Speaker.CALLER, "is anybody there", t0, t0))
            await store.wait_idle(timeout=30)
        finally:
            await store.aclose()

    asyncio.run(record())
    assert (state / "pg" / "PG_VERSION").exists() and (state / "spool").is_dir()
    out = io.StringIO()
    args = argparse.Namespace(
        tenant="demo", database_url=None, state_dir=state, limit=5, call_id=str(call_id)
    )
    assert cmd_calls_list(args, out) == 0 and str(call_id) in out.getvalue()
    out = io.StringIO()
    assert cmd_calls_show(args, out) == 0 and "caller: is anybody there" in out.getvalue()
