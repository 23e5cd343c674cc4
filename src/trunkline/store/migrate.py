"""Versioned schema migrations (store/migrations/NNNN_name.sql) and the role setup they rely on.

Run with an admin connection (superuser, or a role with CREATEROLE that owns the database). Everything happens
in one transaction under an advisory lock, so several server instances starting together apply each
migration once. Objects are created as the NOLOGIN role `trunkline_owner`; the server connects as
`trunkline_app`, which owns nothing, is not a superuser, has no BYPASSRLS and is not a member of the owner.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from trunkline.logs import get_logger
from trunkline.store.errors import MigrationError, StoreConfigError

SCHEMA = "trunkline"
OWNER_ROLE = "trunkline_owner"
APP_ROLE = "trunkline_app"
TENANT_SETTING = "trunkline.tenant_id"
_LOCK_KEY = 0x74726B6C6D6967  # "trklmig": serialises concurrent migrators of one database
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_NO_SCHEMA_ERRORS = (
    asyncpg.UndefinedTableError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.InsufficientPrivilegeError,
)

log = get_logger("trunkline.store.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def parse_migrations(files: Iterable[tuple[str, str]]) -> tuple[Migration, ...]:
    """Build the ordered migration list from (file name, SQL) pairs; versions must be 1, 2, 3, ..."""
    found: dict[int, Migration] = {}
    for filename, sql in files:
        m = _NAME_RE.match(filename)
        if m is None:
            raise MigrationError(f"bad migration file name {filename!r} (want NNNN_name.sql)")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}")
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        found[version] = Migration(version, m.group(2), sql, checksum)
    ordered = tuple(found[v] for v in sorted(found))
    if [m.version for m in ordered] != list(range(1, len(ordered) + 1)):
        raise MigrationError("migration versions must be contiguous from 1")
    return ordered


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in this package."""
    folder = resources.files("trunkline.store") / "migrations"
    files = [(p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".sql")]
    return parse_migrations(files)


@functools.cache
def latest_version() -> int:
    return load_migrations()[-1].version


def plan_migrations(available: tuple[Migration, ...], applied: Mapping[int, str]) -> tuple[Migration, ...]:
    """Migrations still to apply, given the applied version → checksum map; refuses inconsistent states."""
    known = {m.version: m for m in available}
    for version, checksum in applied.items():
        if version not in known:
            raise MigrationError(f"database has schema version {version}, unknown to this build (newer?)")
        if known[version].checksum != checksum:
            raise MigrationError(f"migration {version} was edited after it was applied")
    pending = tuple(m for m in available if m.version not in applied)
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(f"migration {pending[0].version} is missing below applied {max(applied)}")
    return pending


async def _create_role_if_missing(conn: Any, name: str, options: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
        return
    try:
        async with conn.transaction():  # savepoint: another database of the cluster may create it first
            await conn.execute(f"CREATE ROLE {name} {options}")
    except Exception as exc:  # asyncpg errors: duplicate role from a concurrent creator
        if getattr(exc, "sqlstate", None) not in ("42710", "23505"):
            raise MigrationError(f"cannot create role {name}: {exc}") from exc


async def ensure_roles(conn: Any) -> None:
    """Create the owner and app roles if missing and check the app role cannot bypass RLS."""
    await _create_role_if_missing(conn, OWNER_ROLE, "NOLOGIN NOINHERIT")
    await _create_role_if_missing(conn, APP_ROLE, "LOGIN NOINHERIT")
    row = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, pg_has_role($1, $2, 'MEMBER') AS in_owner FROM pg_roles "
        "WHERE rolname = $1",
        APP_ROLE,
        OWNER_ROLE,
    )
    if row["rolsuper"] or row["rolbypassrls"] or row["in_owner"]:
        raise MigrationError(f"role {APP_ROLE} must not be superuser, BYPASSRLS or a member of {OWNER_ROLE}")
    if not await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", OWNER_ROLE):
        try:
            await conn.execute(f"GRANT {OWNER_ROLE} TO CURRENT_USER")
        except Exception as exc:
            raise MigrationError(f"the admin role needs membership in {OWNER_ROLE}: {exc}") from exc


async def migrate(conn: Any) -> tuple[int, ...]:
    """Bring the schema up to date over an admin connection; returns the versions applied now."""
    available = load_migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await ensure_roles(conn)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {OWNER_ROLE}")
        await conn.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
        await conn.execute(f"SET LOCAL search_path = {SCHEMA}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {APP_ROLE}")
        await conn.execute(f"GRANT SELECT ON schema_migrations TO {APP_ROLE}")
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        pending = plan_migrations(available, {r["version"]: r["checksum"] for r in rows})
        for m in pending:
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
        unprotected = await tables_without_forced_rls(conn)
        if unprotected:
            raise MigrationError(f"tenant data without forced row-level security: {', '.join(unprotected)}")
    if pending:
        log.info("store.migrated", versions=[m.version for m in pending])
    return tuple(m.version for m in pending)


_RLS_AUDIT = f"""
SELECT n.nspname || '.' || c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND ($1::text IS NULL OR n.nspname = $1)
  AND (
    (c.relkind IN ('r', 'p')
     AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                 AND NOT a.attisdropped AND a.attname IN ('tenant_id', 'tenant'))
     AND (NOT c.relrowsecurity OR NOT c.relforcerowsecurity
          OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)))
    OR (c.relkind IN ('v', 'm') AND n.nspname = '{SCHEMA}'
        AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)))
ORDER BY 1
"""


async def tables_without_forced_rls(conn: Any, schema: str | None = SCHEMA) -> list[str]:
    """Tables with a tenant column lacking ENABLED+FORCED RLS or a policy, and views that would bypass it.

    `schema=None` audits every non-system schema of the database.
    """
    return [r["name"] for r in await conn.fetch(_RLS_AUDIT, schema)]


async def check_app_connection(conn: Any) -> None:
    """Refuse a connection that could bypass RLS or a schema this build does not match (StoreConfigError)."""
    row = await conn.fetchrow(
        "SELECT r.rolsuper, r.rolbypassrls,"
        " EXISTS (SELECT 1 FROM pg_roles o WHERE o.rolname = $1"
        "         AND pg_has_role(current_user, o.oid, 'MEMBER')) AS in_owner,"
        " EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)"
        "   OR EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspowner = r.oid) AS owns"
        " FROM pg_roles r WHERE r.rolname = current_user",
        OWNER_ROLE,
    )
    if row["rolsuper"] or row["rolbypassrls"] or row["in_owner"] or row["owns"]:
        raise StoreConfigError(
            "the store's database role can bypass row-level security (superuser, BYPASSRLS, owner "
            f"membership or owns objects); connect as {APP_ROLE}"
        )
    try:
        version = await conn.fetchval(f"SELECT max(version) FROM {SCHEMA}.schema_migrations")
    except _NO_SCHEMA_ERRORS as exc:
        raise StoreConfigError(f"no trunkline schema: run migrations with the admin DSN ({exc})") from exc
    if version != latest_version():
        raise StoreConfigError(
            f"schema version {version}, this build needs {latest_version()}: run migrations"
        )
