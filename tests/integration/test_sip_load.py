"""Load: 100 concurrent SIPp calls through the kamailio trunk with RTP both ways; 0 failed calls, every
call's audio received (packet counts), and the server's CPU use printed with the result."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import run_sipp
from tests.integration.test_sip_trunk import trunk_and_server
from tests.peers.pcap_audio import rtp_stream, write_rtp_pcap

pytestmark = pytest.mark.integration
CALLS = 100
AUDIO_S = 6.0


def test_100_concurrent_calls_through_the_trunk(tmp_path: Path) -> None:
    t = np.arange(int(AUDIO_S * 8000)) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stream = rtp_stream(tone)
    pcap = write_rtp_pcap(tmp_path / "tone.pcap", stream)
    with trunk_and_server(
        tmp_path, {"+15550100": "alice"}, trunk_extra={"max_calls": CALLS + 20}, rtp_ports=600
    ) as (kam, srv):
        scn = S.answered_call(
            S.play_pcap(str(pcap)), hold_ms=int(AUDIO_S * 1000) + 500, ringing_optional=True
        )
        cpu0, wall0 = srv.cpu_seconds(), time.monotonic()
        result = run_sipp(
            tmp_path,
            scn,
            f"127.0.0.1:{kam.pstn_port}",
            calls=CALLS,
            extra=["-r", "50", "-l", str(CALLS), "-rtp_echo", "-max_socket", "2048", *S.LATE_PROVISIONAL_OK],
            timeout_s=90,
        )
        cpu_s, wall_s = srv.cpu_seconds() - cpu0, time.monotonic() - wall0
        assert result.returncode == 0, result.errors[-3000:] + result.stdout[-3000:]
        summaries = srv.wait_summaries(CALLS, 30)
    cpu_percent = 100.0 * cpu_s / wall_s
    print(
        f"\nLOAD: {CALLS} calls, {wall_s:.1f} s wall, "
        f"server CPU {cpu_s:.1f} s = {cpu_percent:.0f}% of one core"
    )
    peaks = [int(n) for n in re.findall(r"Peak was (\d+) calls", result.stdout)]
    assert peaks and max(peaks) >= CALLS, peaks  # all calls were up at the same time
    assert len(summaries) == CALLS
    caller_packets = stream.audio_packets
    short = [s["call_id"] for s in summaries if s["stats"]["received"] < caller_packets]
    assert not short, f"calls missing caller audio: {short[:5]}"
    # -rtp_echo returns our packets: beyond the caller's own, each call received ours back.
    unechoed = [s["call_id"] for s in summaries if s["stats"]["received"] - caller_packets < 100]
    assert not unechoed, f"calls whose audio did not reach the caller: {unechoed[:5]}"
