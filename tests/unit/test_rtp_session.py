"""The pure leg session and pacer tick, in virtual time: source filtering, routing, packetizing, playout."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
from trunkline.codecs.registry import create_codec
from trunkline.mediaserver.dtmf import encode_digit
from trunkline.mediaserver.jitterbuffer import JitterBuffer
from trunkline.mediaserver.plc import Concealer
from trunkline.mediaserver.rtp import RtpPacket, parse_rtp
from trunkline.mediaserver.session import RtpSession
from trunkline.mediaserver.tick import run_tick

REMOTE = ("127.0.0.1", 40000)
FRAME = 160


def session(codec: str = "PCMU", pt: int = 0, **kwargs: object) -> RtpSession:
    kwargs.setdefault("remote", REMOTE)
    return RtpSession(create_codec(codec, 8000), pt, rng=random.Random(5), **kwargs)  # type: ignore[arg-type]


def rtp(
    seq: int, payload: bytes, pt: int = 0, marker: bool = False, ssrc: int = 99, ts: int | None = None
) -> bytes:
    ts = seq * FRAME if ts is None else ts
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker).serialize()


def tone(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-8000, 8000, n).astype(np.int16)


def test_foreign_and_malformed_datagrams_are_counted_and_dropped() -> None:
    s = session()
    s.receive(rtp(1, bytes(FRAME)), ("127.0.0.1", 40001), 0.0)  # wrong port
    s.receive(rtp(1, bytes(FRAME)), ("127.0.0.2", 40000), 0.0)  # wrong host
    s.receive(b"\x00" * 20, REMOTE, 0.0)  # version 0
    s.receive(b"", REMOTE, 0.0)
    c = s.counters()
    assert (c.foreign_source, c.malformed, c.received) == (2, 2, 0)
    assert s.last_received_at is None
    s.receive(rtp(1, bytes(FRAME)), REMOTE, 1.5)
    assert s.counters().received == 1 and s.last_received_at == 1.5


def test_ipv6_source_matches_on_host_and_port() -> None:
    s = session(remote=("::1", 40000))
    s.receive(rtp(1, bytes(FRAME)), ("::1", 40000, 0, 0), 0.0)
    assert s.counters().received == 1


def test_learning_takes_the_first_valid_packet_only() -> None:
    s = session(remote=None, learn_remote=True)
    s.receive(b"junk", ("127.0.0.1", 5000), 0.0)  # malformed: not learned
    assert s.remote is None
    s.receive(rtp(1, bytes(FRAME)), ("127.0.0.1", 5002), 0.0)
    assert s.remote == ("127.0.0.1", 5002)
    s.receive(rtp(2, bytes(FRAME)), ("127.0.0.1", 5004), 0.0)
    assert s.counters().foreign_source == 1


def test_payload_types_are_routed() -> None:
    s = session(dtmf_payload_type=101)
    now = 0.0
    frames = encode_digit("9", duration_ms=60)
    for i, frame in enumerate(frames):
        s.receive(rtp(10 + i, frame.payload, pt=101, marker=frame.marker, ts=1600), REMOTE, now)
        now += 0.02
    s.receive(rtp(20, b"\x40", pt=13), REMOTE, now)  # comfort noise
    s.receive(rtp(21, bytes(FRAME), pt=18), REMOTE, now)  # G.729: not negotiated
    c = s.counters()
    assert (c.dtmf_packets, c.comfort_noise, c.unknown_payload_type, c.audio_packets) == (
        len(frames),
        1,
        1,
        0,
    )
    assert [d.digit for d in s.dtmf_in] == ["9"]


def test_idle_leg_sends_silence_with_continuous_seq_and_timestamps() -> None:
    s = session()
    packets = [parse_rtp(run_tick([s], 0.02 * t, t)[0] or b"") for t in range(5)]
    assert [p.payload for p in packets] == [ulaw_encode(np.zeros(FRAME, np.int16))] * 5
    assert [p.marker for p in packets] == [True, False, False, False, False]  # only the stream's start
    assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == FRAME for a, b in itertools.pairwise(packets))
    assert len({p.ssrc for p in packets}) == 1


def test_audio_is_sent_byte_exact_with_marker_on_each_talkspurt() -> None:
    s = session()
    pcm = tone(3 * FRAME)
    run_tick([s], 0.0, 0)  # an idle tick first
    s.outbound.enqueue("u", pcm, final=True)
    sent = [parse_rtp(run_tick([s], 0.02 * t, t)[0] or b"") for t in range(1, 6)]
    assert b"".join(p.payload for p in sent[:3]) == ulaw_encode(pcm)
    assert [p.marker for p in sent] == [True, False, False, False, False]
    assert s.outbound.take_finished()[0].samples_played == 3 * FRAME
    s.outbound.enqueue("v", pcm[:FRAME], final=True)
    again = parse_rtp(run_tick([s], 0.12, 6)[0] or b"")
    assert again.marker  # a new talkspurt after silence


def test_held_leg_sends_nothing_and_resumes_with_marker() -> None:
    s = session()
    s.outbound.enqueue("u", tone(10 * FRAME))
    first = parse_rtp(run_tick([s], 0.0, 0)[0] or b"")
    s.hold()
    assert run_tick([s], 0.02, 1) == [None]
    assert run_tick([s], 0.04, 2) == [None]
    s.unhold()
    resumed = parse_rtp(run_tick([s], 0.06, 3)[0] or b"")
    assert resumed.marker
    assert resumed.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert (resumed.timestamp - first.timestamp) & 0xFFFFFFFF == 3 * FRAME  # the clock ran on
    assert s.outbound.played("u").samples_played == 2 * FRAME  # type: ignore[union-attr]


def test_leg_without_remote_sends_nothing() -> None:
    s = session(remote=None)
    assert run_tick([s], 0.0, 0) == [None]


def test_dtmf_replaces_audio_while_it_lasts() -> None:
    s = session(dtmf_payload_type=101)
    s.outbound.enqueue("u", tone(20 * FRAME))
    s.send_dtmf("4", duration_ms=60)
    packets = [parse_rtp(run_tick([s], 0.02 * t, t)[0] or b"") for t in range(8)]
    events = [p for p in packets if p.payload_type == 101]
    assert len(events) == len(encode_digit("4", duration_ms=60))
    assert len({p.timestamp for p in events}) == 1  # one event, one start timestamp
    assert events[0].marker
    audio = [p for p in packets if p.payload_type == 0]
    assert audio and audio[0].marker  # audio after the event starts a new talkspurt
    assert s.counters().dtmf_sent == 1
    with pytest.raises(ValueError):
        session().send_dtmf("1")


def test_playout_decodes_batched_exactly_like_one_by_one() -> None:
    legs = [session() for _ in range(3)] + [session("PCMA", 8)]
    payloads = [ulaw_encode(tone(FRAME, seed=i)) for i in range(3)]
    now = 0.0
    for t in range(12):  # a steady stream into every leg, virtual time
        for i, s in enumerate(legs):
            pt = 8 if s.payload_type == 8 else 0
            s.receive(rtp(t, payloads[i % 3], pt=pt, ssrc=7 + i), REMOTE, now)
        run_tick(legs, now + 0.001, t)
        now += 0.02
    for i, s in enumerate(legs[:3]):
        frames = list(s.inbound)
        audio = [f for f in frames if f.any()]
        assert audio, "the jitter buffer never started"
        assert all(np.array_equal(f, ulaw_decode(payloads[i])) for f in audio)
        assert all(not f.flags.writeable for f in audio)
        c = s.counters()
        assert c.frames_audio == len(audio)
        assert c.frames_audio + c.frames_silence + c.frames_concealed == 12


def test_a_missing_packet_is_concealed_from_recent_audio() -> None:
    # a buffer that holds its delay (no target below it), so the hole is played out, not skipped
    s = session(jitter=JitterBuffer(8000, 20, min_delay_ms=40.0, initial_delay_ms=40.0))
    pcm = (6000 * np.sin(2 * np.pi * 200 * np.arange(40 * FRAME) / 8000)).astype(np.int16)
    payloads = [ulaw_encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(40)]
    for t in range(40):
        if t != 30:
            s.receive(rtp(t, payloads[t]), REMOTE, 0.02 * t)
        run_tick([s], 0.02 * t + 0.015, t)
    c = s.counters()
    assert c.frames_concealed == 1
    assert s.jitter_stats().lost == 1
    concealed = [f for f in s.inbound][-40:]
    energies = [float(np.abs(f.astype(np.int32)).mean()) for f in concealed]
    assert min(e for e in energies[-12:]) > 1000  # the hole was filled with signal, not silence


def test_the_frame_after_a_loss_is_cross_faded_with_the_concealment() -> None:
    s = session(jitter=JitterBuffer(8000, 20, min_delay_ms=40.0, initial_delay_ms=40.0))
    pcm = (6000 * np.sin(2 * np.pi * 170 * np.arange(40 * FRAME) / 8000)).astype(np.int16)
    payloads = [ulaw_encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(40)]
    delivered: list[np.ndarray] = []
    for t in range(40):
        if t != 20:
            s.receive(rtp(t, payloads[t]), REMOTE, 0.02 * t)
        run_tick([s], 0.02 * t + 0.015, t)
        delivered.extend(s.inbound)
        s.inbound.clear()
    assert s.counters().frames_concealed == 1
    start = next(i for i, f in enumerate(delivered) if f.any())
    hole = start + 20
    # what the concealer makes of it, given the audio played before the hole
    reference = Concealer(8000, FRAME)
    for frame in delivered[start:hole]:
        reference.good(frame)
    assert np.array_equal(delivered[hole], reference.conceal())
    after = ulaw_decode(payloads[21])
    assert np.array_equal(delivered[hole + 1], reference.good(after))  # the overlap-add is what plays
    assert not np.array_equal(delivered[hole + 1][:16], after[:16])
    assert np.array_equal(delivered[hole + 1][-64:], after[-64:])  # past the overlap: the packet's audio


def test_a_40_ms_packet_after_a_loss_is_cross_faded_too() -> None:
    """With 40 ms packets the FIFO runs empty between packets, so the packet after a loss starts it afresh:
    that packet must still be overlap-added with the concealment and counted."""
    s = session(jitter=JitterBuffer(8000, 20, min_delay_ms=60.0, initial_delay_ms=60.0))
    step = 2 * FRAME
    pcm = (6000 * np.sin(2 * np.pi * 170 * np.arange(30 * step) / 8000)).astype(np.int16)
    payloads = [ulaw_encode(pcm[k * step : (k + 1) * step]) for k in range(30)]
    delivered: list[np.ndarray] = []
    for t in range(70):
        if t % 2 == 0 and t // 2 not in (12, 30, 31, 32, 33, 34):
            s.receive(rtp(t // 2, payloads[t // 2], ts=t // 2 * step), REMOTE, 0.02 * t + 0.005)
        run_tick([s], 0.02 * t + 0.01, t)
        delivered.extend(s.inbound)
        s.inbound.clear()
    c = s.counters()
    assert c.frames_audio == 29 and c.decode_errors == 0  # every packet (the end of the stream is concealed)
    start = next(i for i, f in enumerate(delivered) if f.any())
    hole = start + 24
    reference = Concealer(8000, FRAME)
    for frame in delivered[start:hole]:
        reference.good(frame)
    assert np.array_equal(delivered[hole], reference.conceal())
    assert np.array_equal(delivered[hole + 1], reference.conceal())
    after = ulaw_decode(payloads[13])
    faded = reference.good(after)
    assert np.array_equal(np.concatenate(delivered[hole + 2 : hole + 4]), faded)
    assert not np.array_equal(faded[:16], after[:16])


@pytest.mark.parametrize("ptime_ms", [10, 30, 40])
def test_other_packet_durations_are_cut_into_20_ms_frames(ptime_ms: int) -> None:
    s = session(inbound_max_frames=500)
    step = 8 * ptime_ms
    audio = ulaw_encode(tone(8000 + 4 * step, seed=ptime_ms))
    packets = [audio[k : k + step] for k in range(0, len(audio) - step + 1, step)]
    sent = 0
    for t in range(80):
        now = 0.02 * t
        while sent < len(packets) and sent * ptime_ms / 1000 + 0.005 <= now:  # 5 ms transit
            s.receive(rtp(sent, packets[sent], ts=sent * step), REMOTE, sent * ptime_ms / 1000 + 0.005)
            sent += 1
        run_tick([s], now, t)
    frames = list(s.inbound)
    assert len(frames) == 80 and all(f.size == FRAME for f in frames)  # one 20 ms frame per tick
    played = np.concatenate(frames)
    start = next(i for i, f in enumerate(frames) if f.any()) * FRAME
    decoded = ulaw_decode(b"".join(packets))
    assert np.array_equal(played[start : start + len(decoded)], decoded)  # every packet, in order, whole
    c = s.counters()
    assert c.frames_audio == len(packets) and c.decode_errors == 0
    assert s.jitter_stats().late == 0 and c.frames_concealed <= 3  # (after the stream's end)


@given(st.integers(min_value=1, max_value=120))
def test_inbound_queue_is_bounded_and_drops_oldest(ticks: int) -> None:
    s = session(inbound_max_frames=10)
    for t in range(ticks):
        run_tick([s], 0.02 * t, t)
    c = s.counters()
    assert len(s.inbound) == min(ticks, 10)
    assert c.inbound_dropped == max(0, ticks - 10)
