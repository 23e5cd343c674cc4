"""PostgresCallStore: the CallStore the server uses (writer task + spool for writes, pool for reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from uuid import UUID

import asyncpg

from trunkline.logs import get_logger
from trunkline.store.backoff import Backoff
from trunkline.store.errors import StoreConfigError
from trunkline.store.postgres import PostgresCallReader, create_app_pool, write_records
from trunkline.store.records import (
    CallDetail,
    CallEnd,
    CallRecord,
    StoredCall,
    StoreRecord,
    TenantLike,
    ToolCallRecord,
    TurnRecord,
    UsageRecord,
)
from trunkline.store.spool import Spool
from trunkline.store.writer import StoreWriter, WriterStats

log = get_logger("trunkline.store")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Tuning of the write path; the defaults suit a server with a few hundred concurrent calls."""

    queue_capacity: int = 10_000
    batch_max_records: int = 200
    spool_segment_max_bytes: int = 4 << 20
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 10.0
    pool_max_size: int = 4
    command_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0


class PoolSink:
    """RecordSink over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def write(self, records: Sequence[StoreRecord]) -> None:
        await write_records(self._pool, records)


class PostgresCallStore:
    """Records go through a background writer (never awaited by callers); reads use the app-role pool.

    Use as `async with PostgresCallStore(dsn, spool_dir) as store:` or call `start()` / `aclose()`.
    """

    def __init__(
        self,
        app_dsn: str,
        spool_dir: Path,
        *,
        options: StoreOptions | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = app_dsn
        self._spool_dir = spool_dir
        self._options = options or StoreOptions()
        self._on_close = on_close
        self._pool: asyncpg.Pool | None = None
        self._reader: PostgresCallReader | None = None
        self._writer: StoreWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the pool and start the writer; raises StoreConfigError for an unsafe role or stale schema.

        An unreachable database is not an error: records are spooled until it comes back.
        """
        o = self._options
        self._pool = await create_app_pool(
            self._dsn,
            max_size=o.pool_max_size,
            command_timeout_s=o.command_timeout_s,
            connect_timeout_s=o.connect_timeout_s,
        )
        self._reader = PostgresCallReader(self._pool)
        spool = Spool(self._spool_dir, segment_max_bytes=o.spool_segment_max_bytes)
        backoff = Backoff(initial_s=o.reconnect_initial_s, max_s=o.reconnect_max_s)
        self._writer = StoreWriter(
            PoolSink(self._pool),
            spool,
            capacity=o.queue_capacity,
            batch_max=o.batch_max_records,
            backoff=backoff,
        )
        try:
            async with self._pool.acquire():  # runs the role/schema check on a first connection
                pass
        except StoreConfigError:
            await self._pool.close()
            raise
        except asyncpg.PostgresError as exc:
            if (exc.sqlstate or "")[:2] == "28" or exc.sqlstate == "3D000":  # bad role/password, no database
                await self._pool.close()
                raise StoreConfigError(f"database rejected the connection: {type(exc).__name__}") from exc
            log.warning("store.database_unavailable_at_start", error=type(exc).__name__)
        except Exception as exc:  # unreachable now: start spooling
            log.warning("store.database_unavailable_at_start", error=type(exc).__name__)
        try:
            await self._writer.open()
        except OSError:
            await self._pool.close()
            raise
        self._task = asyncio.create_task(self._writer.run(), name="trunkline.store.writer")

    def _submit(self, record: StoreRecord) -> None:
        if self._writer is None:
            raise RuntimeError("PostgresCallStore.start() was not called")
        self._writer.submit(record)

    def record_call_started(self, record: CallRecord) -> None:
        self._submit(record)

    def record_turn(self, record: TurnRecord) -> None:
        self._submit(record)

    def record_tool_call(self, record: ToolCallRecord) -> None:
        self._submit(record)

    def record_usage(self, record: UsageRecord) -> None:
        self._submit(record)

    def record_call_ended(self, record: CallEnd) -> None:
        self._submit(record)

    def _require_reader(self) -> PostgresCallReader:
        if self._reader is None:
            raise RuntimeError("PostgresCallStore.start() was not called")
        return self._reader

    async def list_calls(self, tenant_id: str, limit: int = 50) -> list[StoredCall]:
        return await self._require_reader().list_calls(tenant_id, limit)

    async def get_call(self, tenant_id: str, call_id: UUID) -> CallDetail | None:
        return await self._require_reader().get_call(tenant_id, call_id)

    async def sync_tenants(self, tenants: Iterable[TenantLike]) -> None:
        await self._require_reader().sync_tenants(tenants)

    def stats(self) -> WriterStats:
        if self._writer is None:
            raise RuntimeError("PostgresCallStore.start() was not called")
        return self._writer.stats()

    async def wait_until(self, predicate: Callable[[WriterStats], bool], timeout: float) -> WriterStats:
        if self._writer is None:
            raise RuntimeError("PostgresCallStore.start() was not called")
        return await self._writer.wait_until(predicate, timeout)

    async def wait_idle(self, timeout: float) -> WriterStats:
        """Wait until everything submitted is committed (spool replayed); TimeoutError otherwise."""
        return await self.wait_until(lambda s: s.idle, timeout)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Write or spool what is queued, stop the writer, close the pool (and the embedded server)."""
        try:
            if self._writer is not None and self._task is not None:
                self._writer.close()
                done, _ = await asyncio.wait({self._task}, timeout=timeout)
                if not done:
                    self._task.cancel()
                    log.error("store.close_timeout", queued=self._writer.stats().queued)
                    await asyncio.gather(self._task, return_exceptions=True)
                elif self._task.exception() is not None:
                    log.error("store.writer_crashed", error=type(self._task.exception()).__name__)
            if self._pool is not None:
                await self._pool.close()
        finally:
            self._task = None
            if self._on_close is not None:
                self._on_close()

    async def __aenter__(self) -> PostgresCallStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
