"""The SIPp helpers against SIPp itself on loopback: every scenario kind our SIP tests will use.

Each test runs a SIPp UAS and a SIPp UAC from tests/peers and checks both ends' outcome; media goes to a
socket of ours (the UAS advertises its port) so we can compare what arrived with what the pcap holds.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.peers import sipp_scenarios as sc
from tests.peers.pcap_audio import DigitAt, rtp_stream, write_rtp_pcap
from tests.peers.sipp import LOOPBACK, SippAuth, SippProcess, SippResult, free_udp_port
from trunkline.mediaserver.dtmf import TelephoneEventDecoder
from trunkline.mediaserver.rtp import parse_rtp

pytestmark = pytest.mark.integration


class RtpSink:
    """A UDP socket on 127.0.0.1 collecting every datagram until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, free_udp_port(even=True)))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(4096))
            except TimeoutError:
                continue

    def __enter__(self) -> RtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def sink() -> Iterator[RtpSink]:
    with RtpSink() as s:
        yield s


def call(
    tmp_path: Path, uas_xml: str, uac_xml: str, uas_calls: int = 1, **uac_options: object
) -> tuple[SippResult, SippResult]:
    """Run a SIPp UAS and a SIPp UAC calling it to completion; (UAC result, UAS result)."""
    with SippProcess(uas_xml, tmp_path / "uas", calls=uas_calls, timeout_s=15) as uas:
        uac = SippProcess(
            uac_xml, tmp_path / "uac", remote=(LOOPBACK, uas.local_port), service="+15550001", timeout_s=15,
            **uac_options,  # type: ignore[arg-type]
        )  # fmt: skip
        uac_result = uac.start().wait()
        return uac_result, uas.wait(15)


def tone(seconds: float) -> np.ndarray:
    """A speech-like test signal: two gliding tones under a syllable-rate envelope."""
    t = np.arange(round(seconds * 8000)) / 8000
    signal = np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.5 * np.sin(2 * np.pi * 1100 * t)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (8000 * signal * envelope).astype(np.int16)


def test_basic_call_plays_pcm_and_rfc4733_digits(tmp_path: Path, sink: RtpSink) -> None:
    stream = rtp_stream(tone(1.0), [DigitAt("5", 0.2), DigitAt("#", 0.6, 160)])
    pcap = write_rtp_pcap(tmp_path / "call.pcap", stream)
    uac, uas = call(tmp_path, sc.uas_answer(media_port=sink.port), sc.uac_basic(pcap, hold_ms=1300))
    assert uac.ok and uas.ok, uac.describe() + uas.describe()
    received = [parse_rtp(d) for d in sink.datagrams]
    assert [p.payload for p in received] == [p.payload for p in stream.packets]
    decoder = TelephoneEventDecoder()
    digits = [d.digit for i, p in enumerate(received) for d in decoder.push(p, i * 0.02)]
    assert digits == ["5", "#"]


def test_digest_auth_on_a_407_challenge(tmp_path: Path) -> None:
    uac, uas = call(
        tmp_path,
        sc.uas_challenge("alice", "s3cret"),
        sc.uac_auth(hold_ms=200),
        auth=SippAuth("alice", "s3cret"),
    )
    assert uac.ok and uas.ok, uac.describe() + uas.describe()
    header = re.search(r"Proxy-Authorization: Digest (.*)", uas.messages)
    assert header is not None
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.group(1)))
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    expected = md5(f"{md5('alice:trunk.test:s3cret')}:{fields['nonce']}:{md5('INVITE:' + fields['uri'])}")
    assert fields["response"] == expected


def test_wrong_password_is_refused_on_a_401(tmp_path: Path) -> None:
    uac, _ = call(
        tmp_path, sc.uas_challenge("alice", "s3cret", status=401), sc.uac_auth(hold_ms=200),
        auth=SippAuth("alice", "wrong"),
    )  # fmt: skip
    assert uac.failed == 1 and uac.successful == 0
    assert "403 Forbidden" in uac.messages


