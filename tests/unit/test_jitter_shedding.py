"""Jitter buffer: excess delay in continuous audio (a phone line never sends silence) is shed by dropping
whole packets, quickly when it is large, and never below the target (so never for 30/40 ms packets whose
own granularity looks like a frame of excess). Virtual clock: a 20 ms pacer pops; the leg's FIFO for other
packet durations is modelled as in the media session."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mediaserver.jitterbuffer import FrameKind, JitterBuffer
from trunkline.mediaserver.rtp import RtpPacket

TICK_MS = 20


def stream(
    n: int, ptime_ms: int, seed: int, sigma_ms: float, burst: int = 0
) -> list[tuple[float, RtpPacket]]:
    """n packets sent every ptime_ms, 20 ms transit plus half-normal jitter (packet 0 the fastest); the
    first `burst` packets are held back and arrive together with the last of them."""
    rng = random.Random(seed)
    step = 8 * ptime_ms
    out = []
    for i in range(n):
        arrival = ptime_ms * i + 20 + (abs(rng.gauss(0, sigma_ms)) if i else 0)
        if i < burst:
            arrival = ptime_ms * burst + 20 + 0.1 * i
        out.append((arrival, RtpPacket(0, i & 0xFFFF, i * step, 7, i.to_bytes(4, "big"), i == 0)))
    return sorted(out, key=lambda a: a[0])


class Pacer:
    """The leg's loop: every 20 ms tick push what arrived, then pop while the FIFO holds less than a tick."""

    def __init__(
        self, jb: JitterBuffer, arrivals: list[tuple[float, RtpPacket]], ptime_ms: int, phase_ms: float
    ) -> None:
        self.jb, self.arrivals, self.step, self.phase_ms = jb, arrivals, 8 * ptime_ms, phase_ms
        self.arrival_ms = {int.from_bytes(p.payload, "big"): t for t, p in arrivals}
        self.played: list[int] = []
        self.waits_ms: list[float] = []  # playout − arrival of each played packet
        self.fifo = self.tick = self.i = 0

    def run_until(self, t_ms: float) -> None:
        while (now := self.phase_ms + TICK_MS * self.tick) <= t_ms:
            while self.i < len(self.arrivals) and self.arrivals[self.i][0] <= now:
                self.jb.push(self.arrivals[self.i][1], self.arrivals[self.i][0] / 1000)
                self.i += 1
            while self.fifo < 160:
                frame = self.jb.pop(now / 1000)
                if frame.kind is FrameKind.AUDIO:
                    k = int.from_bytes(frame.payload, "big")
                    self.played.append(k)
                    self.waits_ms.append(now + self.fifo / 8 - self.arrival_ms[k])
                    self.fifo += self.step
                else:
                    self.fifo += 160
            self.fifo -= 160
            self.tick += 1


@pytest.mark.parametrize("burst", [4, 10])
def test_start_burst_in_continuous_audio_is_shed_within_1_5_s(burst: int) -> None:
    """The first packets of a call arrive together (an SBC or the far end released them at once), then the
    line sends continuously: the delay the burst left is shed within 1.5 s, not over several seconds."""
    jb = JitterBuffer()
    pacer = Pacer(jb, stream(250, 20, seed=burst, sigma_ms=1.0, burst=burst), 20, phase_ms=0)
    burst_end_ms = 20 * burst + 20
    pacer.run_until(burst_end_ms + 1500)
    s = jb.stats
    # every packet of the burst but the newest few went, at the start or soon after, and nothing else
    assert burst - 3 <= s.discarded <= burst + 2 and s.late == 0 and s.concealed == 0
    assert pacer.waits_ms[-1] <= s.target_delay_ms + 25  # within a frame (and the jitter) of the target
    pacer.run_until(5000)
    s = jb.stats
    assert s.current_delay_ms <= s.target_delay_ms + 20 and s.target_delay_ms < 30
    assert pacer.played == sorted(pacer.played) and len(pacer.played) + s.discarded == s.received


@pytest.mark.parametrize(("ptime_ms", "drops"), [(20, 1), (30, 0), (40, 0)])
@pytest.mark.parametrize("phase_ms", [5, 10, 15])
def test_a_frame_of_excess_is_shed_only_where_a_whole_packet_fits(
    ptime_ms: int, drops: int, phase_ms: int
) -> None:
    """Starting 40 ms after the first packet over a 20 ms floor leaves one frame (20 ms) above the target:
    a 20 ms stream drops one packet to shed it; a 30 or 40 ms packet would take the delay below the
    target, so those streams keep every packet (over 20 s of continuous audio)."""
    jb = JitterBuffer(min_delay_ms=20.0)
    n = 20_000 // ptime_ms
    pacer = Pacer(jb, stream(n, ptime_ms, seed=ptime_ms + phase_ms, sigma_ms=4.0), ptime_ms, phase_ms)
    pacer.run_until(20_000 + 200)
    s = jb.stats
    assert (s.discarded, s.late, s.received) == (drops, 0, n)
    assert pacer.played == sorted(set(pacer.played)) and len(pacer.played) == n - drops
    excess_ms = s.current_delay_ms - s.target_delay_ms
    if drops:
        assert abs(excess_ms) < 5  # shed: at the target
    else:
        assert 10 < excess_ms < 25  # kept: a frame above it (less the 30 ms stream's 10 ms sawtooth)


@settings(deadline=None)
@given(
    ptime_ms=st.sampled_from([10, 20, 30, 40]),
    transit_ms=st.floats(0, 100),
    initial_ms=st.floats(0, 300),
    min_delay_ms=st.floats(0, 100),
    phase_ms=st.floats(0, 19.9),
)
def test_shedding_never_makes_a_steady_stream_late(
    ptime_ms: int, transit_ms: float, initial_ms: float, min_delay_ms: float, phase_ms: float
) -> None:
    """Without jitter, shedding however much excess delay never makes a packet late or concealed that a
    buffer which never drops would have played: a drop never lands the delay below what the stream needs."""
    n = 6000 // ptime_ms
    step = 8 * ptime_ms
    arrivals = [
        (ptime_ms * i + transit_ms, RtpPacket(0, i, i * step, 7, i.to_bytes(4, "big"), i == 0))
        for i in range(n)
    ]
    runs = []
    for shed_after_s in (1.0, math.inf):
        jb = JitterBuffer(min_delay_ms=min_delay_ms, initial_delay_ms=initial_ms, shed_after_s=shed_after_s)
        pacer = Pacer(jb, arrivals, ptime_ms, phase_ms)
        pacer.run_until(6000 + transit_ms + initial_ms + min_delay_ms + 100)
        s = jb.stats
        assert pacer.played == sorted(pacer.played) and len(pacer.played) + s.discarded + s.late == n
        runs.append(s)
    shedding, keeping = runs
    assert shedding.late <= keeping.late and shedding.concealed <= keeping.concealed
    assert shedding.discarded * ptime_ms <= max(initial_ms, min_delay_ms) + 20  # only the excess was shed
