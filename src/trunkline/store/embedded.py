"""Embedded PostgreSQL 16 (the `pgserver` wheel) so that running the server needs no database setup.

The server listens on a Unix socket inside its data directory only (no TCP), with trust authentication:
anyone who can reach the socket file can connect, so the data directory must stay private to the host.
pgserver keeps one server per data directory shared by all processes that use it and stops it when the last
of them exits (cleanup_mode "stop"). Running as root, pgserver runs postgres as a system user `pgserver` and
makes the data directory's parents world-traversable.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from trunkline.logs import get_logger
from trunkline.store.migrate import APP_ROLE

DATABASE = "trunkline"
SUPERUSER = "postgres"

log = get_logger("trunkline.store.embedded")


@dataclass(frozen=True, slots=True)
class DatabaseDsns:
    """Where to connect: `admin` for migrations (superuser here), `app` for the server (RLS applies)."""

    admin: str = ""
    app: str = ""

    def __repr__(self) -> str:  # DSNs may carry passwords in other setups
        return "DatabaseDsns(...)"


class EmbeddedPostgres:
    """Starts (or joins) the pgserver instance of `data_dir` and creates the trunkline database."""

    def __init__(
        self, data_dir: Path, *, database: str = DATABASE, cleanup_mode: str | None = "stop"
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.database = database
        self.cleanup_mode = cleanup_mode
        self._server: Any = None

    @property
    def server(self) -> Any:
        """The pgserver handle (tests use it to stop and restart the server)."""
        if self._server is None:
            raise RuntimeError("embedded Postgres is not started")
        return self._server

    def start_server(self) -> None:
        """Blocking: initdb on first use, then start postgres or join the running one (~1-5 s)."""
        import pgserver  # heavy import (psutil, platformdirs): only when the embedded server is used

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=self.cleanup_mode)
        log.info("store.embedded_started", data_dir=str(self.data_dir))

    def dsn(self, user: str, database: str | None = None) -> str:
        """A Unix-socket DSN for `user` on `database` (default: the trunkline database)."""
        info = self.server.get_postmaster_info()
        host = quote(str(info.socket_dir), safe="/")
        return f"postgresql://{user}@/{database or self.database}?host={host}&port={info.port or 5432}"

    def dsns(self) -> DatabaseDsns:
        return DatabaseDsns(admin=self.dsn(SUPERUSER), app=self.dsn(APP_ROLE))

    async def ensure_database(self, name: str | None = None) -> None:
        """Create the database if it does not exist (safe if another process races us)."""
        name = name or self.database
        conn = await asyncpg.connect(self.dsn(SUPERUSER, "postgres"), timeout=10)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # created concurrently
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def start(self) -> DatabaseDsns:
        """Start the server off the event loop, create the database, return its DSNs."""
        await asyncio.to_thread(self.start_server)
        await self.ensure_database()
        return self.dsns()

    def close(self) -> None:
        """Drop this process's handle; pgserver stops the server if no other process uses it."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()
