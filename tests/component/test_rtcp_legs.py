"""RTCP on a real leg: a far end on 127.0.0.1 with its own RTP and RTCP sockets sends RTP (with a few packets
left out) and RTCP; the engine's leg reports to it (SR with its counts, a report block about the far end's
stream), works out the round trip from the far end's report, and says BYE when it closes.

Waits are on engine ticks and socket reads with timeouts; the report interval is shortened to 0.5 s.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from trunkline.mediaserver.engine import MediaEngine
from trunkline.mediaserver.leg import Leg
from trunkline.mediaserver.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    sdes_cname,
    serialize_rtcp,
)
from trunkline.mediaserver.rtp import parse_rtp

FAR_SSRC = 0x5EED1234
SKIPPED = {30, 31, 77}  # sequence offsets the far end never sends


class FarEnd:
    """RTP on port P, RTCP on P + 1, both on 127.0.0.1."""

    def __init__(self) -> None:
        for _ in range(50):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", rtp.getsockname()[1] + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            self.rtp, self.rtcp = rtp, rtcp
            break
        else:
            raise RuntimeError("no adjacent UDP port pair on 127.0.0.1")
        for sock in (self.rtp, self.rtcp):
            sock.setblocking(False)
        self.rtp_address = self.rtp.getsockname()
        self.rtp_heard: list[tuple[int, int]] = []  # (ssrc, seq) of the leg's packets

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()

    def drain_rtp(self) -> None:
        while True:
            try:
                packet = parse_rtp(self.rtp.recv(2048))
            except BlockingIOError:
                return
            self.rtp_heard.append((packet.ssrc, packet.sequence_number))

    def rtcp_datagrams(self) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        while True:
            try:
                out.append(self.rtcp.recvfrom(2048))
            except BlockingIOError:
                return out


@pytest.fixture
def far() -> Iterator[FarEnd]:
    end = FarEnd()
    yield end
    end.close()


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine("127.0.0.1", 44000, 44999, max_catch_up=50, rtcp_interval_s=0.5)
    await eng.start()
    yield eng
    await eng.aclose()


async def send_rtp(far: FarEnd, leg: Leg, count: int, engine: MediaEngine) -> None:
    """`count` 20 ms PCMU packets from FAR_SSRC, one per engine tick, minus the SKIPPED ones."""
    for i in range(count):
        if i not in SKIPPED:
            header = struct.pack("!BBHII", 0x80, 0, 1000 + i, 160 * i, FAR_SSRC)
            far.rtp.sendto(header + b"\xff" * 160, ("127.0.0.1", leg.local_port))
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
        far.drain_rtp()


async def next_report(
    far: FarEnd, engine: MediaEngine, ticks: int = 250
) -> tuple[list[object], tuple[str, int]]:
    for _ in range(ticks):
        got = far.rtcp_datagrams()
        if got:
            data, source = got[-1]
            return list(parse_rtcp(data)), source
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
        far.drain_rtp()
    raise AssertionError("no RTCP from the leg in time")


async def test_leg_reports_what_it_sent_and_received_and_says_bye(engine: MediaEngine, far: FarEnd) -> None:
    leg = engine.open_leg("PCMU", 8000, 0, far.rtp_address)
    await send_rtp(far, leg, 100, engine)
    far.rtcp_datagrams()  # reports sent while the far end was still starting don't count
    packets, source = await next_report(far, engine)
    assert source == ("127.0.0.1", leg.local_port + 1)  # from our RTCP port, to RTP port + 1
    sr, sdes = packets[0], packets[1]
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    our_ssrc = {ssrc for ssrc, _ in far.rtp_heard}
    assert our_ssrc == {sr.ssrc}  # the SR speaks for the stream the far end hears
    far.drain_rtp()
    assert abs(sr.packet_count - len(far.rtp_heard)) <= 60  # reports go out up to a second late
    assert sr.octet_count == sr.packet_count * 160
    assert sdes.cname(sr.ssrc) is not None
    (block,) = sr.reports
    assert block.ssrc == FAR_SSRC
    assert block.cumulative_lost == len(SKIPPED)
    assert block.extended_highest_seq == 1000 + 99

    leg.close()
    packets, _ = await next_report(far, engine)
    assert isinstance(packets[-1], Bye) and packets[-1].ssrcs == (sr.ssrc,)


async def test_round_trip_and_far_end_loss_from_the_far_ends_reports(
    engine: MediaEngine, far: FarEnd
) -> None:
    leg = engine.open_leg("PCMU", 8000, 0, far.rtp_address)
    await send_rtp(far, leg, 10, engine)
    # the far end sends its SR (from its RTCP port); the leg's next SR carries LSR/DLSR for it
    far_sr = SenderReport(FAR_SSRC, ntp_from_unix(time.time()), 1600, 10, 1600)
    far.rtcp.sendto(
        serialize_rtcp([far_sr, sdes_cname(FAR_SSRC, "far@test")]), ("127.0.0.1", leg.local_port + 1)
    )
    while True:
        packets, _ = await next_report(far, engine)
        ours = packets[0]
        assert isinstance(ours, SenderReport | ReceiverReport)
        if ours.reports and ours.reports[0].lsr:
            break
    assert ours.reports[0].lsr == ntp_middle32(far_sr.ntp_timestamp)
    # the far end answers at once with a receiver report on our stream: 5 % lost
    assert isinstance(ours, SenderReport)  # the leg is sending
    block = ReportBlock(ours.ssrc, 13, 7, 1234, 80, lsr=ntp_middle32(ours.ntp_timestamp), dlsr=0)
    far.rtcp.sendto(serialize_rtcp([ReceiverReport(FAR_SSRC, (block,))]), ("127.0.0.1", leg.local_port + 1))
    for _ in range(100):
        stats = leg.stats().rtcp
        if stats is not None and stats.far_end is not None:
            break
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
    assert stats is not None and stats.far_end is not None
    assert stats.far_end.cumulative_lost == 7 and abs(stats.far_end.fraction_lost - 13 / 256) < 1e-9
    assert stats.far_end.jitter_ms == 10.0  # 80 timestamp units at 8 kHz
    assert stats.far_end.round_trip_ms is not None and 0 <= stats.far_end.round_trip_ms < 1000


async def test_garbage_on_the_rtcp_port_is_counted_and_the_leg_goes_on(
    engine: MediaEngine, far: FarEnd
) -> None:
    leg = engine.open_leg("PCMU", 8000, 0, far.rtp_address)
    for junk in (b"", b"\x00", b"\x80\xc8\x00\x50" + b"x" * 10, bytes(range(256))):
        far.rtcp.sendto(junk, ("127.0.0.1", leg.local_port + 1))
    await send_rtp(far, leg, 20, engine)
    stats = leg.stats().rtcp
    assert stats is not None and stats.bad_received >= 3
    assert leg.stats().rtp_received >= 15  # media went on
    packets, _ = await next_report(far, engine)
    assert isinstance(packets[0], SenderReport)
