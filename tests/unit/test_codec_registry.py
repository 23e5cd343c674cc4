"""Codec registry: lookup by (name, RTP clock rate), fresh instances, typed errors for the unknown."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trunkline.codecs import (
    Codec,
    CodecSpec,
    G722Codec,
    L16Codec,
    PcmaCodec,
    PcmuCodec,
    UnsupportedCodecError,
    codec_spec,
    create_codec,
    spec_for_static_payload_type,
    supported_specs,
)

EXPECTED = [
    ("PCMU", 8000, 8000, 0, PcmuCodec),
    ("PCMA", 8000, 8000, 8, PcmaCodec),
    ("G722", 8000, 16000, 9, G722Codec),
    ("L16", 8000, 8000, None, L16Codec),
    ("L16", 16000, 16000, None, L16Codec),
    ("L16", 44100, 44100, 11, L16Codec),
    ("L16", 48000, 48000, None, L16Codec),
]


@pytest.mark.parametrize(("name", "clock_hz", "pcm_hz", "payload_type", "cls"), EXPECTED)
def test_lookup_and_create(
    name: str, clock_hz: int, pcm_hz: int, payload_type: int | None, cls: type
) -> None:
    spec = codec_spec(name.lower(), clock_hz)  # encoding names are case-insensitive (RFC 4855)
    assert spec == CodecSpec(name, clock_hz, pcm_hz, payload_type, 1)
    codec = create_codec(name.title(), clock_hz)
    assert isinstance(codec, cls) and isinstance(codec, Codec)
    assert (codec.name, codec.rtp_clock_rate_hz, codec.sample_rate_hz, codec.default_payload_type) == (
        name,
        clock_hz,
        pcm_hz,
        payload_type,
    )
    # Whatever the codec, 20 ms of its PCM survives encode → decode with the right length.
    pcm = np.zeros(spec.frame_samples(20), dtype=np.int16)
    assert len(codec.decode(codec.encode(pcm))) == len(pcm)


def test_supported_specs_in_offer_order() -> None:
    specs = supported_specs()
    assert [(s.name, s.rtp_clock_rate_hz) for s in specs] == [(e[0], e[1]) for e in EXPECTED]
    assert all(codec_spec(s.name, s.rtp_clock_rate_hz) is s for s in specs)


def test_create_returns_fresh_instances() -> None:
    assert create_codec("G722", 8000) is not create_codec("G722", 8000)


@pytest.mark.parametrize(
    ("name", "clock_hz", "channels"),
    [("G722", 16000, 1), ("opus", 48000, 1), ("PCMU", 16000, 1), ("L16", 44100, 2), ("", 8000, 1)],
)
def test_unknown_codecs_raise_a_typed_error(name: str, clock_hz: int, channels: int) -> None:
    with pytest.raises(UnsupportedCodecError) as caught:
        codec_spec(name, clock_hz, channels)
    assert (caught.value.name, caught.value.rtp_clock_rate_hz, caught.value.channels) == (
        name,
        clock_hz,
        channels,
    )
    with pytest.raises(UnsupportedCodecError):
        create_codec(name, clock_hz, channels)


def test_static_payload_types() -> None:
    assert spec_for_static_payload_type(0) == codec_spec("PCMU", 8000)
    assert spec_for_static_payload_type(8) == codec_spec("PCMA", 8000)
    assert spec_for_static_payload_type(9) == codec_spec("G722", 8000)
    assert spec_for_static_payload_type(11) == codec_spec("L16", 44100)
    assert spec_for_static_payload_type(3) is None  # GSM: not supported
    assert spec_for_static_payload_type(96) is None  # dynamic


def test_spec_frame_arithmetic_and_immutability() -> None:
    g722 = codec_spec("G722", 8000)
    assert g722.frame_samples(20) == 320 and g722.timestamp_increment(20) == 160
    pcmu = codec_spec("PCMU", 8000)
    assert pcmu.frame_samples(30) == 240 and pcmu.timestamp_increment(30) == 240
    assert g722.key == ("G722", 8000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g722.name = "x"  # type: ignore[misc]
