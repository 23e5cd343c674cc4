"""RtcpReporter: report timing, SR vs RR, report blocks from real receive statistics, round trip from
LSR/DLSR between two reporters on a virtual clock, and hostile datagrams."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.rtcp import Bye, ReceiverReport, SenderReport, SourceDescription, parse_rtcp
from trunkline.mediaserver.rtcp_report import RtcpReporter, SentCounters
from trunkline.mediaserver.rtpstats import ReceiveStats

WALL0 = 1_790_000_000.0  # a wall-clock epoch; monotonic time starts at 0


def stats_after(n: int, lose: set[int] = frozenset(), start_s: float = 0.0) -> ReceiveStats:
    """Receive statistics for n 20 ms packets from seq 1000, without the `lose` indexes."""
    stats = ReceiveStats(8000)
    for i in range(n):
        if i not in lose:
            stats.update(1000 + i, 160 * i, start_s + 0.02 * i)
    return stats


def test_first_report_after_half_an_interval_then_randomised_around_five_seconds() -> None:
    reporter = RtcpReporter(1, "a@b", 8000, now=10.0, rng=random.Random(3))
    first = reporter.next_deadline()
    assert 10.0 + 1.25 <= first <= 10.0 + 3.75
    gaps = []
    now = first
    for _ in range(200):
        reporter.report(now, WALL0 + now, SentCounters(0, 0), None)
        gaps.append(reporter.next_deadline() - now)
        now = reporter.next_deadline()
    assert min(gaps) >= 2.5 and max(gaps) <= 7.5
    assert max(gaps) - min(gaps) > 2.0  # really randomised, not a fixed period
    assert reporter.reports_sent == 200


def test_a_sending_leg_reports_an_sr_with_its_counts_and_a_block_about_the_caller() -> None:
    reporter = RtcpReporter(0xAAAA, "leg-1@trunkline", 8000, now=0.0, rng=random.Random(1))
    received = stats_after(250, lose={10, 11, 12, 13, 14})  # 5 of 250 lost
    sent = SentCounters(packets=240, octets=240 * 160, last_rtp_timestamp=48_000, last_sent_s=4.98)
    packets = parse_rtcp(reporter.report(5.0, WALL0 + 5.0, sent, (0xBBBB, received)))
    sr, sdes = packets
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (0xAAAA, 240, 38_400)
    assert sr.rtp_timestamp == 48_000 + 160  # extrapolated to the report's time, 20 ms later
    assert sdes.cname(0xAAAA) == "leg-1@trunkline"
    (block,) = sr.reports
    assert block.ssrc == 0xBBBB and block.cumulative_lost == 5
    assert block.fraction_lost == 5 * 256 // 250
    assert block.lsr == 0 and block.dlsr == 0  # no SR from the caller yet


def test_a_leg_that_stopped_sending_reports_an_rr_and_bye_ends_the_compound() -> None:
    reporter = RtcpReporter(7, "x@y", 8000, now=0.0)
    sent = SentCounters(packets=10, octets=1600, last_rtp_timestamp=1600, last_sent_s=0.2)
    packets = parse_rtcp(reporter.bye(20.0, WALL0 + 20.0, sent, None, reason="call ended"))
    assert isinstance(packets[0], ReceiverReport) and packets[0].reports == ()
    assert isinstance(packets[-1], Bye) and packets[-1].ssrcs == (7,)
    assert packets[-1].reason == b"call ended"


def test_round_trip_from_lsr_and_dlsr_between_two_legs() -> None:
    """A sends an SR; B receives it 30 ms later and reports 400 ms after that; A receives B's report
    50 ms later: A's round trip is 80 ms (the time B held the SR is taken out)."""
    a = RtcpReporter(0xA, "a@x", 8000, now=0.0)
    b = RtcpReporter(0xB, "b@x", 8000, now=0.0)
    a_sent = SentCounters(100, 16_000, 16_000, 1.99)
    sr = a.report(2.0, WALL0 + 2.0, a_sent, None)
    assert b.on_rtcp(sr, now=2.03, wall_s=WALL0 + 2.03, remote_ssrc=0xA)
    rr = b.report(2.43, WALL0 + 2.43, SentCounters(0, 0), (0xA, stats_after(100)))
    assert a.on_rtcp(rr, now=2.48, wall_s=WALL0 + 2.48)
    assert a.far_end is not None and a.far_end.round_trip_ms is not None
    assert abs(a.far_end.round_trip_ms - 80.0) < 0.2
    assert a.far_end.cumulative_lost == 0 and a.far_end.fraction_lost == 0.0
    assert a.max_round_trip_ms == a.far_end.round_trip_ms


def test_an_sr_from_another_source_does_not_set_lsr() -> None:
    a = RtcpReporter(0xA, "a@x", 8000, now=0.0)
    b = RtcpReporter(0xB, "b@x", 8000, now=0.0)
    sr = a.report(2.0, WALL0 + 2.0, SentCounters(1, 160, 0, 1.99), None)
    b.on_rtcp(sr, now=2.03, wall_s=WALL0 + 2.03, remote_ssrc=0xC)
    rr = parse_rtcp(b.report(3.0, WALL0 + 3.0, SentCounters(0, 0), (0xA, stats_after(10))))
    assert isinstance(rr[0], ReceiverReport) and rr[0].reports[0].lsr == 0


def test_loss_reported_by_the_far_end_is_seen_as_a_fraction() -> None:
    a = RtcpReporter(0xA, "a@x", 8000, now=0.0)
    b = RtcpReporter(0xB, "b@x", 8000, now=0.0)
    lost = set(range(3, 96, 4))  # every 4th packet between the validated start and the last one: 24 %
    rr = b.report(3.0, WALL0 + 3.0, SentCounters(0, 0), (0xA, stats_after(100, lose=lost)))
    a.on_rtcp(rr, now=3.01, wall_s=WALL0 + 3.01)
    assert a.far_end is not None
    assert a.far_end.cumulative_lost == len(lost) == 24
    assert abs(a.far_end.fraction_lost - 0.24) < 0.01
    assert a.far_end.round_trip_ms is None  # B never saw an SR from A


@given(st.binary(max_size=300))
def test_hostile_datagrams_are_counted_never_raised(data: bytes) -> None:
    reporter = RtcpReporter(1, "a@b", 8000, now=0.0)
    ok = reporter.on_rtcp(data, now=1.0, wall_s=WALL0 + 1.0)
    assert ok or reporter.bad_received == 1
