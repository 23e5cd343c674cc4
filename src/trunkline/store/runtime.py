"""Composition helpers: where the database is (embedded or external), migrations at start, open the store.

Settings:
- `database_url` unset → embedded PostgreSQL in `state_dir/pg`; migrations run as its superuser and the
  server connects as `trunkline_app` over the Unix socket.
- `database_url` set → an external Postgres; it must be a DSN for the `trunkline_app` role (the store refuses
  a superuser, BYPASSRLS or owner role). `admin_database_url` (a superuser or a CREATEROLE role owning the
  database) runs the role setup and migrations at start; without it the schema must already be current.
  Create the app role's password yourself: `ALTER ROLE trunkline_app PASSWORD '...'`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from trunkline.logs import get_logger
from trunkline.store.callstore import PostgresCallStore, StoreOptions
from trunkline.store.embedded import EmbeddedPostgres
from trunkline.store.errors import StoreUnavailable
from trunkline.store.migrate import migrate

ENV_DATABASE_URL = "DATABASE_URL"
ENV_ADMIN_DATABASE_URL = "TRUNKLINE_DATABASE_ADMIN_URL"

log = get_logger("trunkline.store.runtime")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the call store keeps its data; see the module docstring."""

    database_url: str | None = field(default=None, repr=False)
    admin_database_url: str | None = field(default=None, repr=False)
    state_dir: Path = Path("var")
    spool_dir: Path | None = None
    options: StoreOptions = field(default_factory=StoreOptions)

    @property
    def embedded_data_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def effective_spool_dir(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, state_dir: Path = Path("var"), spool_dir: Path | None = None
    ) -> StoreSettings:
        """Read DATABASE_URL and TRUNKLINE_DATABASE_ADMIN_URL from the given environment mapping."""
        return cls(
            database_url=environ.get(ENV_DATABASE_URL) or None,
            admin_database_url=environ.get(ENV_ADMIN_DATABASE_URL) or None,
            state_dir=state_dir,
            spool_dir=spool_dir,
        )


@dataclass(frozen=True, slots=True)
class ResolvedDatabase:
    app_dsn: str = field(repr=False)
    admin_dsn: str | None = field(repr=False)
    embedded: EmbeddedPostgres | None


async def resolve_database(settings: StoreSettings) -> ResolvedDatabase:
    """The DSNs to use, starting the embedded server when no DATABASE_URL is given."""
    if settings.database_url:
        return ResolvedDatabase(settings.database_url, settings.admin_database_url, None)
    embedded = EmbeddedPostgres(settings.embedded_data_dir)
    dsns = await embedded.start()
    return ResolvedDatabase(dsns.app, dsns.admin, embedded)


async def run_migrations(admin_dsn: str, *, timeout_s: float = 10.0) -> tuple[int, ...]:
    """Connect as admin and migrate; StoreUnavailable if unreachable, MigrationError if inconsistent."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailable(type(exc).__name__) from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def open_call_store(settings: StoreSettings) -> PostgresCallStore:
    """Resolve the database, migrate, and start a PostgresCallStore (caller must `aclose()` it).

    An unreachable external database does not stop the server: the store spools until it is back. A
    migration inconsistency or an unsafe app role does (MigrationError / StoreConfigError).
    """
    db = await resolve_database(settings)
    try:
        if db.admin_dsn:
            try:
                await run_migrations(db.admin_dsn)
            except StoreUnavailable as exc:
                log.warning("store.migrations_deferred", error=str(exc))
        on_close = db.embedded.close if db.embedded is not None else None
        store = PostgresCallStore(
            db.app_dsn, settings.effective_spool_dir, options=settings.options, on_close=on_close
        )
        await store.start()
    except BaseException:
        if db.embedded is not None:
            db.embedded.close()
        raise
    return store
