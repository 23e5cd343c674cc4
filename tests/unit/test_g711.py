"""G.711: every linear value and every code against an independent scalar reference, audioop, and bounds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.unit import g711_reference as ref
from trunkline.codecs import Codec, CodecError, PcmaCodec, PcmuCodec
from trunkline.codecs.g711 import (
    alaw_decode,
    alaw_encode,
    alaw_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_alaw,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))
pcm_arrays = arrays(np.int16, st.integers(0, 200))


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref.ulaw_compress(int(x)) for x in ALL_SAMPLES)
    assert ulaw_encode(ALL_SAMPLES) == expected


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref.alaw_compress(int(x)) for x in ALL_SAMPLES)
    assert alaw_encode(ALL_SAMPLES) == expected


def test_decode_matches_reference_for_every_code() -> None:
    assert ulaw_decode(ALL_CODES).tolist() == [ref.ulaw_expand(c) for c in ALL_CODES]
    assert alaw_decode(ALL_CODES).tolist() == [ref.alaw_expand(c) for c in ALL_CODES]


def test_frame_sized_and_bulk_calls_agree() -> None:
    # Short inputs index the table with the int16 samples, long ones with their uint16 view.
    for encode in (ulaw_encode, alaw_encode):
        frames = b"".join(encode(ALL_SAMPLES[i : i + 160]) for i in range(0, len(ALL_SAMPLES), 160))
        assert frames == encode(ALL_SAMPLES)


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-1, 0x7F, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A)],
)
def test_g711_anchor_codes(sample: int, ulaw: int, alaw: int) -> None:
    # Zero, the two extremes and "negative zero", as tabulated in G.711.
    pcm = np.array([sample], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([ulaw])
    assert alaw_encode(pcm) == bytes([alaw])


def test_g711_standard_reconstruction_extremes() -> None:
    assert ulaw_decode(b"\x80\x00\xff\x7f").tolist() == [32124, -32124, 0, 0]
    assert alaw_decode(b"\xaa\x2a\xd5\x55").tolist() == [32256, -32256, 8, -8]


def test_every_code_reencodes_to_itself() -> None:
    ulaw_again = ulaw_encode(ulaw_decode(ALL_CODES))
    alaw_again = alaw_encode(alaw_decode(ALL_CODES))
    assert alaw_again == ALL_CODES
    # µ-law has two zeros: 0x7F ("-0") decodes to 0, which encodes as 0xFF ("+0").
    assert [i for i in range(256) if ulaw_again[i] != i] == [0x7F]
    assert ulaw_again[0x7F] == 0xFF


def test_quantizers_are_monotonic() -> None:
    for decoded in (ulaw_decode(ulaw_encode(ALL_SAMPLES)), alaw_decode(alaw_encode(ALL_SAMPLES))):
        assert np.all(np.diff(decoded.astype(np.int32)) >= 0)


def test_audioop_agrees_on_alaw_and_on_decoding() -> None:
    audioop = _audioop()
    raw = ALL_SAMPLES.tobytes()
    assert audioop.lin2alaw(raw, 2) == alaw_encode(ALL_SAMPLES)
    assert audioop.ulaw2lin(ALL_CODES, 2) == ulaw_decode(ALL_CODES).tobytes()
    assert audioop.alaw2lin(ALL_CODES, 2) == alaw_decode(ALL_CODES).tobytes()


def test_audioop_ulaw_differs_only_by_its_twos_complement_magnitude() -> None:
    # audioop (Sun g711.c) negates the 14-bit sample (-(x >> 2)); G.191 takes the one's complement
    # (~x >> 2 == -(x >> 2) - 1). So its code for x < -4 is ours for x - 4, and -4..-1 give 0x7E, not 0x7F.
    audioop = _audioop()
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2), np.uint8)
    ours = np.frombuffer(ulaw_encode(ALL_SAMPLES), np.uint8)
    x = ALL_SAMPLES.astype(np.int32)
    assert np.array_equal(theirs[x >= 0], ours[x >= 0])
    assert set(theirs[(x >= -4) & (x < 0)].tolist()) == {0x7E}
    shifted = np.maximum(x[x < -4] - 4, -32768).astype(np.int16)
    assert np.array_equal(theirs[x < -4], np.frombuffer(ulaw_encode(shifted), np.uint8))


def test_transcoding_goes_through_linear() -> None:
    assert ulaw_to_alaw(ALL_CODES) == alaw_encode(ulaw_decode(ALL_CODES))
    assert alaw_to_ulaw(ALL_CODES) == ulaw_encode(alaw_decode(ALL_CODES))
    # Transcoding moves a value by at most half of the coarser of the two steps.
    for code in ALL_CODES:
        u = ulaw_decode(bytes([code]))[0]
        a = alaw_decode(ulaw_to_alaw(bytes([code])))[0]
        assert (
            abs(int(a) - int(u))
            <= max(ref.ulaw_step(code), ref.alaw_step(ulaw_to_alaw(bytes([code]))[0])) // 2
        )


@given(pcm_arrays)
def test_ulaw_round_trip_error_is_within_half_a_step(pcm: np.ndarray) -> None:
    codes = ulaw_encode(pcm)
    decoded = ulaw_decode(codes)
    assert len(codes) == len(pcm) and decoded.dtype == np.int16
    for x, y, code in zip(pcm.tolist(), decoded.tolist(), codes, strict=True):
        magnitude = x if x >= 0 else -x - 1
        if magnitude + ref.ULAW_BIAS > ref.ULAW_CLIP:
            assert y == (32124 if x > 0 else -32124)  # beyond the µ-law range: clipped to the extreme
        else:
            assert abs(y - x) <= ref.ulaw_step(code) // 2
            assert y == 0 or (y > 0) == (x >= 0)


@given(pcm_arrays)
def test_alaw_round_trip_error_is_within_half_a_step(pcm: np.ndarray) -> None:
    codes = alaw_encode(pcm)
    decoded = alaw_decode(codes)
    assert len(codes) == len(pcm) and decoded.dtype == np.int16
    for x, y, code in zip(pcm.tolist(), decoded.tolist(), codes, strict=True):
        assert abs(y - x) <= ref.alaw_step(code) // 2
        assert (y > 0) == (x >= 0)


@settings(max_examples=30)
@given(arrays(np.int16, st.integers(0, 64)), st.integers(2, 4))
def test_strided_input_encodes_like_a_copy(pcm: np.ndarray, stride: int) -> None:
    view = pcm[::stride]
    assert ulaw_encode(view) == ulaw_encode(view.copy())
    assert alaw_encode(view) == alaw_encode(view.copy())


def test_decode_accepts_any_buffer() -> None:
    payload = bytes(range(0, 256, 3))
    expected = ulaw_decode(payload)
    assert np.array_equal(ulaw_decode(bytearray(payload)), expected)
    assert np.array_equal(ulaw_decode(memoryview(payload)), expected)
    assert ulaw_decode(b"").shape == (0,) and alaw_encode(np.zeros(0, np.int16)) == b""


@pytest.mark.parametrize("bad", [np.zeros(4, np.float32), np.zeros(4, np.int32), np.zeros(4, ">i2"), [0, 1]])
def test_non_int16_input_is_a_codec_error(bad: object) -> None:
    for encode in (ulaw_encode, alaw_encode):
        with pytest.raises(CodecError):
            encode(bad)  # type: ignore[arg-type]


def test_codec_classes_follow_the_protocol() -> None:
    pcm = np.array([0, 1000, -1000, 32767], dtype=np.int16)
    for codec, encode, decode, pt in (
        (PcmuCodec(), ulaw_encode, ulaw_decode, 0),
        (PcmaCodec(), alaw_encode, alaw_decode, 8),
    ):
        assert isinstance(codec, Codec)
        assert (codec.rtp_clock_rate_hz, codec.sample_rate_hz, codec.default_payload_type) == (8000, 8000, pt)
        assert codec.encode(pcm) == encode(pcm)
        assert np.array_equal(codec.decode(encode(pcm)), decode(encode(pcm)))
