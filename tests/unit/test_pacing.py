"""The pure ticker: deadlines are start + n * period (no drift), bounded catch-up, skipped ticks counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.pacing import Ticker


def test_deadlines_are_start_plus_n_periods() -> None:
    ticker = Ticker(start=100.0, period_s=0.02, early_tolerance_s=0.0)
    deadlines = []
    for _ in range(1000):
        deadline = ticker.next_deadline()
        deadlines.append(deadline)
        assert ticker.advance(deadline + 0.0005) == 1  # woke half a millisecond late every time
    assert deadlines[-1] == pytest.approx(100.0 + 999 * 0.02, abs=1e-9)
    assert ticker.stats().skipped_ticks == 0


def test_nothing_due_before_the_first_deadline() -> None:
    ticker = Ticker(start=5.0, period_s=0.02, early_tolerance_s=0.0)
    assert ticker.advance(4.99) == 0
    assert ticker.next_deadline() == 5.0
    assert ticker.advance(5.0) == 1
    assert ticker.advance(5.0) == 0
    assert ticker.next_deadline() == pytest.approx(5.02)


def test_early_wakeup_within_tolerance_counts_as_due() -> None:
    ticker = Ticker(start=0.0, period_s=0.02, early_tolerance_s=0.001)
    assert ticker.advance(0.0) == 1
    assert ticker.advance(0.0195) == 1  # libuv fired 0.5 ms early
    assert ticker.advance(0.0385) == 0  # 1.5 ms early is not due yet
    assert ticker.next_deadline() == pytest.approx(0.04)


def test_late_loop_catches_up_bounded_and_counts_skips() -> None:
    ticker = Ticker(start=0.0, period_s=0.02, max_catch_up=3, early_tolerance_s=0.0)
    assert ticker.advance(0.0) == 1
    assert ticker.advance(0.041) == 2  # deadlines 0.02 and 0.04
    assert ticker.stats().skipped_ticks == 0
    assert ticker.advance(0.2005) == 3  # deadlines 0.06 .. 0.20 are due: 8 ticks, 3 run
    stats = ticker.stats()
    assert stats.skipped_ticks == 5
    assert stats.ticks == 6
    assert stats.late_ticks == 2
    assert stats.max_lateness_s == pytest.approx(0.1405)
    assert ticker.next_deadline() == pytest.approx(0.22)  # still on the original grid


def test_invalid_parameters_rejected() -> None:
    with pytest.raises(ValueError):
        Ticker(0.0, period_s=0.0)
    with pytest.raises(ValueError):
        Ticker(0.0, max_catch_up=0)
    with pytest.raises(ValueError):
        Ticker(0.0, period_s=0.02, early_tolerance_s=0.015)


@given(
    start=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    delays=st.lists(st.floats(min_value=0.0, max_value=0.2), min_size=1, max_size=200),
    max_catch_up=st.integers(min_value=1, max_value=5),
)
def test_every_deadline_is_run_or_skipped_exactly_once(
    start: float, delays: list[float], max_catch_up: int
) -> None:
    """However late the loop wakes, ticks run + skipped == deadlines passed, and the grid never drifts."""
    ticker = Ticker(start, period_s=0.02, max_catch_up=max_catch_up, early_tolerance_s=0.0)
    now = start
    for delay in delays:
        now = max(now, ticker.next_deadline()) + delay
        ran = ticker.advance(now)
        assert 1 <= ran <= max_catch_up
        assert ticker.next_deadline() > now
    stats = ticker.stats()
    assert stats.ticks + stats.skipped_ticks == ticker.tick_index
    assert ticker.next_deadline() == start + ticker.tick_index * 0.02
