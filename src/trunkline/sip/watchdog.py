"""Per-call waits on the asyncio side: the watchdog that ends a call whose BYE was lost (no RTP for too long,
not while on hold, or past the maximum duration; the rules are `calls.CallTimers`), and waiting for one event
unless another comes first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from trunkline.logs import get_logger
from trunkline.sip.call import Call

log = get_logger("trunkline.sip.service")


async def watch_call(
    call: Call, last_rtp_at: Callable[[], float | None], hang_up: Callable[[str], Awaitable[object]]
) -> None:
    """Until the call ends: feed its timers the leg's last RTP time; on expiry hang up with the reason."""
    assert call.timers is not None
    while not call.ended.is_set():
        now = time.monotonic()
        last = last_rtp_at()
        if last is not None:
            call.timers.rtp_seen(last)
        reason = call.timers.expired(now)
        if reason is not None:
            log.info("sip.call_timeout", call_id=call.call_id, reason=reason)
            await hang_up(reason)
            return
        await asyncio.sleep(min(1.0, max(0.05, call.timers.next_deadline() - now)))


async def wait_event(wanted: asyncio.Event, abort: asyncio.Event, timeout_s: float) -> bool:
    """True when `wanted` is set before `abort` or the timeout."""
    tasks = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(abort.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return wanted.is_set() and not abort.is_set()
