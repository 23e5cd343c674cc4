"""The capacity benchmark's pure helpers: wire spacing summary, pass/fail verdict, headline and RSS slope."""

from __future__ import annotations

import numpy as np
from bench.capacity_analysis import headline, linear_slope, spacing_summary, verdict
from hypothesis import given
from hypothesis import strategies as st


def _streams(
    legs: int, packets: int, jitter_ms: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interleaved packets of `legs` streams, 20 ms apart, optionally displaced per packet index."""
    leg = np.repeat(np.arange(legs), packets)
    seq = np.tile(np.arange(packets), legs)
    arrival = seq * 0.02 + leg * 0.0001
    if jitter_ms is not None:
        arrival = arrival + np.tile(np.asarray(jitter_ms) / 1000.0, legs)
    order = np.argsort(arrival, kind="stable")  # as a receiver sees them: interleaved in time
    return leg[order], seq[order], arrival[order], np.zeros(leg.size, dtype=bool)


def test_even_streams_have_20ms_spacing_and_nothing_missing() -> None:
    s = spacing_summary(*_streams(5, 100))
    assert s["gaps"] == 5 * 99
    assert s["missing"] == 0
    assert abs(s["spacing_p50_ms"] - 20.0) < 1e-6
    assert s["deviation_p99_ms"] < 1e-6
    assert verdict({**s, "underflows": 0, "expected_pct": 100.0})[0]


def test_a_late_packet_makes_one_long_and_one_short_gap() -> None:
    jitter = [0.0] * 100
    jitter[50] = 9.0
    s = spacing_summary(*_streams(1, 100, jitter))
    assert abs(s["spacing_max_ms"] - 29.0) < 1e-6
    assert s["outside_tolerance_pct"] == round(100 * 2 / 99, 4)  # the 29 ms gap and the 11 ms one


def test_sequence_jumps_count_missing_packets_and_fail() -> None:
    leg, seq, arrival, silent = _streams(2, 50)
    keep = ~((leg == 1) & ((seq == 10) | (seq == 11)))
    s = spacing_summary(leg[keep], seq[keep], arrival[keep], silent[keep])
    assert s["missing"] == 2
    passed, reasons = verdict({**s, "underflows": 0, "expected_pct": 100.0})
    assert not passed
    assert any("missing" in r for r in reasons)


def test_sequence_wraps_at_16_bits_without_counting_a_loss() -> None:
    leg, seq, arrival, silent = _streams(1, 20)
    s = spacing_summary(leg, (seq + 65530) % 65536, arrival, silent)
    assert s["missing"] == 0


def test_silent_frames_are_counted() -> None:
    leg, seq, arrival, silent = _streams(1, 20)
    silent[[3, 4]] = True
    assert spacing_summary(leg, seq, arrival, silent)["silent_frames"] == 2


def test_verdict_fails_on_underflow_and_wide_spacing() -> None:
    ok = {"deviation_p99_ms": 1.0, "missing": 0, "underflows": 0, "expected_pct": 100.0}
    assert verdict(ok) == (True, [])
    assert not verdict({**ok, "underflows": 3})[0]
    assert not verdict({**ok, "deviation_p99_ms": 5.5})[0]
    assert not verdict({**ok, "expected_pct": 90.0})[0]
    assert not verdict({k: v for k, v in ok.items() if k != "deviation_p99_ms"})[0]


@given(
    st.floats(min_value=-1000, max_value=1000),
    st.floats(min_value=0, max_value=1e6),
    st.lists(st.integers(min_value=1, max_value=5000), min_size=2, max_size=20, unique=True),
)
def test_linear_slope_recovers_a_line(slope: float, intercept: float, xs: list[int]) -> None:
    ys = [intercept + slope * x for x in xs]
    got = linear_slope([float(x) for x in xs], ys)
    assert got is not None
    assert abs(got - slope) <= 1e-6 * (1 + abs(slope) + intercept / max(xs))


def test_linear_slope_needs_two_distinct_x() -> None:
    assert linear_slope([100.0, 100.0], [1.0, 2.0]) is None


def _step(legs: int, passed: bool, cpu: float, **extra: object) -> dict[str, object]:
    return {
        "legs": legs,
        "passed": passed,
        "engine_cpu_pct": cpu,
        "rss_kb": 50_000 + 30 * legs,
        "rss_idle_kb": 50_000 + 10 * legs,
        **extra,
    }


def test_headline_stops_at_the_confirmed_failure() -> None:
    steps = [
        _step(100, True, 10.0),
        _step(200, False, 20.0),  # failed once, passed on retry
        _step(200, True, 20.0, retry=True),
        _step(400, False, 50.0),
        _step(400, False, 50.0, retry=True, confirmed_fail=True),
        _step(800, True, 90.0),  # never reached in a real ladder: must not count
    ]
    h = headline(steps)
    assert h["max_legs_passing"] == 200
    assert h["legs_per_core"] == 1000  # 200 legs on 0.2 of a core
    assert abs(h["rss_kb_per_leg"] - 30.0) < 1e-6
    assert abs(h["rss_kb_per_idle_leg"] - 10.0) < 1e-6


def test_headline_with_nothing_passing() -> None:
    h = headline([_step(100, False, 30.0, confirmed_fail=True)])
    assert h["max_legs_passing"] == 0
    assert h["legs_per_core"] == 0  # measured and failed: a zero, not "not run"
    assert headline([])["legs_per_core"] is None
