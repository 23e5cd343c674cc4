"""Background writer: drains a bounded in-memory queue into Postgres, or into the spool while it is down.

`submit()` is synchronous and never waits, so the media path never blocks on the database. One task owns
the queue, the sink and the spool, which keeps records in submission order:
- ONLINE: batches go to the sink. A batch the database refuses is retried record by record and only the
  refused records go to rejected.jsonl. When the database is unreachable the batch goes to the spool and
  the writer turns SPOOLING.
- SPOOLING: batches go to the spool (fsync per append). When the backoff says so, the writer replays the
  oldest spool segment; the segment is removed only after all its records are committed. Once no segment
  is left, the writer turns ONLINE again. New records keep going to the spool until then, so nothing
  overtakes older spooled records (a turn never arrives before its call).
Spool file I/O runs in a worker thread so that fsync does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trunkline.logs import get_logger
from trunkline.store.backoff import Backoff
from trunkline.store.errors import RecordRejected, StoreUnavailable
from trunkline.store.records import StoreRecord
from trunkline.store.spool import Spool, encode_lines

log = get_logger("trunkline.store.writer")


class WriterMode(enum.StrEnum):
    ONLINE = "online"
    SPOOLING = "spooling"


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of the writer's counters (records, not batches)."""

    mode: WriterMode
    running: bool
    queued: int
    in_flight: int
    spool_segments: int
    submitted: int
    written: int
    spooled: int
    replayed: int
    rejected: int
    dropped: int
    lost: int

    @property
    def idle(self) -> bool:
        """Everything submitted so far is committed to Postgres (or rejected)."""
        return (
            self.mode is WriterMode.ONLINE
            and self.queued == 0
            and self.in_flight == 0
            and self.spool_segments == 0
        )


class RecordSink(Protocol):
    """Where records go when the database is up; raises RecordRejected or StoreUnavailable."""

    async def write(self, records: Sequence[StoreRecord]) -> None: ...


class _Close:
    """Queue sentinel: finish what is queued, then stop."""


_CLOSE = _Close()