def test_cancel_before_answer(tmp_path: Path) -> None:
    uac, uas = call(tmp_path, sc.uas_ring_until_cancel(), sc.uac_cancel(ring_ms=100))
    assert uac.ok and uas.ok, uac.describe() + uas.describe()
    assert "SIP/2.0 487 Request Terminated" in uac.messages


def test_reinvite_hold_and_unhold(tmp_path: Path) -> None:
    uac, uas = call(
        tmp_path, sc.uas_answer(reinvite_answers=("recvonly", "sendrecv")), sc.uac_hold_unhold(100)
    )
    assert uac.ok and uas.ok, uac.describe() + uas.describe()
    directions = re.findall(r"a=(sendonly|sendrecv|recvonly)", uas.messages)
    assert directions == ["sendrecv", "sendrecv", "sendonly", "recvonly", "sendrecv", "sendrecv"]


def test_sip_info_dtmf(tmp_path: Path) -> None:
    uac, uas = call(tmp_path, sc.uas_answer(infos=3), sc.uac_info_dtmf("19#", gap_ms=50))
    assert uac.ok and uas.ok, uac.describe() + uas.describe()
    assert re.findall(r"Signal=(.)", uas.messages) == ["1", "9", "#"]


def test_callee_hangs_up(tmp_path: Path) -> None:
    uac, uas = call(tmp_path, sc.uas_answer(hangup_after_ms=200), sc.uac_basic(remote_hangup=True))
    assert uac.ok and uas.ok, uac.describe() + uas.describe()


def test_load_run(tmp_path: Path) -> None:
    uac, uas = call(
        tmp_path, sc.uas_answer(), sc.uac_basic(hold_ms=None), uas_calls=20,
        calls=20, rate=40, limit=10, duration_ms=200,
    )  # fmt: skip
    assert uac.ok and uac.successful == 20, uac.describe()
    assert uas.successful == 20 and uas.failed == 0, uas.describe()


def test_answerer_copies_record_route(tmp_path: Path) -> None:
    """The UAS scenario (our outbound calls' far end) keeps a trunk's Record-Route in its answers."""
    with SippProcess(sc.uas_answer(hangup_after_ms=100), tmp_path / "uas", timeout_s=10) as uas:
        target = (LOOPBACK, uas.local_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.settimeout(5)
            port = sock.getsockname()[1]
            route = f"<sip:{LOOPBACK}:{port};lr;trunk=yes>"
            invite = _request("INVITE", target, port, "z9hG4bKrr1", f"Record-Route: {route}\r\n")
            sock.sendto(invite.encode(), target)
            final = _until(sock, "SIP/2.0 200")
            assert f"Record-Route: {route}" in final
            to = re.search(r"^To: (.*)$", final, re.M).group(1).strip()  # type: ignore[union-attr]
            sock.sendto(_request("ACK", target, port, "z9hG4bKrr2", to=to).encode(), target)
            bye = _until(sock, "BYE ")
            assert re.search(rf"^Route: {re.escape(route)}", bye, re.M)
            copied = [
                line
                for line in bye.split("\r\n")
                if line.startswith(("Via", "From", "To", "Call-ID", "CSeq"))
            ]
            sock.sendto(
                ("SIP/2.0 200 OK\r\n" + "\r\n".join(copied) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                target,
            )
        result = uas.wait(10)
    assert result.ok, result.describe()


def _request(
    method: str, target: tuple[str, int], port: int, branch: str, extra: str = "", to: str = ""
) -> str:
    return (
        f"{method} sip:1@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch}\r\n{extra}From: <sip:t@{LOOPBACK}>;tag=rr\r\n"
        f"To: {to or f'<sip:1@{LOOPBACK}>'}\r\nCall-ID: rr-test\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:t@{LOOPBACK}:{port}>\r\nContent-Length: 0\r\n\r\n"
    )


def _until(sock: socket.socket, start: str) -> str:
    while True:
        text = sock.recv(65535).decode()
        if text.startswith(start):
            return text
