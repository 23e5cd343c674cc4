"""The baresip caller helper against a SIPp answerer on loopback: the call comes up, baresip hears what
SIPp plays and sends what its microphone file says, both compared as waveforms."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.peers import sipp_scenarios as sc
from tests.peers.baresip import BaresipCaller
from tests.peers.pcap_audio import rtp_stream, write_rtp_pcap
from tests.peers.sipp import LOOPBACK, SippProcess, free_udp_port
from tests.peers.speech import rms_dbfs, similarity, synthesize
from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
from trunkline.mediaserver.rtp import parse_rtp

pytestmark = pytest.mark.integration


def test_baresip_calls_hears_and_speaks(tmp_path: Path) -> None:
    callee_says = synthesize("This is the far end speaking to baresip.")
    caller_says = synthesize("Hello, I am baresip calling.")
    pcap = write_rtp_pcap(tmp_path / "callee.pcap", rtp_stream(callee_says))
    received: list[bytes] = []
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media:
        media.bind((LOOPBACK, free_udp_port(even=True)))
        media.settimeout(0.1)

        def collect() -> None:
            while not stop.is_set():
                try:
                    received.append(media.recv(4096))
                except TimeoutError:
                    continue

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        try:
            answer = sc.uas_answer(pcap=pcap, media_port=media.getsockname()[1])
            with SippProcess(answer, tmp_path / "uas", timeout_s=20) as uas:
                caller = BaresipCaller(tmp_path / "baresip", caller_says, seconds=5)
                result = caller.call(f"sip:+15550001@{LOOPBACK}:{uas.local_port}")
                uas_result = uas.wait(10)
        finally:
            stop.set()
            collector.join()
    assert result.returncode == 0 and result.established, result.describe()
    assert uas_result.ok, uas_result.describe()  # baresip hung up with a BYE at -t
    # What baresip heard is what SIPp played (after one G.711 round trip), and nothing else.
    assert rms_dbfs(result.heard) > -30
    assert similarity(ulaw_decode(ulaw_encode(callee_says)), result.heard) > 0.9
    assert similarity(caller_says, result.heard) < 0.3
    # What reached our socket is baresip's microphone, PCMU-encoded.
    packets = [parse_rtp(d) for d in received]
    assert packets and {p.payload_type for p in packets} == {0}
    wire = ulaw_decode(b"".join(p.payload for p in packets))
    assert similarity(ulaw_decode(ulaw_encode(caller_says)), wire) > 0.9
    assert similarity(caller_says, result.sent) > 0.9
