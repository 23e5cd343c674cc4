"""The pure summary helpers of bench/agent_concurrency.py: level rows, the sizing figure, the stop rule."""

from __future__ import annotations

from typing import Any

from bench.agent_concurrency import (
    LONG_QUIET_S,
    STOP_P95_MS,
    level_summary,
    log_problems,
    max_calls_within,
    reply_finished,
    should_stop,
    stage_spread,
    start_offsets,
)
from hypothesis import given
from hypothesis import strategies as st


def call(*latencies: float | None, error: str = "") -> dict[str, Any]:
    return {"error": error, "turns": [{"latency_ms": ms, "reply_frames": 80} for ms in latencies]}


def level(calls: int, p95_ms: float | None, unanswered: int = 0, failed: int = 0) -> dict[str, Any]:
    return {"calls": calls, "p95_ms": p95_ms, "unanswered": unanswered, "calls_failed": failed, "turns": 4}


def test_level_summary_counts_unanswered_turns_and_failed_calls() -> None:
    row = level_summary(3, [call(400.0, None, 500.0), call(300.0), call(error="no greeting audio")])
    assert row["calls"] == 3
    assert row["turns"] == 4
    assert row["unanswered"] == 1
    assert row["calls_failed"] == 1
    assert row["max_ms"] == 500.0
    assert row["p50_ms"] == 400.0
    assert row["samples_ms"] == [400.0, 500.0, 300.0]
    assert row["over_600ms"] == 0


def test_level_summary_counts_slow_turns_against_both_limits() -> None:
    row = level_summary(1, [call(550.0, 650.0, 1200.0, None)])
    assert (row["over_600ms"], row["over_1000ms"], row["unanswered"]) == (2, 1, 1)


def test_level_summary_without_any_answer_has_no_percentiles() -> None:
    row = level_summary(1, [call(None, None)])
    assert row["p50_ms"] is None and row["p95_ms"] is None and row["max_ms"] is None
    assert row["unanswered"] == 2


def test_sizing_figure_is_the_last_level_of_the_passing_run_from_one() -> None:
    levels = [level(1, 450.0), level(2, 580.0), level(4, 700.0), level(6, 590.0)]
    assert max_calls_within(levels, 600.0) == 2  # N=6 passing after N=4 failed is noise, not capacity
    assert max_calls_within(levels, 1000.0) == 6


def test_unanswered_turns_or_failed_calls_fail_a_level_whatever_its_p95() -> None:
    assert max_calls_within([level(1, 400.0), level(2, 400.0, unanswered=1)], 600.0) == 1
    assert max_calls_within([level(1, 400.0), level(2, 400.0, failed=1)], 600.0) == 1
    assert max_calls_within([level(1, 650.0)], 600.0) == 0
    assert max_calls_within([], 600.0) == 0


@given(st.lists(st.floats(100.0, 3000.0), min_size=1, max_size=6), st.floats(100.0, 3000.0))
def test_a_higher_limit_never_gives_fewer_calls(p95s: list[float], limit: float) -> None:
    levels = [level(2**i, p95) for i, p95 in enumerate(p95s)]
    assert max_calls_within(levels, limit) <= max_calls_within(levels, limit + 100.0)
    assert max_calls_within(levels, limit) in {0, *(lv["calls"] for lv in levels)}


def test_stop_rule() -> None:
    assert not should_stop(level(4, STOP_P95_MS))
    assert should_stop(level(4, STOP_P95_MS + 1.0))
    assert should_stop(level(4, 300.0, unanswered=1))
    assert should_stop(level(4, None))


@given(st.integers(1, 12), st.integers(0, 1000))
def test_start_offsets_are_seeded_and_inside_the_window(calls: int, seed: int) -> None:
    offsets = start_offsets(calls, seed, 2.0)
    assert offsets == start_offsets(calls, seed, 2.0)
    assert len(offsets) == calls and all(0.0 <= t <= 2.0 for t in offsets)


def test_reply_ends_after_a_short_quiet_only_once_most_of_it_was_heard() -> None:
    assert reply_finished(0.6, loud_frames=85, expected_frames=100)
    assert not reply_finished(0.6, loud_frames=30, expected_frames=100)  # a pause between clauses
    assert reply_finished(LONG_QUIET_S, loud_frames=30, expected_frames=100)
    assert not reply_finished(0.3, loud_frames=100, expected_frames=100)


def test_log_problems_counts_warning_and_error_events_only() -> None:
    lines = [
        "2026-11-26T01:00:00Z [info     ] agent.turn_heard               [trunkline] words=5",
        "2026-11-26T01:00:01Z [warning  ] agent.work_dropped             [trunkline] reason=busy",
        "2026-11-26T01:00:02Z [warning  ] agent.work_dropped             [trunkline] reason=busy",
        "2026-11-26T01:00:03Z [error    ] agent.reply_failed             [trunkline]",
    ]
    assert log_problems(lines) == {"agent.reply_failed": 1, "agent.work_dropped": 2}


def test_stage_spread_reads_each_turn_latency_line_on_its_own() -> None:
    lines = [
        f"... [info     ] agent.turn_latency   endpoint_ms={e} transcript_ms={t} call_id=x"
        for e, t in ((200, 300), (220, 900), (210, 310))
    ]
    spread = stage_spread([*lines, "... [info     ] agent.turn_heard  endpoint_ms=999"])
    assert spread["endpoint"][0] == 210.0
    assert spread["transcript"][0] == 310.0 and spread["transcript"][1] > 800.0
