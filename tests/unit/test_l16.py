"""L16: big-endian on the wire (RFC 3551), lossless round trip, typed errors for truncated payloads."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trunkline.codecs import Codec, CodecError, L16Codec


def test_wire_format_is_network_byte_order() -> None:
    pcm = np.array([1, -2, 0x1234, -32768, 32767], dtype=np.int16)
    assert L16Codec(16000).encode(pcm) == struct.pack("!5h", 1, -2, 0x1234, -32768, 32767)
    assert L16Codec(16000).decode(b"\x12\x34\xff\xfe").tolist() == [0x1234, -2]


@given(arrays(np.int16, st.integers(0, 500)))
def test_round_trip_is_lossless(pcm: np.ndarray) -> None:
    codec = L16Codec(8000)
    payload = codec.encode(pcm)
    assert len(payload) == 2 * len(pcm)
    decoded = codec.decode(payload)
    assert decoded.dtype == np.dtype(np.int16) and decoded.dtype.isnative
    assert np.array_equal(decoded, pcm)


@pytest.mark.parametrize(
    ("rate_hz", "payload_type"), [(8000, None), (16000, None), (44100, 11), (48000, None)]
)
def test_attributes(rate_hz: int, payload_type: int | None) -> None:
    codec = L16Codec(rate_hz)
    assert isinstance(codec, Codec)
    assert codec.name == "L16"
    assert codec.rtp_clock_rate_hz == codec.sample_rate_hz == rate_hz
    assert codec.default_payload_type == payload_type


def test_decoded_array_is_writable_and_independent_of_the_payload() -> None:
    payload = bytearray(b"\x00\x01\x00\x02")
    decoded = L16Codec(8000).decode(payload)
    payload[1] = 9
    decoded[0] = 7  # must not raise (read-only view) nor touch the payload
    assert decoded.tolist() == [7, 2] and payload[1] == 9


def test_odd_payload_and_bad_input_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        L16Codec(8000).decode(b"\x00\x01\x02")
    with pytest.raises(CodecError):
        L16Codec(8000).encode(np.zeros(4, np.float64))
    with pytest.raises(CodecError):
        L16Codec(0)
