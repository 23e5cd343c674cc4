"""Receive statistics: RFC 3550 A.1 sequence validation across the 2^16 wrap, A.3 loss, A.8 jitter."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.pcap import read_pcap
from trunkline.mediaserver.rtp import parse_rtp
from trunkline.mediaserver.rtpstats import MAX_DROPOUT, MAX_MISORDER, ReceiveStats

RATE = 8000


def _feed(stats: ReceiveStats, unwrapped: list[int], frame: int = 160) -> list[bool]:
    """Feed unwrapped sequence numbers with timestamps/arrivals that imply zero jitter."""
    return [stats.update(u & 0xFFFF, (u * frame) & 0xFFFFFFFF, u * frame / RATE) for u in unwrapped]


def _ext(first_valid: int, unwrapped: int) -> int:
    """Expected extended sequence number: the base keeps its 16-bit value, cycles count from there."""
    return unwrapped - first_valid + (first_valid & 0xFFFF)


def test_probation_needs_two_sequential_packets() -> None:
    stats = ReceiveStats(RATE)
    assert stats.expected == 0 and stats.extended_highest_seq == 0
    assert _feed(stats, [1000]) == [False]
    assert stats.received == 0 and stats.expected == 0
    assert _feed(stats, [1001]) == [True]
    assert stats.base_seq == 1001
    assert (stats.received, stats.expected, stats.cumulative_lost) == (1, 1, 0)


def test_probation_restarts_on_a_gap() -> None:
    stats = ReceiveStats(RATE)
    assert _feed(stats, [10, 15, 16, 17]) == [False, False, True, True]
    assert stats.base_seq == 16
    assert stats.received == 2


def test_min_sequential_one_accepts_the_first_packet() -> None:
    stats = ReceiveStats(RATE, min_sequential=1)
    assert _feed(stats, [65535, 0]) == [True, True]
    assert stats.extended_highest_seq == 65536
    assert stats.cycles == 65536


@given(
    start=st.integers(0, 3 * 65536),
    steps=st.lists(st.integers(1, MAX_DROPOUT - 1), min_size=1, max_size=200),
)
def test_in_order_stream_with_gaps_across_wraps(start: int, steps: list[int]) -> None:
    unwrapped = [start, start + 1]
    for step in steps:
        unwrapped.append(unwrapped[-1] + step)
    stats = ReceiveStats(RATE)
    assert _feed(stats, unwrapped) == [False] + [True] * (len(unwrapped) - 1)
    first_valid = unwrapped[1]
    assert stats.extended_highest_seq == _ext(first_valid, unwrapped[-1])
    assert stats.expected == unwrapped[-1] - first_valid + 1
    assert stats.received == len(unwrapped) - 1
    assert stats.cumulative_lost == sum(step - 1 for step in steps)
    assert stats.duplicates == 0 and stats.bad_packets == 0
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


@st.composite
def reordered_with_duplicates(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    """(distinct unwrapped seqs in send order, arrival order, number of duplicates inserted)."""
    start = draw(st.integers(0, 3 * 65536))
    steps = draw(st.lists(st.integers(1, 4), min_size=2, max_size=300))
    sent = [start, start + 1]
    for step in steps:
        sent.append(sent[-1] + step)
    arrival = list(sent)
    for i in draw(st.lists(st.integers(2, len(arrival) - 2), max_size=40)):
        arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]  # local reordering, after probation
    dup_at = sorted(set(draw(st.lists(st.integers(2, len(arrival) - 1), max_size=20))), reverse=True)
    for i in dup_at:
        arrival.insert(i + 1 + draw(st.integers(0, 3)), arrival[i])
    return sent, arrival, len(dup_at)


@given(reordered_with_duplicates())
def test_reordering_and_duplicates_across_wraps(case: tuple[list[int], list[int], int]) -> None:
    sent, arrival, duplicates = case
    stats = ReceiveStats(RATE)
    _feed(stats, arrival)
    first_valid = sent[1]
    assert stats.duplicates == duplicates
    assert stats.received == len(sent) - 1
    assert stats.extended_highest_seq == _ext(first_valid, max(sent))
    assert stats.cumulative_lost == (max(sent) - first_valid + 1) - (len(sent) - 1)
    assert stats.bad_packets == 0 and stats.restarts == 0


def test_duplicate_of_the_highest_packet_is_counted_not_received() -> None:
    stats = ReceiveStats(RATE)
    assert _feed(stats, [5, 6, 7, 7, 6]) == [False, True, True, False, False]
    assert (stats.received, stats.duplicates) == (2, 2)


def test_packet_older_than_the_base_is_outside_the_count() -> None:
    stats = ReceiveStats(RATE)
    _feed(stats, [100, 101, 102, 100])
    assert stats.received == 2
    assert stats.bad_packets == 1
    assert stats.cumulative_lost == 0


def test_single_wild_jump_is_dropped_and_the_stream_continues() -> None:
    stats = ReceiveStats(RATE)
    _feed(stats, [1, 2, 3])
    assert _feed(stats, [3 + MAX_DROPOUT + 10]) == [False]
    assert _feed(stats, [4, 5]) == [True, True]
    assert stats.extended_highest_seq == 5
    assert (stats.bad_packets, stats.restarts) == (1, 0)


@given(st.integers(0, 65535), st.integers(MAX_DROPOUT, 65536 - MAX_MISORDER - 1))
def test_two_sequential_packets_after_a_jump_restart_the_count(start: int, jump: int) -> None:
    stats = ReceiveStats(RATE)
    _feed(stats, [start, start + 1, start + 2])
    new = start + 2 + jump
    assert _feed(stats, [new, new + 1]) == [False, True]
    assert stats.restarts == 1
    assert stats.base_seq == (new + 1) & 0xFFFF
    assert (stats.received, stats.expected, stats.cycles) == (1, 1, 0)


def test_loss_interval_fraction_and_cumulative() -> None:
    stats = ReceiveStats(RATE)
    sent = [0, *range(1, 101)]
    lost = set(range(2, 101, 4))  # 25 of the 100 packets after probation
    _feed(stats, [u for u in sent if u not in lost])
    first = stats.loss_interval()
    assert (first.expected, first.lost) == (100, 25)
    assert first.fraction_lost == (25 << 8) // 100
    assert first.cumulative_lost == 25
    assert first.extended_highest_seq == 100
    _feed(stats, list(range(101, 151)))
    second = stats.loss_interval()
    assert (second.expected, second.lost, second.fraction_lost) == (50, 0, 0)
    assert second.cumulative_lost == 25
    assert stats.loss_interval().expected == 0


def test_cumulative_lost_is_clamped_to_24_bits() -> None:
    stats = ReceiveStats(RATE)
    u = 0
    _feed(stats, [0, 1])
    for _ in range(3000):  # ~8.9 M packets lost, beyond the 24-bit signed field
        u += MAX_DROPOUT - 1
        _feed(stats, [u])
    assert stats.cumulative_lost > 0x7FFFFF
    assert stats.loss_interval().cumulative_lost == 0x7FFFFF


def _reference_jitter(timestamps: list[int], arrivals: list[float]) -> float:
    """RFC 3550 A.8 on unwrapped timestamps, written out literally."""
    jitter = 0.0
    transit_prev = None
    for ts, arrival in zip(timestamps, arrivals, strict=True):
        transit = arrival * RATE - ts
        if transit_prev is not None:
            jitter += (abs(transit - transit_prev) - jitter) / 16
        transit_prev = transit
    return jitter


@given(
    ts0=st.integers(0, 0xFFFFFFFF),
    delays=st.lists(st.floats(0, 0.2), min_size=3, max_size=200),
)
def test_jitter_matches_a8_across_the_timestamp_wrap(ts0: int, delays: list[float]) -> None:
    stats = ReceiveStats(RATE, min_sequential=1)
    timestamps = [ts0 + 160 * i for i in range(len(delays))]
    arrivals = [1000.0 + 0.02 * i + delay for i, delay in enumerate(delays)]
    for i, (ts, arrival) in enumerate(zip(timestamps, arrivals, strict=True)):
        assert stats.update(i, ts & 0xFFFFFFFF, arrival)
    expected = _reference_jitter(timestamps, arrivals)
    assert stats.jitter == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert stats.jitter_s == pytest.approx(expected / RATE, rel=1e-9, abs=1e-9)


def test_jitter_of_alternating_delay_converges_to_its_step() -> None:
    stats = ReceiveStats(RATE, min_sequential=1)
    for i in range(400):
        stats.update(i, 160 * i, 0.02 * i + (0.01 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(0.01 * RATE, rel=1e-6)  # |D| = 10 ms every packet


def test_recorded_g711a_stream_has_no_loss_and_no_duplicates() -> None:
    path = Path("/usr/share/sip-tester/g711a.pcap")
    if not path.exists():
        pytest.fail(f"{path} is missing: install the Debian package sip-tester (CI does)")
    stats = ReceiveStats(RATE)
    count = 0
    for time_s, payload in read_pcap(path):
        packet = parse_rtp(payload)
        stats.update(packet.sequence_number, packet.timestamp, time_s)
        count += 1
    assert stats.received == count - 1  # the first packet is on probation
    assert stats.cumulative_lost == 0 and stats.duplicates == 0
    assert 0 < stats.jitter_s < 0.01  # a real capture: some jitter, but far below a frame


def test_clock_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReceiveStats(0)


def _observable(stats: ReceiveStats) -> tuple[object, ...]:
    return (
        stats.received,
        stats.duplicates,
        stats.bad_packets,
        stats.restarts,
        stats.probation,
        stats.base_seq,
        stats.extended_highest_seq,
        stats.expected,
        stats.jitter,
        stats.loss_interval(),
    )


@given(
    ts0=st.integers(0, 0xFFFFFFFF) | st.integers(0xFFFFFFFF - 50_000, 0xFFFFFFFF),  # ...and across the wrap
    seq0=st.integers(0, 0xFFFF) | st.integers(0xFFFF - 300, 0xFFFF),
    moves=st.lists(
        st.tuples(
            st.sampled_from([1] * 12 + [0, -1, -3, 2, 5, 40_000]),  # sequence step (0: duplicate)
            st.integers(-30, 30),  # arrival jitter, ms
        ),
        max_size=300,
    ),
    chunk=st.integers(1, 64),
)
def test_update_all_equals_update_one_by_one(
    ts0: int, seq0: int, moves: list[tuple[int, int]], chunk: int
) -> None:
    """The session's deferred, batched fold gives exactly the per-packet result (wraps, gaps, duplicates,
    reordering, restarts, 32-bit timestamps)."""
    packets, seq = [], seq0
    for i, (step, jitter_ms) in enumerate(moves):
        seq += step
        packets.append((seq & 0xFFFF, (ts0 + 160 * (seq - seq0)) & 0xFFFFFFFF, 0.02 * i + jitter_ms / 1000))
    one, batched = ReceiveStats(RATE), ReceiveStats(RATE)
    for packet in packets:
        one.update(*packet)
    for k in range(0, len(packets), chunk):
        batched.update_all(packets[k : k + chunk])
    assert _observable(batched) == _observable(one)
