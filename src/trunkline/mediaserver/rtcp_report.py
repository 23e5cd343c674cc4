"""Per-leg RTCP (RFC 3550 §6): when to report, what to say, and what the far end says about our stream.

Pure: the leg passes in monotonic `now`, the wall clock `wall_s` (for NTP timestamps), its send counters and
its receive statistics; the adapter sends the bytes to the remote RTCP address. A two-party call's report
interval is 5 s, randomised over [0.5, 1.5] of it so that legs started together do not report together; the
first report goes out after half an interval. A compound packet is an SR (if we sent RTP within the last two
intervals) or an RR, then our CNAME, then (at the end of the call) a BYE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trunkline.mediaserver.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SenderReport,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    report_block,
    round_trip_s,
    sdes_cname,
    serialize_rtcp,
)
from trunkline.mediaserver.rtpstats import ReceiveStats

REPORT_INTERVAL_S = 5.0  # RFC 3550 §6.2 minimum for a session of two


@dataclass(frozen=True, slots=True)
class SentCounters:
    """What the leg has sent so far: RTP packets, payload octets, and its last packet's timestamp and time."""

    packets: int
    octets: int
    last_rtp_timestamp: int | None = None
    last_sent_s: float | None = None  # monotonic


@dataclass(frozen=True, slots=True)
class FarEndView:
    """The far end's latest report on our stream: loss over its last interval and in all, jitter, and the
    round trip computed from its LSR/DLSR (None until it has seen one of our SRs)."""

    fraction_lost: float  # 0..1
    cumulative_lost: int
    jitter_ms: float
    round_trip_ms: float | None
    at_s: float


@dataclass(frozen=True, slots=True)
class RtcpView:
    """A snapshot of a leg's RTCP: reports sent, the far end's latest report on our stream and the worst
    round trip seen, datagrams on the RTCP port that were not RTCP."""

    reports_sent: int
    far_end_reports: int
    far_end: FarEndView | None
    max_round_trip_ms: float | None
    bad_received: int

    @classmethod
    def of(cls, reporter: RtcpReporter) -> RtcpView:
        return cls(
            reporter.reports_sent,
            reporter.far_end_reports,
            reporter.far_end,
            reporter.max_round_trip_ms,
            reporter.bad_received,
        )


class RtcpReporter:
    """RTCP for one leg: `next_deadline()`, then `report(...)` when it is due; `on_rtcp(...)` for each
    datagram on the RTCP port; `bye(...)` when the call ends."""

    __slots__ = (
        "_clock_rate_hz",
        "_cname",
        "_deadline",
        "_interval_s",
        "_last_sr_arrival_s",
        "_last_sr_middle",
        "_rng",
        "bad_received",
        "far_end",
        "far_end_reports",
        "max_round_trip_ms",
        "reports_sent",
        "ssrc",
    )

    def __init__(
        self,
        ssrc: int,
        cname: str,
        clock_rate_hz: int,
        now: float,
        *,
        interval_s: float = REPORT_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        if interval_s <= 0 or clock_rate_hz <= 0:
            raise ValueError("interval and clock rate must be positive")
        self.ssrc = ssrc
        self._cname = cname
        self._clock_rate_hz = clock_rate_hz
        self._interval_s = interval_s
        self._rng = rng or random.Random()
        self._deadline = now + self._jittered() / 2
        self._last_sr_middle = 0  # ntp_middle32 of the far end's last SR
        self._last_sr_arrival_s: float | None = None
        self.reports_sent = 0
        self.bad_received = 0  # datagrams on the RTCP port that did not parse
        self.far_end_reports = 0
        self.far_end: FarEndView | None = None
        self.max_round_trip_ms: float | None = None

    def _jittered(self) -> float:
        return self._interval_s * self._rng.uniform(0.5, 1.5)

    def next_deadline(self) -> float:
        return self._deadline

    def report(
        self, now: float, wall_s: float, sent: SentCounters, received: tuple[int, ReceiveStats] | None
    ) -> bytes:
        """The compound report due now (call at or after `next_deadline()`); schedules the next one."""
        self._deadline = now + self._jittered()
        self.reports_sent += 1
        return serialize_rtcp(self._packets(now, wall_s, sent, received))

    def bye(
        self,
        now: float,
        wall_s: float,
        sent: SentCounters,
        received: tuple[int, ReceiveStats] | None,
        reason: str = "",
    ) -> bytes:
        """The last compound report, ending with a BYE for our SSRC."""
        self.reports_sent += 1
        packets = [*self._packets(now, wall_s, sent, received), Bye((self.ssrc,), reason.encode()[:255])]
        return serialize_rtcp(packets)

    def _packets(
        self, now: float, wall_s: float, sent: SentCounters, received: tuple[int, ReceiveStats] | None
    ) -> list[RtcpPacket]:
        blocks: tuple[ReportBlock, ...] = ()
        if received is not None and received[1].received:
            ssrc, stats = received
            blocks = (report_block(stats, ssrc, now, self._last_sr_middle, self._last_sr_arrival_s),)
        first: RtcpPacket
        if sent.last_sent_s is not None and now - sent.last_sent_s < 2 * self._interval_s:
            elapsed = max(0.0, now - sent.last_sent_s)
            rtp_ts = ((sent.last_rtp_timestamp or 0) + round(elapsed * self._clock_rate_hz)) & 0xFFFFFFFF
            first = SenderReport(
                self.ssrc,
                ntp_from_unix(wall_s),
                rtp_ts,
                sent.packets & 0xFFFFFFFF,
                sent.octets & 0xFFFFFFFF,
                blocks,
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        return [first, sdes_cname(self.ssrc, self._cname)]

    def on_rtcp(self, datagram: bytes, now: float, wall_s: float, remote_ssrc: int | None = None) -> bool:
        """Take in one datagram from the RTCP port; False (counted) if it is not RTCP. An SR from the far end
        is remembered for our next report's LSR/DLSR; a report block about our SSRC updates `far_end`.
        With `remote_ssrc` given, SRs from any other source are ignored."""
        try:
            packets = parse_rtcp(datagram)
        except RtcpParseError:
            self.bad_received += 1
            return False
        for packet in packets:
            if not isinstance(packet, SenderReport | ReceiverReport):
                continue
            if isinstance(packet, SenderReport) and remote_ssrc in (None, packet.ssrc):
                self._last_sr_middle = ntp_middle32(packet.ntp_timestamp)
                self._last_sr_arrival_s = now
            for block in packet.reports:
                if block.ssrc == self.ssrc:
                    self._take(block, now, wall_s)
        return True

    def _take(self, block: ReportBlock, now: float, wall_s: float) -> None:
        rtt_s = round_trip_s(ntp_from_unix(wall_s), block)
        rtt_ms = None if rtt_s is None or rtt_s > 60 else round(rtt_s * 1000, 1)  # > 60 s: clock nonsense
        self.far_end_reports += 1
        self.far_end = FarEndView(
            fraction_lost=block.fraction_lost / 256,
            cumulative_lost=block.cumulative_lost,
            jitter_ms=round(block.jitter * 1000 / self._clock_rate_hz, 2),
            round_trip_ms=rtt_ms,
            at_s=now,
        )
        if rtt_ms is not None and (self.max_round_trip_ms is None or rtt_ms > self.max_round_trip_ms):
            self.max_round_trip_ms = rtt_ms
