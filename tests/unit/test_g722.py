"""G.722 through the libg722 binding: frame sizes, per-instance state, and speech-band fidelity."""

from __future__ import annotations

import numpy as np
import pytest

from trunkline.codecs import Codec, CodecError, G722Codec

RATE_HZ = 16000
FRAME = 320  # 20 ms at 16 kHz
MAX_LAG = 64  # search window for the codec's delay (its QMF filter pair delays the signal ~22 samples)


def _tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(RATE_HZ * seconds)) / RATE_HZ
    return np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def _sweep(start_hz: float, stop_hz: float, seconds: float = 2.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(RATE_HZ * seconds)) / RATE_HZ
    phase = 2 * np.pi * (start_hz * t + (stop_hz - start_hz) * t**2 / (2 * seconds))
    return np.round(amplitude * np.sin(phase)).astype(np.int16)


def _round_trip(pcm: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    encoder, decoder = G722Codec(), G722Codec()
    payloads = [encoder.encode(pcm[i : i + FRAME]) for i in range(0, len(pcm), FRAME)]
    return payloads, np.concatenate([decoder.decode(p) for p in payloads])


def _snr_db(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, int]:
    """Best SNR over candidate codec delays (skipping the start-up transient), and that delay."""
    ref = reference[2000 : len(reference) - 2000].astype(np.float64)
    best = (-np.inf, -1)
    for lag in range(MAX_LAG):
        out = decoded[2000 + lag : 2000 + lag + len(ref)].astype(np.float64)
        snr = 10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-9))
        best = max(best, (float(snr), lag))
    return best


def test_frame_sizes_follow_rfc_3551() -> None:
    codec = G722Codec()
    assert isinstance(codec, Codec)
    assert (codec.name, codec.rtp_clock_rate_hz, codec.sample_rate_hz, codec.default_payload_type) == (
        "G722",
        8000,
        16000,
        9,
    )
    payload = codec.encode(_tone(1000, 0.02))
    assert len(payload) == 160  # 20 ms, 64 kbit/s
    decoded = G722Codec().decode(payload)
    assert decoded.dtype == np.int16 and decoded.shape == (FRAME,)


def test_sweep_through_the_speech_band_survives() -> None:
    pcm = _sweep(100, 3500)
    payloads, decoded = _round_trip(pcm)
    assert {len(p) for p in payloads} == {160}
    assert len(decoded) == len(pcm)
    snr, lag = _snr_db(pcm, decoded)
    assert snr > 35.0, f"SNR {snr:.1f} dB at lag {lag}"
    assert 0 < lag < MAX_LAG - 1


@pytest.mark.parametrize(("freq_hz", "min_snr_db"), [(400, 40.0), (1000, 40.0), (3000, 35.0), (6000, 15.0)])
def test_tones_survive(freq_hz: float, min_snr_db: float) -> None:
    # The upper sub-band (4-8 kHz) gets only 2 bits per sample, hence the lower bar for 6 kHz.
    pcm = _tone(freq_hz)
    _, decoded = _round_trip(pcm)
    snr, _ = _snr_db(pcm, decoded)
    assert snr > min_snr_db


def test_each_instance_has_its_own_state() -> None:
    pcm = _sweep(200, 3000, seconds=0.2)
    fresh = G722Codec().encode(pcm[FRAME:])
    warmed = G722Codec()
    warmed.encode(pcm[:FRAME])
    # ADPCM carries prediction state: the same frame encodes differently after history ...
    assert warmed.encode(pcm[FRAME:]) != fresh
    # ... and instances do not share it.
    assert G722Codec().encode(pcm[FRAME:]) == fresh


def test_encoder_and_decoder_states_are_independent() -> None:
    pcm = _sweep(200, 3000, seconds=0.2)
    reference = G722Codec().encode(pcm)
    busy = G722Codec()
    busy.decode(G722Codec().encode(_tone(700, 0.2)))  # decoding must not disturb the encoder
    assert busy.encode(pcm) == reference


def test_decode_accepts_any_buffer() -> None:
    payload = G722Codec().encode(_tone(500, 0.04))
    expected = G722Codec().decode(payload)
    assert np.array_equal(G722Codec().decode(bytearray(payload)), expected)
    assert np.array_equal(G722Codec().decode(memoryview(payload)), expected)


def test_strided_input_encodes_like_a_copy() -> None:
    pcm = _tone(300, 0.08)[::2]
    assert G722Codec().encode(pcm) == G722Codec().encode(pcm.copy())


@pytest.mark.parametrize("bad", [np.zeros(321, np.int16), np.zeros(320, np.float32), np.zeros(320, ">i2")])
def test_bad_input_is_a_codec_error(bad: np.ndarray) -> None:
    with pytest.raises(CodecError):
        G722Codec().encode(bad)
