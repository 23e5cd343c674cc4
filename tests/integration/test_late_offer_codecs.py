"""Late-offer INVITEs (no SDP) as a carrier sends them, over raw UDP on 127.0.0.1: our 200 offers every codec
the trunk allows, in its order; the answer in the ACK picks one, and the leg then runs that codec both ways
(the caller's RTP in it is heard, ours goes out with its payload type). An answer we cannot use ends the
call with BYE and a Reason; an outbound call's offer lists every codec too, and the 200's choice is used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.raw_sip import RawCarrier, RtpPeer, SipMessage, answer_sdp, media_line
from tests.integration.sip_server import rtp_range, wait_until
from tests.peers.kamailio import free_udp_port
from tests.peers.speech import similarity
from trunkline.codecs.registry import create_codec
from trunkline.config.loader import parse_config
from trunkline.mediaserver.engine import MediaEngine
from trunkline.sip.call import Call
from trunkline.sip.service import SipService

pytestmark = pytest.mark.integration
DTMF_MAP = ("a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15")
RTPMAP = {"PCMU": "a=rtpmap:0 PCMU/8000", "PCMA": "a=rtpmap:8 PCMA/8000", "G722": "a=rtpmap:9 G722/8000"}
PT = {"PCMU": 0, "PCMA": 8, "G722": 9}


def tone(sample_rate_hz: int, seconds: float, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(sample_rate_hz * seconds)) / sample_rate_hz
    return (np.sin(2 * np.pi * freq_hz * t) * 8000).astype(np.int16)


@dataclass
class Server:
    """SipService + MediaEngine in this process; `on_call` keeps what each answered call heard."""

    service: SipService
    engine: MediaEngine
    port: int
    calls: list[Call] = field(default_factory=list)
    heard: list[np.ndarray] = field(default_factory=list)
    on_call: Callable[[Call], Awaitable[None]] | None = None

    def heard_audio(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, dtype=np.int16)


async def start_server(tmp_path: Path, trunk: dict[str, Any]) -> Server:
    port = free_udp_port()
    low, high = rtp_range(20)
    config = parse_config(
        {
            "sip": {"listen_port": port, "answer_delay_s": 0},
            "media": {"rtp_port_min": low, "rtp_port_max": high},
            "trunk": [trunk],
        },
        "inline.toml",
        {},
        tmp_path,
    )
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    await engine.start()
    server = Server(SipService(), engine, port)

    async def on_call(call: Call) -> None:
        server.calls.append(call)
        leg = call.leg
        leg.play("tone", tone(leg.sample_rate_hz, 1.0), leg.sample_rate_hz, final=True)
        leg.end_utterance("tone")
        async for frame in leg.frames:
            server.heard.append(np.asarray(frame, dtype=np.int16).copy())

    server.on_call = on_call
    await server.service.start(asyncio.get_running_loop(), config, engine, on_call)
    return server


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Server]]]:
    servers: list[Server] = []

    async def make(trunk: dict[str, Any]) -> Server:
        servers.append(await start_server(tmp_path, trunk))
        return servers[-1]

    yield make
    for server in servers:
        await server.service.aclose()
        await server.engine.aclose()


def inbound_trunk(codecs: list[str]) -> dict[str, Any]:
    return {
        "name": "carrier",
        "allowed_sources": ["127.0.0.1/32"],
        "dids": {"+15550100": "demo"},
        "codecs": codecs,
    }


def late_offer_call(server_port: int, chosen: str) -> tuple[SipMessage, RtpPeer, tuple[str, int]]:
    """INVITE without SDP, ACK answering with `chosen` (+ telephone-event), a second of its RTP, BYE."""
    carrier, rtp = RawCarrier(server_port), RtpPeer()
    try:
        ok = carrier.invite_without_sdp()
        our_port, _ = media_line(ok.body)
        pts = f"{PT[chosen]} 101"
        carrier.ack(answer_sdp(rtp.port, pts, (RTPMAP[chosen], *DTMF_MAP)))
        rate = create_codec(chosen, 8000).sample_rate_hz
        rtp.exchange(("127.0.0.1", our_port), chosen, PT[chosen], tone(rate, 1.0, 700.0), tail_s=0.4)
        assert carrier.bye().status == 200
        return ok, rtp, ("127.0.0.1", our_port)
    finally:
        carrier.close()
        rtp.close()


@pytest.mark.parametrize(("codecs", "chosen"), [(["PCMU", "PCMA"], "PCMA"), (["PCMU", "G722"], "G722")])
async def test_late_offer_lists_every_codec_and_runs_the_one_the_ack_chose(
    make_server: Callable[[dict[str, Any]], Awaitable[Server]], codecs: list[str], chosen: str
) -> None:
    server = await make_server(inbound_trunk(codecs))
    ok, rtp, source = await asyncio.to_thread(late_offer_call, server.port, chosen)

    assert media_line(ok.body)[1] == [PT[c] for c in codecs] + [101]  # every trunk codec, in order
    (call,) = server.calls
    assert call.media is not None and (call.media.codec, call.media.payload_type) == (chosen, PT[chosen])
    rate = create_codec(chosen, 8000).sample_rate_hz
    # the caller's RTP in the chosen codec was decoded by the leg (at that codec's rate)
    assert similarity(tone(rate, 0.6, 700.0), server.heard_audio()) > 0.9
    # our RTP went out in the chosen codec: its payload type, and its encoding of our tone
    pts, ours = rtp.decoded(chosen, source)
    assert pts == {PT[chosen]}
    assert similarity(tone(rate, 0.6), ours) > 0.9


@pytest.mark.parametrize(
    ("ack_body", "why"),
    [
        (answer_sdp(40000, "9 101", (RTPMAP["G722"], *DTMF_MAP)), "a codec we did not offer"),
        (answer_sdp(40000, "18", ("a=rtpmap:18 G729/8000",)), "no common codec"),
        (None, "no SDP answer at all"),
    ],
)
async def test_unusable_late_answer_ends_the_call_with_bye_and_reason(
    make_server: Callable[[dict[str, Any]], Awaitable[Server]], ack_body: str | None, why: str
) -> None:
    server = await make_server(inbound_trunk(["PCMU", "PCMA"]))

    def call() -> SipMessage:
        carrier = RawCarrier(server.port)
        try:
            carrier.invite_without_sdp()
            carrier.ack(ack_body)
            bye = carrier.expect(lambda m: m.method == "BYE")
            carrier.reply(bye, 200, "OK")
            return bye
        finally:
            carrier.close()

    bye = await asyncio.to_thread(call)
    reason = bye.header("reason") or ""
    assert reason.startswith("SIP") and "cause=488" in reason, (why, bye.headers)
    assert server.calls == []  # the handler never ran on a leg without a usable codec
    assert await asyncio.to_thread(wait_until, lambda: server.service.active_calls == 0, 5)


async def test_outbound_offer_lists_every_codec_and_uses_the_answer(
    make_server: Callable[[dict[str, Any]], Awaitable[Server]],
) -> None:
    carrier, rtp = RawCarrier(0), RtpPeer()  # here the carrier is the called side (a UAS)
    trunk = {"name": "out", "host": "127.0.0.1", "port": carrier.port, "codecs": ["PCMU", "PCMA"]}
    server = await make_server(trunk)
    carrier.server = ("127.0.0.1", server.port)

    def answer_with_pcma() -> SipMessage:
        invite = carrier.expect(lambda m: m.method == "INVITE")
        sdp = answer_sdp(rtp.port, "8 101", (RTPMAP["PCMA"], *DTMF_MAP))
        ok = ["SIP/2.0 200 OK"] + [f"{h}: {invite.header(h)}" for h in ("via", "from", "call-id", "cseq")]
        ok += [f"To: {invite.header('to')};tag=uas1", f"Contact: <sip:uas@127.0.0.1:{carrier.port}>"]
        ok += ["Content-Type: application/sdp", f"Content-Length: {len(sdp)}"]
        carrier.sock.sendto(("\r\n".join(ok) + "\r\n\r\n" + sdp).encode(), carrier.server)
        carrier.expect(lambda m: m.method == "ACK")
        return invite

    def answer_bye() -> None:
        carrier.reply(carrier.expect(lambda m: m.method == "BYE"), 200, "OK")

    try:
        answering = asyncio.ensure_future(asyncio.to_thread(answer_with_pcma))
        result = await server.service.dial("+15557654321", "out", on_call=server.on_call)
        assert result.outcome == "answered"
        invite = await answering
        our_port, offered = media_line(invite.body)
        source = ("127.0.0.1", our_port)
        await asyncio.to_thread(rtp.exchange, source, "PCMA", 8, tone(8000, 1.0, 700.0), 0.4)
        bye_answered = asyncio.ensure_future(asyncio.to_thread(answer_bye))
        await result.call.hangup()
        await bye_answered
    finally:
        carrier.close()
        rtp.close()
    assert offered == [0, 8, 101]
    assert result.call.media is not None and result.call.media.codec == "PCMA"
    assert similarity(tone(8000, 0.6, 700.0), server.heard_audio()) > 0.9
    pts, ours = rtp.decoded("PCMA", source)
    assert pts == {8}
    assert similarity(tone(8000, 0.6), ours) > 0.9


async def test_outbound_calls_count_against_the_call_cap(
    make_server: Callable[[dict[str, Any]], Awaitable[Server]],
) -> None:
    """With the trunk's one call ringing, a second dial fails at once with 503 and sends no INVITE; the
    slot is free again once the first call ends."""
    carrier = RawCarrier(0)
    server = await make_server({"name": "out", "host": "127.0.0.1", "port": carrier.port, "max_calls": 1})
    carrier.server = ("127.0.0.1", server.port)
    invites: list[str] = []  # every INVITE request line the carrier reads

    def seen(method: str, number: str = "") -> Callable[[SipMessage], bool]:
        def wanted(m: SipMessage) -> bool:
            if m.method == "INVITE":
                invites.append(m.start)
            return m.method == method and number in m.start

        return wanted

    try:
        first = asyncio.ensure_future(server.service.dial("+15557654321", "out"))
        invite = await asyncio.to_thread(carrier.expect, seen("INVITE"))
        refused = await server.service.dial("+15557654322", "out")
        assert (refused.outcome, refused.status) == ("failed", 503)
        carrier.reply(invite, 486, "Busy Here")
        assert (await first).outcome == "busy"
        await asyncio.to_thread(carrier.expect, seen("ACK"))
        again = asyncio.ensure_future(server.service.dial("+15557654323", "out"))
        retry = await asyncio.to_thread(carrier.expect, seen("INVITE", "+15557654323"))
        carrier.reply(retry, 486, "Busy Here")
        assert (await again).outcome == "busy"
        assert not any("+15557654322" in line for line in invites), invites  # the refused dial sent nothing
    finally:
        carrier.close()
