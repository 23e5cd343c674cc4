"""A leg opened for our multi-codec offer takes the codec the answer chose, before media flows: packets go
out with the new payload type and encoding, packets in it are decoded at its rate; once media flowed the
codec is fixed."""

from __future__ import annotations

import random

import numpy as np
import pytest

from trunkline.codecs.g711 import alaw_encode
from trunkline.codecs.registry import create_codec
from trunkline.mediaserver.rtp import RtpPacket, parse_rtp
from trunkline.mediaserver.session import RtpSession
from trunkline.mediaserver.tick import run_tick

REMOTE = ("127.0.0.1", 40000)


def offer_leg() -> RtpSession:
    """What LegAdapter.open_for_offer builds: the first codec, no remote until the answer."""
    return RtpSession(create_codec("PCMU", 8000), 0, dtmf_payload_type=101, rng=random.Random(3))


def pcm(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, n).astype(np.int16)


def test_pcma_answer_sends_and_hears_pcma() -> None:
    s = offer_leg()
    for tick in range(3):  # the pacer runs before the answer: silence frames of the old codec pile up
        run_tick([s], tick * 0.02, tick)
    assert len(s.inbound) == 3
    s.set_codec(create_codec("PCMA", 8000), 8, 96)
    s.set_remote(REMOTE)
    assert len(s.inbound) == 0 and (s.payload_type, s.dtmf_payload_type) == (8, 96)

    audio = pcm(160)
    s.outbound.enqueue("u", audio, final=True)
    (out,) = run_tick([s], 0.1, 5)
    assert out is not None
    packet = parse_rtp(out)
    assert (packet.payload_type, packet.payload) == (8, alaw_encode(audio))

    sent = pcm(160, seed=2)
    s.receive(RtpPacket(8, 7, 1120, 55, alaw_encode(sent), True).serialize(), REMOTE, 0.12)
    for tick in range(6, 16):  # the jitter buffer plays it out after its delay
        run_tick([s], tick * 0.02, tick)
    assert s.counters().unknown_payload_type == 0 and s.counters().frames_audio == 1
    error = min(int(np.max(np.abs(f.astype(int) - sent.astype(int)))) for f in s.inbound)
    assert error < 600  # A-law quantisation, not noise


def test_g722_answer_moves_the_leg_to_16_khz() -> None:
    s = offer_leg()
    s.set_codec(create_codec("G722", 8000), 9, 101)
    assert (s.sample_rate_hz, s.frame_samples, s.clock_rate_hz, s.ts_step) == (16000, 320, 8000, 160)
    s.set_remote(REMOTE)
    (out,) = run_tick([s], 0.0, 0)
    assert out is not None and parse_rtp(out).payload_type == 9 and len(parse_rtp(out).payload) == 160


def test_the_codec_is_fixed_once_media_flowed() -> None:
    s = offer_leg()
    s.set_remote(REMOTE)
    s.receive(RtpPacket(0, 1, 160, 55, bytes(160), True).serialize(), REMOTE, 0.0)
    with pytest.raises(RuntimeError):
        s.set_codec(create_codec("PCMA", 8000), 8, 101)
    assert s.payload_type == 0
