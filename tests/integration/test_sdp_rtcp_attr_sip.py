"""a=rtcp (RFC 3605) end to end over raw SIP on 127.0.0.1: a carrier whose SDP (in the INVITE, or in the ACK
of a late offer) puts its RTCP on a port other than RTP + 1 gets the call's RTCP there (at the latest the
final report with BYE when the call ends), from our RTCP port, and nothing at its RTP port + 1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.raw_sip import RawCarrier, RtpPeer, answer_sdp, media_line
from tests.integration.sip_server import in_process_sip
from trunkline.mediaserver.rtcp import Bye, parse_rtcp
from trunkline.sip.call import Call

pytestmark = pytest.mark.integration
MEDIA_ATTRS = ("a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15")


@pytest.fixture
async def server_port(tmp_path: Path) -> AsyncIterator[int]:
    """SipService + MediaEngine in this process, one inbound trunk; each call's handler just listens."""
    trunk = {
        "name": "carrier",
        "allowed_sources": ["127.0.0.1/32"],
        "dids": {"+15550100": "demo"},
        "codecs": ["PCMU"],
    }

    async def on_call(call: Call) -> None:
        async for _ in call.leg.frames:
            pass

    async with in_process_sip(tmp_path, [trunk], on_call) as (_service, port):
        yield port


def rtp_peer_with_free_next_port() -> tuple[RtpPeer, socket.socket]:
    """The carrier's RTP socket and one bound on its port + 1, where RTCP must not arrive."""
    for _ in range(50):
        rtp = RtpPeer()
        plus_one = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            plus_one.bind(("127.0.0.1", rtp.port + 1))
            return rtp, plus_one
        except OSError:
            rtp.close()
            plus_one.close()
    raise RuntimeError("no adjacent UDP port pair on 127.0.0.1")


def call_with_a_rtcp(server_port: int, late: bool) -> tuple[list[tuple[bytes, tuple[str, int]]], int, bool]:
    """One call whose SDP says a=rtcp:<declared>; returns what reached the declared port (until the BYE
    report), our RTP port, and whether anything reached RTP port + 1."""
    carrier = RawCarrier(server_port)
    rtp, plus_one = rtp_peer_with_free_next_port()
    declared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        declared.bind(("127.0.0.1", 0))
        sdp = answer_sdp(rtp.port, "0 101", (*MEDIA_ATTRS, f"a=rtcp:{declared.getsockname()[1]}"))
        if late:
            our_port, _ = media_line(carrier.invite_without_sdp().body)
            carrier.ack(sdp)
        else:
            our_port, _ = media_line(carrier.invite(sdp).body)
            carrier.ack(None)
        rtp.exchange(("127.0.0.1", our_port), "PCMU", 0, np.zeros(8000, dtype=np.int16), tail_s=0.2)
        assert carrier.bye().status == 200
        got: list[tuple[bytes, tuple[str, int]]] = []
        declared.settimeout(10.0)
        while not got or not any(isinstance(p, Bye) for p in parse_rtcp(got[-1][0])):
            got.append(declared.recvfrom(2048))  # TimeoutError fails the test
        plus_one.setblocking(False)
        try:
            plus_one.recv(2048)
            stray = True
        except BlockingIOError:
            stray = False
        return got, our_port, stray
    finally:
        carrier.close()
        rtp.close()
        plus_one.close()
        declared.close()


@pytest.mark.parametrize("late", [False, True], ids=["offer-in-invite", "answer-in-ack"])
async def test_carriers_a_rtcp_port_gets_our_reports(server_port: int, late: bool) -> None:
    got, our_port, stray = await asyncio.to_thread(call_with_a_rtcp, server_port, late)
    assert {source for _, source in got} == {("127.0.0.1", our_port + 1)}  # from our RTCP port
    assert isinstance(list(parse_rtcp(got[-1][0]))[-1], Bye)
    assert not stray  # nothing at the RTP port + 1
