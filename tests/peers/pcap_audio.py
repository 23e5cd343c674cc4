"""Build RTP captures for SIPp's `play_pcap_audio`: 8 kHz speech as PCMU packets every 20 ms, with RFC 4733
telephone-events replacing the audio while a key is held. SIPp rewrites the addresses from the SDP, so the
ones in the file only need to be well-formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trunkline.codecs.g711 import ulaw_encode
from trunkline.mediaserver.dtmf import encode_digit
from trunkline.mediaserver.pcap import write_pcap
from trunkline.mediaserver.rtp import RtpPacket

SAMPLE_RATE_HZ = 8000
PACKET_MS = 20
SAMPLES_PER_PACKET = SAMPLE_RATE_HZ * PACKET_MS // 1000
PCMU_PT = 0


@dataclass(frozen=True, slots=True)
class DigitAt:
    """Key `digit` pressed `at_s` seconds into the stream for `duration_ms`."""

    digit: str
    at_s: float
    duration_ms: int = 100


@dataclass(frozen=True, slots=True)
class RtpStream:
    """What a capture contains, to check against what a peer received."""

    packets: tuple[RtpPacket, ...]
    times_s: tuple[float, ...]
    audio_packets: int
    event_packets: int


def rtp_stream(
    pcm: np.ndarray,
    digits: Sequence[DigitAt] = (),
    *,
    ssrc: int = 0x5EED1234,
    event_pt: int = 101,
    first_seq: int = 1000,
    first_ts: int = 0,
) -> RtpStream:
    """PCMU packets for 8 kHz mono `pcm`; during each digit its telephone-event frames take the slots."""
    slots = -(-len(pcm) // SAMPLES_PER_PACKET)
    events: dict[int, RtpPacket] = {}
    for digit in digits:
        start = round(digit.at_s * 1000 / PACKET_MS)
        for k, frame in enumerate(encode_digit(digit.digit, digit.duration_ms, SAMPLE_RATE_HZ, PACKET_MS)):
            ts = first_ts + start * SAMPLES_PER_PACKET + frame.timestamp_offset
            events[start + k] = RtpPacket(event_pt, 0, ts & 0xFFFFFFFF, ssrc, frame.payload, frame.marker)
    slots = max(slots, max(events, default=-1) + 1)
    padded = np.zeros(slots * SAMPLES_PER_PACKET, dtype=np.int16)
    padded[: len(pcm)] = pcm
    payload = ulaw_encode(padded)
    packets, times = [], []
    for slot in range(slots):
        seq = (first_seq + slot) & 0xFFFF
        if slot in events:
            event = events[slot]
            packet = RtpPacket(event.payload_type, seq, event.timestamp, ssrc, event.payload, event.marker)
        else:
            chunk = payload[slot * SAMPLES_PER_PACKET : (slot + 1) * SAMPLES_PER_PACKET]
            ts = (first_ts + slot * SAMPLES_PER_PACKET) & 0xFFFFFFFF
            packet = RtpPacket(PCMU_PT, seq, ts, ssrc, chunk, marker=slot == 0)
        packets.append(packet)
        times.append(slot * PACKET_MS / 1000)
    return RtpStream(tuple(packets), tuple(times), slots - len(events), len(events))


def write_rtp_pcap(
    path: str | Path,
    stream: RtpStream,
    src: tuple[str, int] = ("127.0.0.1", 16000),
    dst: tuple[str, int] = ("127.0.0.1", 16002),
) -> Path:
    """An Ethernet/IPv4/UDP capture of `stream` with its original 20 ms timing."""
    path = Path(path)
    write_pcap(
        path, ((t, *src, *dst, p.serialize()) for t, p in zip(stream.times_s, stream.packets, strict=True))
    )
    return path
