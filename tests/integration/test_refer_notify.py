"""REFER and NOTIFY with SIPp as the carrier. Refer progress that arrives after our BYE for a transferred call
gets 481 (sippy said 500), and so does a NOTIFY in a live call with no REFER pending (sippy did not answer it
at all); neither logs a warning or an error. Refer progress that overtakes the carrier's 202 gets 200. A REFER
the carrier refuses leaves the call up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as S
from tests.integration.raw_sip import RawCarrier, SipMessage, answer_sdp
from tests.integration.sip_server import rtp_range, run_sipp
from tests.peers.kamailio import free_udp_port
from trunkline.config.loader import parse_config
from trunkline.mediaserver.engine import MediaEngine
from trunkline.sip.call import Call
from trunkline.sip.service import SipService
from trunkline.sip.transfer_waits import TRANSFER_ANSWER_TIMEOUT_S

pytestmark = pytest.mark.integration
SIPFRAG = "Event: refer\nSubscription-State: {state}\nContent-Type: message/sipfrag;version=2.0\n"
# the carrier's side of an answered call up to our REFER
UNTIL_REFER = (*S.answered(), S.recv("REFER"))


Transferring = tuple["Server", RawCarrier, SipMessage]  # the server, the carrier and our REFER


def notify(cseq: int, status_line: str, state: str) -> str:
    return S.in_dialog("NOTIFY", cseq, SIPFRAG.format(state=state), f"{status_line}\n")


class Server:
    """SipService + MediaEngine in this process; the handler transfers the call when `transfer` is set and
    keeps what `Call.transfer` returned in `outcomes` (and in `in_call` whether the call was still up)."""

    def __init__(self, transfer: bool, timeout_s: float = TRANSFER_ANSWER_TIMEOUT_S) -> None:
        self.transfer = transfer
        self.timeout_s = timeout_s
        self.calls: list[Call] = []
        self.outcomes: list[bool] = []
        self.in_call: list[bool] = []
        self.changed = asyncio.Event()
        self.port = free_udp_port()
        self.service = SipService()
        self.engine: MediaEngine | None = None

    async def start(self, tmp_path: Path) -> None:
        low, high = rtp_range(20)
        config = parse_config(
            {
                "sip": {"listen_port": self.port, "answer_delay_s": 0},
                "media": {"rtp_port_min": low, "rtp_port_max": high},
                "trunk": [
                    {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {"+15550100": "demo"}}
                ],
            },
            "inline.toml",
            {},
            tmp_path,
        )
        self.engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
        await self.engine.start()
        await self.service.start(asyncio.get_running_loop(), config, self.engine, self.on_call)

    async def on_call(self, call: Call) -> None:
        self.calls.append(call)
        if self.transfer:
            self.outcomes.append(await call.transfer("+15559990000", self.timeout_s))
            self.in_call.append(not call.ended.is_set())
            self.changed.set()
        await call.ended.wait()

    async def aclose(self) -> None:
        await self.service.aclose()
        if self.engine is not None:
            await self.engine.aclose()


@pytest.fixture
async def transferring(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(transfer=True)
    await server.start(tmp_path)
    yield server
    await server.aclose()


@pytest.fixture
async def answering(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(transfer=False)
    await server.start(tmp_path)
    yield server
    await server.aclose()


def quiet(output: str) -> bool:
    """No warning or error from our loggers (structlog's console lines carry the level in brackets)."""
    return not any(f"[{level}" in output for level in ("warning", "error", "critical"))


async def test_refer_progress_after_our_bye_gets_481(
    transferring: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scn = S.scenario(
        "refer-notify",
        *UNTIL_REFER,
        S.reply(202, "Accepted"),
        S.recv("BYE"),
        S.reply(200, "OK"),
        notify(2, "SIP/2.0 100 Trying", "active;expires=60"),
        S.recv(481),
        notify(3, "SIP/2.0 200 OK", "terminated;reason=noresource"),
        S.recv(481),
    )
    result = await asyncio.to_thread(run_sipp, tmp_path, scn, f"127.0.0.1:{transferring.port}", timeout_s=15)
    assert result.returncode == 0, result.errors + result.stdout
    assert await ended(transferring) == "transferred"
    output = capsys.readouterr().out
    assert output.count("sip.request_answered_481") == 2 and quiet(output), output


async def test_notify_in_a_live_call_gets_481_and_the_call_goes_on(
    answering: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scn = S.answered_call(
        notify(2, "SIP/2.0 200 OK", "terminated;reason=noresource"),
        S.recv(481),
        S.in_dialog("OPTIONS", 3),
        S.recv(200),  # the dialog is still up after the NOTIFY
        hold_ms=100,
    )
    result = await asyncio.to_thread(run_sipp, tmp_path, scn, f"127.0.0.1:{answering.port}", timeout_s=15)
    assert result.returncode == 0, result.errors + result.stdout
    assert await ended(answering) == "remote_hangup"  # posted by the SIP thread after its 200 to the BYE
    assert quiet(capsys.readouterr().out)


async def test_a_refused_refer_keeps_the_call_up(transferring: Server, tmp_path: Path) -> None:
    """A trunk with REFER disabled answers 403: transfer() says so and the caller stays connected (the dialog
    still answers an OPTIONS, and ends only with the caller's own BYE)."""
    scn = S.scenario(
        "refused-refer",
        *UNTIL_REFER,
        S.reply(403, "Forbidden"),
        S.pause(300),
        S.in_dialog("OPTIONS", 2),
        S.recv(200),  # still connected: no BYE came after the refusal
        S.in_dialog("BYE", 3),
        S.recv(200),
    )
    result = await asyncio.to_thread(run_sipp, tmp_path, scn, f"127.0.0.1:{transferring.port}", timeout_s=15)
    assert result.returncode == 0, result.errors + result.stdout
    assert await ended(transferring) == "remote_hangup"
    assert (transferring.outcomes, transferring.in_call) == ([False], [True])  # the 403 settled it


@asynccontextmanager
async def refer_sent(tmp_path: Path, timeout_s: float) -> AsyncIterator[Transferring]:
    """A raw-UDP carrier's answered call that the server transfers (giving up after `timeout_s`); yields
    the server, the carrier and our REFER, still unanswered."""
    server = Server(transfer=True, timeout_s=timeout_s)
    await server.start(tmp_path)
    carrier = RawCarrier(server.port)
    try:
        await asyncio.to_thread(carrier.invite_without_sdp)
        await asyncio.to_thread(carrier.ack, answer_sdp(free_udp_port(), "0", ("a=rtpmap:0 PCMU/8000",)))
        refer = await asyncio.to_thread(carrier.expect, lambda m: m.method == "REFER")
        assert "+15559990000" in (refer.header("refer-to") or "")
        yield server, carrier, refer
    finally:
        carrier.close()
        await server.aclose()


@asynccontextmanager
async def refer_left_unanswered(tmp_path: Path) -> AsyncIterator[Transferring]:
    """`refer_sent`, with the REFER left unanswered until transfer() (1 s timeout) has given up with False."""
    async with refer_sent(tmp_path, 1.0) as (server, carrier, refer):
        async with asyncio.timeout(10):
            await server.changed.wait()  # its retransmissions are left unanswered too
        assert server.outcomes == [False]
        yield server, carrier, refer


async def ended(server: Server) -> str | None:
    async with asyncio.timeout(10):
        await server.calls[0].ended.wait()
    return server.calls[0].end_reason


async def test_an_unanswered_refer_gives_up_and_keeps_the_call(tmp_path: Path) -> None:
    """A carrier that never answers our REFER (sippy would wait 32 s): transfer() gives up after its timeout
    with False and the call stays up until the caller's BYE."""
    async with refer_left_unanswered(tmp_path) as (server, carrier, _refer):
        ok = await asyncio.to_thread(carrier.bye)  # skips REFER retransmissions; no BYE came from us
        assert ok.status == 200
        assert await ended(server) == "remote_hangup"


async def test_a_refer_accepted_after_the_timeout_still_ends_our_leg(tmp_path: Path) -> None:
    """The carrier accepts our REFER after transfer() gave up: it is moving the caller anyway, so our leg
    ends with BYE (as transferred), and the late acceptance is counted."""
    async with refer_left_unanswered(tmp_path) as (server, carrier, refer):
        carrier.reply(refer, 202, "Accepted")
        bye = await asyncio.to_thread(carrier.expect, lambda m: m.method == "BYE")
        carrier.reply(bye, 200, "OK")
        assert await ended(server) == "transferred"
        assert (await server.service.status())["counters"]["sip.refer_accepted_late"] == 1


async def test_refer_progress_before_the_202_gets_200(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UDP may deliver the carrier's first NOTIFY before its 202: while our REFER awaits its answer, that
    NOTIFY belongs to it (RFC 3515) and is accepted; the 202 then ends our leg as usual."""
    async with refer_sent(tmp_path, TRANSFER_ANSWER_TIMEOUT_S) as (server, carrier, refer):
        answer = await asyncio.to_thread(carrier.notify_refer, "SIP/2.0 100 Trying", "active;expires=60")
        assert answer.status == 200
        carrier.reply(refer, 202, "Accepted")
        bye = await asyncio.to_thread(carrier.expect, lambda m: m.method == "BYE")
        carrier.reply(bye, 200, "OK")
        assert await ended(server) == "transferred" and server.outcomes == [True]
        late = await asyncio.to_thread(carrier.notify_refer, "SIP/2.0 200 OK", "terminated;reason=noresource")
        assert late.status == 481  # after our BYE the dialog is gone
    output = capsys.readouterr().out
    assert "sip.refer_progress" in output and "status=100" in output and quiet(output), output
