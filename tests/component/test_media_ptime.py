"""A peer that packetizes 30 or 40 ms per RTP packet, over real UDP on 127.0.0.1 into a MediaEngine leg: the
consumer still gets exact 20 ms frames carrying every sample, in order.

The peer sends in real time from its own thread, as a real peer would; the test waits on engine ticks.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
from trunkline.mediaserver.engine import MediaEngine
from trunkline.mediaserver.rtp import RtpPacket

RATE = 8000
FRAME = 160


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    # 80 ms of buffering at least: scheduling hiccups of a loaded box never make a packet late
    eng = MediaEngine("127.0.0.1", 46000, 46999, max_catch_up=50, jitter_min_delay_ms=80.0)
    await eng.start()
    yield eng
    await eng.aclose()


def speechlike(samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    phase = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / RATE
    envelope = np.repeat(rng.uniform(0.3, 1.0, samples // FRAME + 1), FRAME)[:samples]
    return (3000 * envelope * sum(np.sin(k * phase) / k for k in range(1, 5))).astype(np.int16)


def send_paced(
    sock: socket.socket,
    target: tuple[str, int],
    packets: list[bytes],
    step: int,
    ptime_ms: int,
    stop: threading.Event,
) -> None:
    """The peer's packet clock, on its own thread: a stall of the engine's loop delays reading, not sending
    (arrival times are the kernel's), as with a real peer."""
    start = time.monotonic()
    for k, payload in enumerate(packets):
        if stop.wait(max(0.0, start + k * ptime_ms / 1000 - time.monotonic())):
            return
        packet = RtpPacket(0, 1000 + k, 5000 + k * step, 0xC0FFEE, payload, k == 0)
        sock.sendto(packet.serialize(), target)


@pytest.mark.parametrize("ptime_ms", [30, 40])
async def test_packets_of_other_durations_arrive_as_exact_20_ms_frames(
    engine: MediaEngine, ptime_ms: int
) -> None:
    step = RATE * ptime_ms // 1000
    count = 3000 // ptime_ms  # 3 s of audio
    wire = ulaw_encode(speechlike(count * step, seed=ptime_ms))
    packets = [wire[k * step : (k + 1) * step] for k in range(count)]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    leg = engine.open_leg("PCMU", RATE, 0, peer.getsockname())
    received: list[np.ndarray] = []

    async def consume() -> None:
        async for frame in leg.frames:
            received.append(frame.copy())

    consumer = asyncio.create_task(consume())
    stop = threading.Event()
    target = ("127.0.0.1", leg.local_port)
    sender = threading.Thread(target=send_paced, args=(peer, target, packets, step, ptime_ms, stop))
    sender.start()
    try:
        for _ in range(1000):  # until every packet was played out (20 s of media time at most)
            if leg.stats().counters.frames_audio >= count:
                break
            await asyncio.wait_for(engine.wait_ticks(1), 2.0)
        await asyncio.wait_for(engine.wait_ticks(2), 2.0)  # the consumer takes the last frames
    finally:
        stop.set()
        sender.join(5.0)
        consumer.cancel()
        peer.close()
    stats = leg.stats()
    c = stats.counters
    assert c.received == count and c.decode_errors == 0
    assert c.frames_audio == count, stats.jitter_buffer  # every packet decoded and played
    assert stats.jitter_buffer.late == 0 and stats.jitter_buffer.lost == 0
    assert received and all(frame.shape == (FRAME,) for frame in received)
    played = np.concatenate(received)
    start = next(i for i, frame in enumerate(received) if frame.any()) * FRAME
    decoded = ulaw_decode(wire)
    assert np.array_equal(played[start : start + len(decoded)], decoded)  # every sample, in order, once
