"""Two legs of one MediaEngine exchange real RTP on 127.0.0.1 through an impairing relay.

Every wait is on a condition (pacer ticks, stream items, relay datagrams) with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from tests.component.impair_relay import Impairment, ImpairRelay
from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
from trunkline.mediaserver.engine import MediaEngine
from trunkline.mediaserver.leg import Leg
from trunkline.mediaserver.outbound import PlayoutPosition
from trunkline.mediaserver.ports import PortsExhausted
from trunkline.mediaserver.rtp import RtpPacket, parse_rtp

RATE = 8000
FRAME = 160
SILENCE = b"\xff" * FRAME  # µ-law encoding of zeros: what an idle leg sends


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    # a generous catch-up bound: a loaded CI box may stall the loop, and every tick must still run
    eng = MediaEngine("127.0.0.1", 43000, 43999, max_catch_up=50)
    await eng.start()
    yield eng
    await eng.aclose()


@pytest.fixture
async def relay_factory() -> AsyncIterator[Callable[..., object]]:
    relays: list[ImpairRelay] = []

    async def make(a_to_b: Impairment | None = None) -> ImpairRelay:
        relay = ImpairRelay(a_to_b)
        await relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.aclose()


async def pair(engine: MediaEngine, relay: ImpairRelay, **kwargs: object) -> tuple[Leg, Leg]:
    a = engine.open_leg("PCMU", RATE, 0, relay.a_address, **kwargs)  # type: ignore[arg-type]
    b = engine.open_leg("PCMU", RATE, 0, relay.b_address, **kwargs)  # type: ignore[arg-type]
    relay.set_peers(("127.0.0.1", a.local_port), ("127.0.0.1", b.local_port))
    return a, b


def speechlike(seconds: float, seed: int = 3) -> np.ndarray:
    """Speech-like test audio: a few harmonics with a random envelope, unique enough to correlate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.repeat(rng.uniform(0.4, 1.0, len(t) // FRAME + 1), FRAME)[: len(t)]
    return (7000 * tone * envelope / 2).astype(np.int16)


async def until(engine: MediaEngine, condition: Callable[[], bool], ticks: int = 250) -> None:
    """Wait tick by tick until condition() holds; fail after `ticks` ticks (5 s of media time)."""
    for _ in range(ticks):
        if condition():
            return
        await asyncio.wait_for(engine.wait_ticks(1), 2.0)
    assert condition(), "condition not reached in time"


def normalized_correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y) + 1e-9))


def audio_packets(relay: ImpairRelay) -> list[RtpPacket]:
    return [p for p in (parse_rtp(r.data) for r in relay.records("a")) if p.payload != SILENCE]


@pytest.fixture
async def steady_engine() -> AsyncIterator[MediaEngine]:
    """A jitter buffer that never plans less than 80 ms: the relay's jitter (and a loaded box's scheduling
    hiccups) never make a packet late, so only the packets the relay held on purpose are."""
    eng = MediaEngine("127.0.0.1", 45000, 45999, max_catch_up=50, jitter_min_delay_ms=80.0)
    await eng.start()
    yield eng
    await eng.aclose()


