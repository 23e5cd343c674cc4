"""Drift-free periodic deadlines for the single outbound pacer that serves every leg.

Deadline n is `start + n * period_s`, never an accumulation of sleeps, so timer slop does not add up.
When the caller is late it runs at most `max_catch_up` ticks at once and counts the rest as skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TickerStats:
    """Counters of one ticker: ticks run, ticks skipped because the loop was too late, worst lateness."""

    ticks: int
    skipped_ticks: int
    late_ticks: int
    max_lateness_s: float


class Ticker:
    """Pure 20 ms (or any period) ticker; the adapter sleeps until `next_deadline()` and calls `advance(now)`.

    `early_tolerance_s` treats a deadline as due slightly before it: event-loop timers (libuv) have
    millisecond resolution and may fire a fraction of a millisecond early; re-arming would spin.
    """

    __slots__ = (
        "_early_tolerance_s",
        "_max_catch_up",
        "_n",
        "_period_s",
        "_start",
        "late_ticks",
        "max_lateness_s",
        "skipped_ticks",
        "ticks",
    )

    def __init__(
        self,
        start: float,
        period_s: float = 0.02,
        max_catch_up: int = 3,
        early_tolerance_s: float = 0.001,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"ticker period must be positive, not {period_s}")
        if max_catch_up < 1:
            raise ValueError(f"max_catch_up must be at least 1, not {max_catch_up}")
        if not 0 <= early_tolerance_s < period_s / 2:
            raise ValueError(f"early tolerance {early_tolerance_s} s must be in [0, period/2)")
        self._start = start
        self._period_s = period_s
        self._max_catch_up = max_catch_up
        self._early_tolerance_s = early_tolerance_s
        self._n = 0  # index of the next deadline not yet handled
        self.ticks = 0
        self.skipped_ticks = 0
        self.late_ticks = 0  # advance() calls that ran more than one tick (caught up)
        self.max_lateness_s = 0.0

    @property
    def period_s(self) -> float:
        """The tick period in seconds."""
        return self._period_s

    @property
    def tick_index(self) -> int:
        """How many deadlines have been handled (run or skipped) so far."""
        return self._n

    def next_deadline(self) -> float:
        """When the next tick is due (monotonic seconds)."""
        return self._start + self._n * self._period_s

    def advance(self, now: float) -> int:
        """How many ticks to run now (0..max_catch_up); deadlines beyond that are skipped and counted."""
        horizon = now + self._early_tolerance_s
        start, period = self._start, self._period_s
        if horizon < start + self._n * period:
            return 0
        last = math.floor((horizon - start) / period)  # index of the last due deadline, up to rounding
        while start + (last + 1) * period <= horizon:
            last += 1
        while start + last * period > horizon:
            last -= 1
        due = last + 1 - self._n
        lateness = now - (self._start + self._n * self._period_s)
        if lateness > self.max_lateness_s:
            self.max_lateness_s = lateness
        self._n += due
        if due > 1:
            self.late_ticks += 1
        if due > self._max_catch_up:
            self.skipped_ticks += due - self._max_catch_up
            due = self._max_catch_up
        self.ticks += due
        return due

    def stats(self) -> TickerStats:
        """A snapshot of the counters."""
        return TickerStats(self.ticks, self.skipped_ticks, self.late_ticks, self.max_lateness_s)
