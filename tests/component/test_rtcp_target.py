"""Where a real leg's RTCP reports go when the far end's SDP has a=rtcp (RFC 3605): to the declared address
and not to RTP port + 1; a latched symmetric source on the far end's host still wins; a re-INVITE without
a=rtcp (through LegAdapter) returns to RTP port + 1; RTCP before the far end is known steers nothing.

Real UDP sockets, all on 127.0.0.1 (the rules that need a second host, such as a stranger or a far end that
moved, are decided in tests/unit/test_rtcp_target_rules.py); waits are on engine ticks and non-blocking reads;
the report interval is shortened to 0.5 s.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from trunkline.config.loader import parse_config
from trunkline.mediaserver.engine import MediaEngine
from trunkline.mediaserver.leg import Leg
from trunkline.mediaserver.rtcp import (
    Bye,
    ReceiverReport,
    SenderReport,
    parse_rtcp,
    sdes_cname,
    serialize_rtcp,
)
from trunkline.sip.medialeg import LegAdapter
from trunkline.sip.sdp import Negotiated

FAR_SSRC = 0x0DDBA11
Address = tuple[str, int]


class Sink:
    """A UDP socket that keeps what arrives (non-blocking reads)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.address: Address = self.sock.getsockname()
        self.got: list[tuple[bytes, Address]] = []

    def poll(self) -> int:
        """Read everything waiting; how many datagrams came."""
        before = len(self.got)
        while True:
            try:
                self.got.append(self.sock.recvfrom(2048))
            except BlockingIOError:
                return len(self.got) - before

    def close(self) -> None:
        self.sock.close()


def rtp_pair() -> tuple[Sink, Sink]:
    """RTP on P and RTCP on P + 1 (the RFC 3550 default layout)."""
    for _ in range(50):
        rtp = Sink()
        try:
            return rtp, Sink(rtp.address[1] + 1)
        except OSError:
            rtp.close()
    raise RuntimeError("no adjacent UDP port pair")


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine("127.0.0.1", 46000, 46499, max_catch_up=50, rtcp_interval_s=0.5)
    await eng.start()
    yield eng
    await eng.aclose()


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    """Every socket a test opens, closed at the end."""
    opened: list[Sink] = []
    yield opened
    for sink in opened:
        sink.close()


async def send_rtp(rtp: Sink, leg: Leg, engine: MediaEngine, count: int = 5) -> None:
    """A few PCMU packets from FAR_SSRC, one per engine tick, so the leg has a stream to report on."""
    for i in range(count):
        header = struct.pack("!BBHII", 0x80, 0, 100 + i, 160 * i, FAR_SSRC)
        rtp.sock.sendto(header + b"\xff" * 160, ("127.0.0.1", leg.local_port))
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
        rtp.poll()


async def next_report(engine: MediaEngine, at: Sink, others: list[Sink], ticks: int = 250) -> list[object]:
    """The next report that reaches `at` (what was there before is dropped); fails if one reaches `others`."""
    for sink in (at, *others):
        sink.poll()
        sink.got.clear()
    for _ in range(ticks):
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
        for other in others:
            assert other.poll() == 0, f"a report went to {other.address}, expected {at.address}"
        if at.poll():
            data, _ = at.got[-1]
            return list(parse_rtcp(data))
    raise AssertionError(f"no RTCP at {at.address} in time")


def far_rtcp(sink: Sink, leg: Leg) -> None:
    """The far end's own receiver report, sent from `sink` to the leg's RTCP port."""
    packet = serialize_rtcp([ReceiverReport(FAR_SSRC), sdes_cname(FAR_SSRC, "far@test")])
    sink.sock.sendto(packet, ("127.0.0.1", leg.local_port + 1))


async def taken_in(engine: MediaEngine, leg: Leg, count: int) -> None:
    """Wait until the leg has read `count` RTCP packets."""
    for _ in range(100):
        if leg.session.rtcp_received >= count:
            return
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
    raise AssertionError("the leg did not read the RTCP packet")


async def test_reports_go_to_the_a_rtcp_port_until_the_far_ends_own_rtcp_latches(
    engine: MediaEngine, sinks: list[Sink]
) -> None:
    rtp, default = rtp_pair()
    declared = Sink()
    sinks += [rtp, default, declared]
    leg = engine.open_leg("PCMU", 8000, 0, rtp.address, remote_rtcp=declared.address)
    await send_rtp(rtp, leg, engine)
    packets = await next_report(engine, declared, [default])
    assert isinstance(packets[0], SenderReport)
    assert declared.got[-1][1] == ("127.0.0.1", leg.local_port + 1)  # from our RTCP port

    far_rtcp(default, leg)  # the far end's RTCP comes from its RTP host: symmetric RTCP wins
    await taken_in(engine, leg, 1)
    await next_report(engine, default, [declared])
    await next_report(engine, default, [declared])
    leg.close()
    assert default.poll() == 1 and isinstance(list(parse_rtcp(default.got[-1][0]))[-1], Bye)


async def test_reinvite_without_a_rtcp_returns_to_rtp_port_plus_one(
    engine: MediaEngine, sinks: list[Sink], tmp_path: Path
) -> None:
    adapter = LegAdapter(engine, parse_config({}, "inline.toml", {}, tmp_path))
    rtp, default = rtp_pair()
    declared = Sink()
    sinks += [rtp, default, declared]
    media = Negotiated("PCMU", 0, 8000, None, *rtp.address, "sendrecv", 20, remote_rtcp=declared.address)
    leg = adapter.open_for_answer(media)
    try:
        await send_rtp(rtp, leg, engine)
        await next_report(engine, declared, [default])
        adapter.update(leg, Negotiated("PCMU", 0, 8000, None, *rtp.address, "sendrecv", 20))
        await next_report(engine, default, [declared])
        adapter.update(leg, media)  # a later re-INVITE declaring it again
        await next_report(engine, declared, [default])
    finally:
        adapter.close(leg)


async def test_rtcp_before_the_far_end_is_known_latches_nothing(
    engine: MediaEngine, sinks: list[Sink]
) -> None:
    """A leg opened for our own offer (no answer yet): RTCP from anyone is read but steers nothing, so once
    the answer gives the far end's address the reports go there, not to whoever spoke first."""
    rtp, default = rtp_pair()
    early = Sink()
    sinks += [rtp, default, early]
    leg = engine.open_leg("PCMU", 8000, 0, None)
    far_rtcp(early, leg)
    await taken_in(engine, leg, 1)
    leg.set_remote(rtp.address)
    await send_rtp(rtp, leg, engine)
    await next_report(engine, default, [early])
