"""The bounded worker pool the models run on: refuses beyond capacity, frees slots however jobs end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trunkline.pipeline.models import BoundedPool, BusyError


@pytest.fixture
def pool() -> BoundedPool:
    return BoundedPool("test", max_workers=1, max_queued=1)


async def test_full_pool_refuses_then_recovers(pool: BoundedPool) -> None:
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    queued = asyncio.wrap_future(pool.submit(sum, [1, 2, 3]))
    with pytest.raises(BusyError) as info:
        await pool.run(sum, [4])
    assert (info.value.pool, info.value.capacity, pool.rejected, pool.in_flight) == ("test", 2, 1, 2)
    release.set()
    async with asyncio.timeout(10):
        assert await queued == 6
        assert await asyncio.wrap_future(running) is True
        assert await pool.run(sum, [4]) == 4
    assert await asyncio.to_thread(pool.wait_idle, 10)
    assert pool.in_flight == 0
    pool.shutdown()


async def test_cancelled_queued_job_frees_its_slot(pool: BoundedPool) -> None:
    release = threading.Event()
    ran: list[int] = []
    running = pool.submit(release.wait, 10)
    assert pool.submit(ran.append, 1).cancel()
    other = pool.submit(ran.append, 2)  # the cancelled job's slot is free again
    release.set()
    async with asyncio.timeout(10):
        await asyncio.wrap_future(other)
        await asyncio.wrap_future(running)
    assert ran == [2]
    pool.shutdown()


async def test_cancelling_the_await_keeps_a_started_job_counted(pool: BoundedPool) -> None:
    started, release = threading.Event(), threading.Event()

    def job() -> bool:
        started.set()
        return release.wait(10)

    waiter = asyncio.ensure_future(pool.run(job))
    assert await asyncio.to_thread(started.wait, 10)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.in_flight == 1  # the model call cannot be interrupted; its slot stays taken until it ends
    release.set()
    assert await asyncio.to_thread(pool.wait_idle, 10)
    pool.shutdown()


async def test_failing_job_raises_and_frees_its_slot(pool: BoundedPool) -> None:
    with pytest.raises(ZeroDivisionError):
        await pool.run(divmod, 1, 0)
    assert await asyncio.to_thread(pool.wait_idle, 10)
    assert pool.in_flight == 0
    pool.shutdown()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        BoundedPool("x", max_workers=0, max_queued=1)