class StoreWriter:
    """Owns the record queue, the spool and the replay loop; run `run()` as one task."""

    def __init__(
        self,
        sink: RecordSink,
        spool: Spool,
        *,
        capacity: int = 10_000,
        batch_max: int = 200,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._queue: asyncio.Queue[StoreRecord | _Close] = asyncio.Queue(maxsize=capacity)
        self._batch_max = batch_max
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._mode = WriterMode.ONLINE
        self._opened = False
        self._running = False
        self._closing = False
        self._sentinel_queued = False
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._counts = dict.fromkeys(
            ("submitted", "written", "spooled", "replayed", "rejected", "dropped", "lost"), 0
        )

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    def submit(self, record: StoreRecord) -> bool:
        """Queue a record without waiting; False (counted as dropped) if the queue is full or closed."""
        if self._closing:
            self._counts["dropped"] += 1
            return False
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._counts["dropped"] += 1
            if self._counts["dropped"] % 1000 == 1:
                log.error("store.queue_full", dropped=self._counts["dropped"])
            return False
        self._counts["submitted"] += 1
        return True

    def stats(self) -> WriterStats:
        c = self._counts
        queued = self._queue.qsize() - (1 if self._sentinel_queued else 0)
        return WriterStats(
            self._mode, self._running, max(0, queued), self._in_flight, self._spool.segment_count,
            c["submitted"], c["written"], c["spooled"], c["replayed"], c["rejected"], c["dropped"], c["lost"],
        )  # fmt: skip

    async def wait_until(self, predicate: Callable[[WriterStats], bool], timeout: float) -> WriterStats:
        """Wait (event-driven) until `predicate(stats)` holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                stats = self.stats()
                if predicate(stats):
                    return stats
                await self._changed.wait()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Ask `run()` to write or spool everything queued, then return; later submits are dropped."""
        if self._closing:
            return
        self._closing = True
        try:
            self._queue.put_nowait(_CLOSE)
            self._sentinel_queued = True
        except asyncio.QueueFull:
            pass  # run() notices `_closing` once it has drained the queue

    async def open(self) -> None:
        """Open the spool (raises OSError if unusable); a spool left with records means replay first."""
        if self._opened:
            return
        await asyncio.to_thread(self._spool.open)
        self._opened = True
        if not self._spool.is_empty():
            self._mode = WriterMode.SPOOLING
            log.info("store.spool_found", segments=self._spool.segment_count)

    async def run(self) -> None:
        """The writer task body; returns after `close()` once the queue is drained."""
        await self.open()
        self._running = True
        self._pulse()
        try:
            while True:
                batch, closing = await self._next_batch()
                await self._guarded(self._handle(batch), batch)
                if closing:
                    break
                if self._mode is WriterMode.SPOOLING and self._backoff.is_due(self._clock()):
                    await self._guarded(self._replay_step(), [])
                self._pulse()
        finally:
            self._running = False
            await asyncio.to_thread(self._spool.close)
            self._pulse()

    async def _guarded(self, step: Awaitable[None], batch: list[StoreRecord]) -> None:
        """Run a step; an unexpected error (a bug, an unreadable spool) must not stop the writer."""
        try:
            await step
        except Exception as exc:
            log.error("store.writer_error", error=type(exc).__name__)  # no traceback: it may hold PII
            self._go_offline(exc)
            if batch:
                await self._spool_append(batch)  # idempotent if part of it was written

    async def _next_batch(self) -> tuple[list[StoreRecord], bool]:
        if self._closing and self._queue.empty():
            return [], True
        if self._mode is WriterMode.SPOOLING:
            wait_s = self._backoff.next_deadline() - self._clock()
            if wait_s <= 0 and self._queue.empty():
                return [], False
            try:
                async with asyncio.timeout(max(0.0, wait_s)):
                    first = await self._queue.get()
            except TimeoutError:
                return [], False
        else:
            first = await self._queue.get()
        items = [first]
        while len(items) < self._batch_max and not self._queue.empty():
            items.append(self._queue.get_nowait())
        if any(item is _CLOSE for item in items):
            self._sentinel_queued = False
        closing = self._closing and self._queue.empty()
        batch = [item for item in items if not isinstance(item, _Close)]
        self._in_flight = len(batch)
        return batch, closing

    async def _handle(self, batch: list[StoreRecord]) -> None:
        if not batch:
            return
        try:
            if self._mode is WriterMode.ONLINE:
                batch = await self._write_online(batch)
            if batch:
                await self._spool_append(batch)
        finally:
            self._in_flight = 0

    async def _write_online(self, batch: list[StoreRecord]) -> list[StoreRecord]:
        """Write a batch; returns the records that still need spooling (the database went away)."""
        try:
            await self._sink.write(batch)
        except RecordRejected:
            return await self._write_each(batch)
        except StoreUnavailable as exc:
            self._go_offline(exc)
            return batch
        self._counts["written"] += len(batch)
        return []

    async def _write_each(
        self, records: Sequence[StoreRecord], counter: str = "written"
    ) -> list[StoreRecord]:
        """Write records one at a time to isolate the refused ones; returns the unwritten tail if offline."""
        for i, record in enumerate(records):
            try:
                await self._sink.write([record])
            except RecordRejected as exc:
                await self._reject([record], str(exc))
            except StoreUnavailable as exc:
                self._go_offline(exc)
                return list(records[i:])
            else:
                self._counts[counter] += 1
        return []

    def _go_offline(self, exc: Exception) -> None:
        if self._mode is WriterMode.ONLINE:
            log.warning("store.database_unavailable", error=str(exc))
        self._mode = WriterMode.SPOOLING
        self._backoff.failed(self._clock())

    async def _spool_append(self, records: list[StoreRecord]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, records)
        except Exception as exc:  # disk full, unwritable dir: nowhere left to keep them
            self._counts["lost"] += len(records)
            log.error("store.spool_write_failed", error=type(exc).__name__, records=len(records))
        else:
            self._counts["spooled"] += len(records)

    async def _reject(self, records: Sequence[StoreRecord], reason: str) -> None:
        await self._reject_lines(encode_lines(records).splitlines(), reason)

    async def _reject_lines(self, lines: Sequence[bytes], reason: str) -> None:
        try:
            await asyncio.to_thread(self._spool.reject, lines)
        except OSError as exc:
            self._counts["lost"] += len(lines)
            log.error("store.reject_write_failed", error=type(exc).__name__)
            return
        self._counts["rejected"] += len(lines)
        log.error("store.record_rejected", reason=reason, records=len(lines))

    async def _replay_step(self) -> None:
        """Replay the oldest spool segment (the one being appended to is sealed when removed); go ONLINE when
        none is left."""
        segments = self._spool.segments()
        if not segments:
            self._mode = WriterMode.ONLINE
            self._backoff.succeeded()
            log.info("store.database_recovered")
            return
        path = segments[0]
        contents = await asyncio.to_thread(self._spool.read, path)
        if contents.bad_lines:
            await self._reject_lines(contents.bad_lines, "undecodable spool line")
        if contents.torn_tail:
            log.warning("store.spool_torn_tail", bytes=len(contents.torn_tail))
        records = contents.records
        for start in range(0, len(records), self._batch_max):
            chunk = records[start : start + self._batch_max]
            try:
                await self._sink.write(chunk)
            except RecordRejected:
                if await self._write_each(chunk, counter="replayed"):
                    return  # offline again: the segment stays and is replayed later (idempotently)
            except StoreUnavailable as exc:
                self._go_offline(exc)
                return
            else:
                self._counts["replayed"] += len(chunk)
        await asyncio.to_thread(self._spool.remove, path)
        self._backoff.succeeded()