async def test_impaired_stream_plays_continuously_and_counts_match(
    steady_engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    engine = steady_engine
    impairment = Impairment(loss=0.03, late=0.02, duplicate=0.03, jitter_s=0.012, seed=11)
    relay: ImpairRelay = await relay_factory(impairment)  # type: ignore[misc]
    a, b = await pair(engine, relay)
    ticks_at_open = engine.ticker_stats().ticks
    signal = speechlike(4.0)
    received: list[np.ndarray] = []

    async def consume() -> None:
        async for frame in b.frames:
            received.append(frame.copy())

    consumer = asyncio.create_task(consume())
    a.play("u1", signal, RATE, final=True)
    done = await a.playout.get(timeout_s=10)
    assert done == PlayoutPosition("u1", len(signal), len(signal), True)
    relay.stop_impairing("a")
    stopped_at = len(relay.records("a"))
    # the window closes once clean packets follow the impaired stretch and every held packet was delivered
    await until(engine, lambda: len(relay.records("a")) >= stopped_at + 10 and relay.pending == 0)
    a.hold()  # freeze the stream so the counters can be compared with the relay's
    await until(engine, lambda: b.stats().counters.received == relay.forwarded("a"))

    records = relay.records("a")
    drops = sum(r.action == "drop" for r in records)
    late = sum(r.action == "late" for r in records)
    dups = sum(r.action == "duplicate" for r in records)
    assert drops >= 3 and late >= 2 and dups >= 3  # the seeded plan really impaired the stream
    stats = b.stats()
    c, jb = stats.counters, stats.jitter_buffer
    assert c.received == relay.forwarded("a")  # every datagram the relay delivered, no more
    assert c.malformed == c.foreign_source == 0
    assert stats.rtp_lost == drops
    assert stats.rtp_duplicates == dups
    assert jb.lost == drops
    assert jb.late == late
    assert jb.duplicate == dups
    assert c.frames_concealed == jb.concealed
    assert drops + late - 2 <= c.frames_concealed <= drops + late + 2  # each hole concealed (± delay moves)

    # one frame per tick, none stalled or dropped
    frames_total = c.frames_audio + c.frames_concealed + c.frames_silence
    assert frames_total == engine.ticker_stats().ticks - ticks_at_open
    assert c.inbound_dropped == 0
    consumer.cancel()
    # the jitter buffer may move its delay by whole frames (and conceals holes): align piece by piece
    out = np.concatenate(received).astype(np.float64)
    ref = ulaw_decode(ulaw_encode(signal)).astype(np.float64)
    piece = 25 * FRAME
    scores = []
    for start in range(0, len(ref) - piece + 1, piece):
        target = ref[start : start + piece]
        lags = range(0, len(out) - piece, FRAME)
        scores.append(max(normalized_correlation(out[lag : lag + piece], target) for lag in lags))
    assert sorted(scores)[len(scores) // 2] > 0.95, scores  # the median piece matches almost exactly
    assert min(scores) > 0.5, scores


async def test_foreign_and_garbage_are_counted_and_dropped(
    engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a, b = await pair(engine, relay)
    a.play("u1", speechlike(3.0), RATE, final=True)
    await until(engine, lambda: b.stats().counters.frames_audio >= 5)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        for i in range(20):  # valid RTP, wrong source
            stranger.sendto(
                RtpPacket(0, 9000 + i, 160 * i, 0xBAD, SILENCE).serialize(), ("127.0.0.1", b.local_port)
            )
    finally:
        stranger.close()
    garbage = [
        b"",
        b"\x80",
        bytes(11),
        b"\x40" + bytes(20),
        b"\xa0" + bytes(11) + b"\xff",
        b"\x8f" + bytes(12),
    ]
    for datagram in garbage:  # from the right address, but not RTP
        relay.inject("a", datagram)
    await until(engine, lambda: b.stats().counters.malformed == len(garbage))
    await until(engine, lambda: b.stats().counters.foreign_source == 20)
    audio_before = b.stats().counters.frames_audio
    await until(engine, lambda: b.stats().counters.frames_audio >= audio_before + 10)  # the call goes on
    a.hold()
    await until(engine, lambda: b.stats().counters.received == relay.forwarded("a"))
    assert b.stats().counters.malformed == len(garbage)
    assert b.stats().counters.foreign_source == 20
    assert b.stats().jitter_buffer.ssrc_changes == 0  # the stranger's stream never reached the buffer


async def test_flush_mid_utterance_reports_what_the_peer_received(
    engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a, _ = await pair(engine, relay)
    signal = speechlike(3.0)
    a.play("u1", signal, RATE, final=True)
    await until(engine, lambda: len(audio_packets(relay)) >= 25)
    positions = a.flush()
    assert len(positions) == 1 and positions[0].utterance_id == "u1" and not positions[0].completed
    flushed_at = len(relay.records("a"))
    await until(engine, lambda: len(relay.records("a")) >= flushed_at + 2)  # silence follows at once
    sent_audio = audio_packets(relay)
    assert positions[0] == PlayoutPosition("u1", len(sent_audio) * FRAME, len(signal), False)
    assert parse_rtp(relay.records("a")[-1].data).payload == SILENCE
    assert sent_audio[0].marker  # the talkspurt started with the marker bit
    expected = ulaw_encode(signal[: len(sent_audio) * FRAME])
    assert b"".join(p.payload for p in sent_audio) == expected  # byte-exact, in order
    assert a.playout.drain() == []  # a flushed utterance never reports completion


async def test_hold_stops_our_rtp_and_unhold_resumes_it(
    engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a, b = await pair(engine, relay)
    a.play("u1", speechlike(3.0), RATE, final=True)
    await until(engine, lambda: len(audio_packets(relay)) >= 5)
    a.hold()
    await engine.wait_ticks(2)  # packets sent before hold() have reached the relay
    held_count = len(relay.records("a"))
    played = a.played("u1")
    await engine.wait_ticks(15)
    assert len(relay.records("a")) == held_count  # nothing at all on the wire while held
    assert a.played("u1") == played  # the position is kept
    assert b.stats().counters.received > 0
    last = parse_rtp(relay.records("a")[-1].data)
    a.unhold()
    await until(engine, lambda: len(relay.records("a")) > held_count)
    first = parse_rtp(relay.records("a")[held_count].data)
    assert first.marker
    assert first.sequence_number == (last.sequence_number + 1) & 0xFFFF
    assert (first.timestamp - last.timestamp) & 0xFFFFFFFF >= 15 * FRAME  # the clock ran on during hold
    assert first.payload != SILENCE  # the utterance continues where it stopped


async def test_dtmf_both_ways(engine: MediaEngine, relay_factory: Callable[..., object]) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a, b = await pair(engine, relay, dtmf_payload_type=101)
    a.send_dtmf("7", duration_ms=100)
    digit = await b.dtmf.get(timeout_s=5)
    assert (digit.digit, digit.duration_ms, digit.source) == ("7", 100, "rfc4733")
    b.send_dtmf("#", duration_ms=60)
    digit = await a.dtmf.get(timeout_s=5)
    assert (digit.digit, digit.duration_ms) == ("#", 60)
    assert a.stats().counters.dtmf_sent == 1
    assert b.stats().counters.dtmf_packets >= 4


async def test_learned_remote_is_fixed_by_the_first_valid_packet(
    engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a = engine.open_leg("PCMU", RATE, 0, relay.a_address)
    b = engine.open_leg("PCMU", RATE, 0, None, learn_remote=True)  # behind NAT: the SDP address is useless
    relay.set_peers(("127.0.0.1", a.local_port), ("127.0.0.1", b.local_port))
    relay.inject("a", b"junk")  # malformed: must not be learned
    await until(engine, lambda: b.remote is not None)
    assert b.remote == relay.b_address
    assert b.stats().counters.malformed == 1
    await until(engine, lambda: a.stats().counters.received >= 5)  # B now sends back through the relay
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.sendto(RtpPacket(0, 1, 160, 7, SILENCE).serialize(), ("127.0.0.1", b.local_port))
    finally:
        stranger.close()
    await until(engine, lambda: b.stats().counters.foreign_source == 1)
    assert b.remote == relay.b_address


async def test_slow_consumer_is_bounded(engine: MediaEngine, relay_factory: Callable[..., object]) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    _, b = await pair(engine, relay)  # nobody reads b.frames
    await until(engine, lambda: b.stats().counters.inbound_dropped >= 20)
    assert len(b.frames) == 50
    frames = b.frames.drain()
    assert len(frames) == 50 and all(f.shape == (FRAME,) for f in frames)
    assert b.last_rtp_received_at is not None


async def test_g722_legs_carry_wideband_audio(
    engine: MediaEngine, relay_factory: Callable[..., object]
) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    a = engine.open_leg("G722", 8000, 9, relay.a_address)
    b = engine.open_leg("G722", 8000, 9, relay.b_address)
    relay.set_peers(("127.0.0.1", a.local_port), ("127.0.0.1", b.local_port))
    assert (a.sample_rate_hz, a.frame_samples) == (16000, 320)
    t = np.arange(16000) / 16000
    signal = (8000 * np.sin(2 * np.pi * 5000 * t)).astype(np.int16)  # above the narrowband limit
    a.play("w", signal, 16000, final=True)
    await a.playout.get(timeout_s=5)
    await engine.wait_ticks(10)
    frames = b.frames.drain()
    assert all(f.shape == (320,) for f in frames)
    out = np.concatenate(frames).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * 16000 / len(out)
    assert abs(peak_hz - 5000) < 50  # a 5 kHz tone survives: the path is wideband end to end
    sent = [parse_rtp(r.data) for r in relay.records("a")]
    assert all(p.payload_type == 9 and len(p.payload) == 160 for p in sent)
    steps = {(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in itertools.pairwise(sent)}
    assert steps == {160}  # RFC 3551: the G.722 RTP clock runs at 8 kHz


async def test_ports_exhaust_with_a_typed_error_and_come_back() -> None:
    eng = MediaEngine("127.0.0.1", 44100, 44107)
    await eng.start()
    try:
        legs = []
        with pytest.raises(PortsExhausted):
            for _ in range(5):
                legs.append(eng.open_leg("PCMU", RATE, 0))
        assert 1 <= len(legs) <= 4
        legs[0].close()
        again = eng.open_leg("PCMA", RATE, 8)
        assert again.local_port % 2 == 0
    finally:
        await eng.aclose()


async def test_closed_leg_ends_its_streams(engine: MediaEngine, relay_factory: Callable[..., object]) -> None:
    relay: ImpairRelay = await relay_factory()  # type: ignore[misc]
    _, b = await pair(engine, relay)
    waiter = asyncio.create_task(b.dtmf.get(timeout_s=5))
    await engine.wait_ticks(1)
    b.close()
    b.close()
    with pytest.raises(StopAsyncIteration):
        await waiter
    assert b not in engine.legs
