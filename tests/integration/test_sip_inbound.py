"""Inbound calls straight from SIPp to the demo server: answer with our RTP leg, BYE, rejections, CANCEL,
late offer, hold/unhold, INFO and RFC 4733 DTMF."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import DemoServer, greeting_wav, run_sipp

pytestmark = pytest.mark.integration
LOCAL_TRUNK = {
    "name": "local",
    "allowed_sources": ["127.0.0.1/32"],
    "dids": {"+15550100": "demo"},
    "max_calls": 2,
}
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_1.pcap"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DemoServer]:
    srv = DemoServer(tmp_path, greeting_wav(), [LOCAL_TRUNK], sip={"answer_delay_s": 0})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def ringing_server(tmp_path: Path) -> Iterator[DemoServer]:
    srv = DemoServer(tmp_path, greeting_wav(), [LOCAL_TRUNK], sip={"answer_delay_s": 3})
    srv.start()
    yield srv
    srv.stop()


def target(srv: DemoServer) -> str:
    return f"127.0.0.1:{srv.port}"


def test_answered_call_has_audio_both_ways(server: DemoServer, tmp_path: Path) -> None:
    result = run_sipp(tmp_path, S.answered_call(hold_ms=1500), target(server), extra=["-rtp_echo"])
    assert result.returncode == 0, result.errors + result.stdout
    (summary,) = server.wait_summaries(1, 10)
    assert summary["tenant"] == "demo" and summary["did"] == "+15550100" and summary["codec"] == "PCMU"
    stats = summary["stats"]
    assert stats["sent"] >= 50  # ~1.5 s of our greeting at 50 packets/s
    assert stats["received"] >= 40  # SIPp echoed our packets back: our audio reached the caller


def test_unknown_did_is_404(server: DemoServer, tmp_path: Path) -> None:
    result = run_sipp(tmp_path, S.rejected_call(404), target(server), service="+15559999")
    assert result.returncode == 0, result.errors + result.stdout


def test_no_common_codec_is_488(server: DemoServer, tmp_path: Path) -> None:
    body = S.sdp("18", rtpmaps="a=rtpmap:18 G729/8000")
    result = run_sipp(tmp_path, S.rejected_call(488, body=body), target(server))
    assert result.returncode == 0, result.errors + result.stdout


def test_over_the_cap_is_503_with_retry_after(ringing_server: DemoServer, tmp_path: Path) -> None:
    # max_calls = 2: two calls ringing (answer delayed) fill the trunk; the third gets 503 + Retry-After.
    results = []
    threads = [
        threading.Thread(
            target=lambda n=n: results.append(
                run_sipp(tmp_path, S.cancelled_call(2500), target(ringing_server), name=f"c{n}")
            )
        )
        for n in range(2)
    ]
    for t in threads:
        t.start()
    assert ringing_server.wait_for_log("sip.call_admitted", 10, count=2)
    result = run_sipp(
        tmp_path, S.rejected_call(503, check=("Retry-After:", "^ *30")), target(ringing_server), name="over"
    )
    for t in threads:
        t.join()
    assert result.returncode == 0, result.errors + result.stdout


def test_the_process_wide_cap_counts_calls_on_every_trunk(tmp_path: Path) -> None:
    # [server] max_calls = 1: a call ringing on one trunk makes an INVITE for another trunk's number 503.
    other = {**LOCAL_TRUNK, "name": "other", "dids": {"+15550101": "demo"}}
    srv = DemoServer(
        tmp_path, greeting_wav(), [LOCAL_TRUNK, other], sip={"answer_delay_s": 8}, server={"max_calls": 1}
    )
    srv.start()
    try:
        results = []
        first = threading.Thread(
            target=lambda: results.append(
                run_sipp(tmp_path, S.cancelled_call(5000), target(srv), name="first")
            )
        )
        first.start()
        assert srv.wait_for_log("sip.call_admitted", 10)
        over = S.rejected_call(503, check=("Retry-After:", "^ *30"))
        result = run_sipp(tmp_path, over, target(srv), service="+15550101", name="over")
        first.join()
        assert result.returncode == 0, result.errors + result.stdout
        assert results[0].returncode == 0, results[0].errors + results[0].stdout
    finally:
        srv.stop()


def test_cancel_while_ringing_is_487(ringing_server: DemoServer, tmp_path: Path) -> None:
    result = run_sipp(tmp_path, S.cancelled_call(), target(ringing_server))
    assert result.returncode == 0, result.errors + result.stdout
    assert ringing_server.wait_for_log("reason=cancelled", 5)


def test_late_offer_gets_our_offer_and_answer_in_ack(server: DemoServer, tmp_path: Path) -> None:
    scn = S.scenario(
        "late",
        S.invite(None),
        S.recv(100, optional=True),
        S.recv(180),
        S.recv(
            200,
            rrs=True,
            extra='<action><ereg regexp="m=audio [0-9]+ RTP/AVP 0 8 9 101" search_in="body" check_it="true" '
            'assign_to="1"/></action>',
        ),
        S.ack_2xx(body=S.sdp("0 101")),
        S.pause(1500),
        S.in_dialog("BYE", 9),
        S.recv(200),
        '  <Reference variables="1"/>\n',
    )
    result = run_sipp(tmp_path, scn, target(server), extra=["-rtp_echo"])
    assert result.returncode == 0, result.errors + result.stdout
    (summary,) = server.wait_summaries(1, 10)
    assert summary["stats"]["received"] > 20  # media flowed once the ACK's answer set the remote


def test_hold_stops_our_audio_and_unhold_resumes(server: DemoServer, tmp_path: Path) -> None:
    scn = S.answered_call(
        S.pause(600),
        S.in_dialog("INVITE", 2, "Content-Type: application/sdp\n", S.sdp(direction="sendonly")),
        S.recv(100, optional=True),
        S.recv(200),
        S.ack_2xx(2),
        S.pause(1000),
        S.in_dialog("INVITE", 3, "Content-Type: application/sdp\n", S.sdp()),
        S.recv(100, optional=True),
        S.recv(200),
        S.ack_2xx(3),
        hold_ms=1000,
    )
    result = run_sipp(tmp_path, scn, target(server))
    assert result.returncode == 0, result.errors + result.stdout
    (summary,) = server.wait_summaries(1, 10)
    held, resumed = summary["holds"]
    assert held["on_hold"] is True and resumed["on_hold"] is False
    assert resumed["sent"] - held["sent"] <= 2  # ~50 packets would have gone out in that second
    assert summary["stats"]["sent"] - resumed["sent"] >= 25  # audio resumed after unhold


def test_info_and_rfc4733_dtmf_arrive_as_digits(server: DemoServer, tmp_path: Path) -> None:
    info = "Content-Type: application/dtmf-relay\n"
    scn = S.answered_call(
        S.play_pcap(DTMF_PCAP),
        S.pause(800),
        S.in_dialog("INFO", 2, info, "Signal=5\nDuration=160\n"),
        S.recv(200),
        S.in_dialog("INFO", 3, info, "Signal=#\nDuration=160\n"),
        S.recv(200),
        hold_ms=800,
    )
    result = run_sipp(tmp_path, scn, target(server))
    assert result.returncode == 0, result.errors + result.stdout
    (summary,) = server.wait_summaries(1, 10)
    assert summary["dtmf"] == "15#"
    assert summary["dtmf_sources"] == ["rfc4733", "info", "info"]


def bye_from_us() -> str:
    return S.scenario("lostbye", *S.answered(), S.recv("BYE"), S.reply(200, "OK"))


@pytest.mark.parametrize(
    ("sip", "echo", "reason"),
    [({"rtp_timeout_s": 1}, False, "rtp_timeout"), ({"max_call_duration_s": 1.5}, True, "max_duration")],
)
def test_watchdogs_end_a_call_whose_bye_was_lost(
    tmp_path: Path, sip: dict[str, float], echo: bool, reason: str
) -> None:
    srv = DemoServer(tmp_path, greeting_wav(), [LOCAL_TRUNK], sip=sip)
    srv.start()
    try:
        extra = ["-rtp_echo"] if echo else []
        result = run_sipp(tmp_path, bye_from_us(), target(srv), extra=extra, timeout_s=20)
        assert result.returncode == 0, result.errors + result.stdout  # we sent the BYE
        assert srv.wait_for_log(f"reason={reason}", 5), srv.log_text()
    finally:
        srv.stop()
