"""Seeded one-way network traces for the jitter-buffer benchmark: 60 s of 20 ms G.711 packets (3000 each).

Each trace is a list of `TracePacket(send_time_s, arrival_time_s or None when lost, seq, ts)` in send order;
the sender sends every 20 ms from t = 0 exactly (no clock drift).

moderate (seed 1): one-way delay = 60 ms + N(0, σ = 12 ms), independent per packet, floored at 20 ms (the
    propagation delay); it spans 22–99 ms. Neighbours differ by N(0, 17 ms), so 12% of them arrive swapped.
    No loss: this trace measures jitter handling alone. The sequence number starts at 64000 and wraps at
    65535 half-way through.
spiky (seed 2): one-way delay = 40 ms + N(0, σ = 4 ms) (floored at 28 ms) plus delay spikes. Spikes start
    as a Poisson process, on average every 10 s; each jumps the delay by H ~ U(100, 300) ms and then drains:
    the extra delay falls by 18 ms per 20 ms packet, so the queued packets arrive in a bunch 2 ms apart.
    Loss: 1% independent random loss plus loss bursts (a burst starts with probability 0.2% per packet and
    drops U{2..6} packets in a row). Timestamps start near 2^32 and wrap early. Seed 2 draws 5 spikes
    (202–265 ms) and loses 1.4% of the packets.

For scale, an oracle with a fixed playout delay chosen in hindsight (and no 20 ms tick grid): moderate needs
30 ms of added delay for 0.4% late packets; spiky leaves 2.0% late at 20 ms added, 1.8% at 40 ms, 1.4% at
80 ms — its spikes cannot be covered cheaply, only not over-reacted to. pjmedia's buffer measured 43 ms with
9.1% concealed-or-dropped on a moderate trace and 100 ms with 5.2% on a spiky one.
"""

from __future__ import annotations

import random
from typing import NamedTuple

PACKET_INTERVAL_S = 0.020
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
DURATION_S = 60.0
SPIKE_INTERVAL_S = 10.0  # mean time between spike starts (Poisson)


class TracePacket(NamedTuple):
    """One packet of a trace; arrival_time_s is None when the network lost it."""

    send_time_s: float
    arrival_time_s: float | None
    seq: int
    ts: int


def _packets(n: int, seq0: int, ts0: int, delays: list[float], lost: list[bool]) -> list[TracePacket]:
    out = []
    for i in range(n):
        send = i * PACKET_INTERVAL_S
        arrival = None if lost[i] else send + delays[i]
        out.append(
            TracePacket(send, arrival, (seq0 + i) & 0xFFFF, (ts0 + i * SAMPLES_PER_PACKET) & 0xFFFFFFFF)
        )
    return out


def moderate(seed: int = 1, duration_s: float = DURATION_S) -> list[TracePacket]:
    """Gaussian jitter, σ = 12 ms, independent per packet (so it also reorders); no loss."""
    rng = random.Random(seed)
    n = round(duration_s / PACKET_INTERVAL_S)
    delays = [max(0.020, 0.060 + rng.gauss(0.0, 0.012)) for _ in range(n)]
    return _packets(n, 64000, rng.getrandbits(32), delays, [False] * n)


def _spike_extra(n: int, rng: random.Random) -> list[float]:
    """Extra queueing delay per packet: Poisson spike starts, each draining at 18 ms per packet."""
    extra = [0.0] * n
    t = rng.expovariate(1 / SPIKE_INTERVAL_S)
    while t < n * PACKET_INTERVAL_S:
        height = rng.uniform(0.100, 0.300)
        i = int(t / PACKET_INTERVAL_S) + 1
        step = 0
        while i < n and height - step * 0.018 > 0:
            extra[i] = max(extra[i], height - step * 0.018)
            i += 1
            step += 1
        t += rng.expovariate(1 / SPIKE_INTERVAL_S)
    return extra


def _loss(n: int, rng: random.Random) -> list[bool]:
    lost = [rng.random() < 0.01 for _ in range(n)]
    i = 0
    while i < n:
        if rng.random() < 0.002:
            length = rng.randint(2, 6)
            for j in range(i, min(n, i + length)):
                lost[j] = True
            i += length
        i += 1
    return lost


def spiky(seed: int = 2, duration_s: float = DURATION_S) -> list[TracePacket]:
    """Small jitter plus draining 100–300 ms delay spikes, 1% random loss and loss bursts."""
    rng = random.Random(seed)
    n = round(duration_s / PACKET_INTERVAL_S)
    base = [max(0.028, 0.040 + rng.gauss(0.0, 0.004)) for _ in range(n)]
    extra = _spike_extra(n, rng)
    lost = _loss(n, rng)
    delays = [b + e for b, e in zip(base, extra, strict=True)]
    return _packets(n, rng.getrandbits(16), 0xFFFFFFFF - 50_000, delays, lost)


TRACES = {"moderate": moderate, "spiky": spiky}
