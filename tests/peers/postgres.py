"""A real PostgreSQL 16 for tests: pgserver in a private temp dir, with stop and restart for outage tests.

Start one per test module or session (initdb + start takes a few seconds on a busy box); give each test
module its own database with `new_database()`, which also runs the migrations. `shared_postgres()` is the
one server per test process for tests that never stop it; outage tests start their own with
`running_postgres()`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from trunkline.store.embedded import SUPERUSER, DatabaseDsns, EmbeddedPostgres
from trunkline.store.migrate import APP_ROLE, migrate


class PgPeer:
    """One pgserver-managed PostgreSQL; the data dir is deleted on `close()`."""

    def __init__(self, base_dir: Path) -> None:
        # cleanup_mode None: close() stops and deletes it itself (pgserver's cleanup would try a second stop)
        self.embedded = EmbeddedPostgres(base_dir / "pg", cleanup_mode=None)

    @property
    def _server(self) -> Any:
        return self.embedded.server

    def start(self) -> None:
        self.embedded.start_server()

    def stop(self, mode: str = "immediate") -> None:
        """Stop postgres (blocking). `immediate` is a crash as far as clients can tell."""
        from pgserver import _commands  # pg_ctl is generated at import time, invisible to type checkers

        pg_ctl: Any = _commands.pg_ctl  # type: ignore[attr-defined]
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.embedded.data_dir, user=self._server.system_user)

    def restart(self) -> None:
        """Start postgres again on the same data dir and socket (blocking, waits until it accepts)."""
        self._server.ensure_postgres_running()

    def is_running(self) -> bool:
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.embedded.data_dir)
        return info is not None and info.is_running()

    def dsn(self, user: str, database: str) -> str:
        return self.embedded.dsn(user, database)

    async def new_database(self, name: str) -> DatabaseDsns:
        """Create database `name`, migrate it, and return its admin (superuser) and app-role DSNs."""
        await self.embedded.ensure_database(name)
        admin = self.dsn(SUPERUSER, name)
        conn = await asyncpg.connect(admin)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return DatabaseDsns(admin=admin, app=self.dsn(APP_ROLE, name))

    def close(self) -> None:
        """Stop (immediately: the data is deleted anyway) and delete the data dir."""
        if self.embedded._server is not None and self.is_running():
            self.stop("immediate")
        self.embedded.close()
        shutil.rmtree(self.embedded.data_dir, ignore_errors=True)


def _private_base() -> Path:
    # Not under pytest's tmp dirs: pytest keeps them root-only (0700), and the server runs as user `pgserver`
    # when the tests run as root.
    return Path(tempfile.mkdtemp(prefix="trunkline-pg-"))


@contextmanager
def running_postgres() -> Iterator[PgPeer]:
    """A started PgPeer of its own for the duration of the block (fixture helper)."""
    base = _private_base()
    peer = PgPeer(base)
    try:
        peer.start()
        yield peer
    finally:
        peer.close()
        shutil.rmtree(base, ignore_errors=True)


_shared: PgPeer | None = None


def shared_postgres() -> PgPeer:
    """The process-wide server for tests that do not stop it (started on first use, removed at exit)."""
    global _shared
    if _shared is None:
        base = _private_base()
        peer = PgPeer(base)
        peer.start()

        def cleanup() -> None:
            peer.close()
            shutil.rmtree(base, ignore_errors=True)

        atexit.register(cleanup)
        _shared = peer
    return _shared
