"""Streaming resampler: frame-by-frame equals one-shot, no seams at frame boundaries, exact length."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.codecs import CodecError, Resampler

RATES_HZ = (8000, 16000, 22050, 24000, 48000)
PAIRS = list(itertools.permutations(RATES_HZ, 2))
AMPLITUDE = 10000.0
TONE_HZ = 440.0
LSB_TOLERANCE = 4  # int16 rounding in and out, plus soxr's block-size-dependent float rounding


def _tone(rate_hz: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return np.round(AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def _stream(resampler: Resampler, pcm: np.ndarray, frame: int) -> list[np.ndarray]:
    return [resampler.process(pcm[i : i + frame]) for i in range(0, len(pcm), frame)]


@pytest.mark.parametrize(("in_hz", "out_hz"), PAIRS)
def test_frame_by_frame_matches_one_shot_and_the_ideal_tone(in_hz: int, out_hz: int) -> None:
    pcm = _tone(in_hz, 1.0)
    resampler = Resampler(in_hz, out_hz)
    chunks = _stream(resampler, pcm, in_hz // 50)
    chunks.append(resampler.flush())
    streamed = np.concatenate(chunks)
    assert streamed.dtype == np.int16

    one_shot = soxr.resample(pcm, in_hz, out_hz, quality="HQ")
    assert len(streamed) == len(one_shot) == round(len(pcm) * out_hz / in_hz)
    assert np.abs(streamed.astype(np.int32) - one_shot).max() <= LSB_TOLERANCE

    # soxr output is time-aligned with its input, so it must follow the ideal tone everywhere (edges aside)
    # and in particular across every chunk boundary: a seam would show up as a large error there.
    ideal = AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * np.arange(len(streamed)) / out_hz)
    error = np.abs(streamed - ideal)
    edge = out_hz // 50
    assert error[edge:-edge].max() <= LSB_TOLERANCE
    boundaries = np.cumsum([len(c) for c in chunks[:-1]])
    inner = boundaries[(boundaries > edge) & (boundaries < len(streamed) - edge)]
    assert len(inner) > 10
    assert error[inner].max() <= LSB_TOLERANCE
    assert error[np.maximum(inner - 1, 0)].max() <= LSB_TOLERANCE


@pytest.mark.parametrize(("in_hz", "out_hz"), [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 16000)])
def test_long_run_length_follows_the_rate_ratio(in_hz: int, out_hz: int) -> None:
    frames = 500  # 10 s of 20 ms frames
    frame = in_hz // 50
    resampler = Resampler(in_hz, out_hz)
    silence = np.zeros(frame, dtype=np.int16)
    produced = 0
    held_max = 0.0
    for n in range(1, frames + 1):
        produced += len(resampler.process(silence))
        expected = n * frame * out_hz / in_hz
        # What is missing is exactly what soxr reports as held back (its latency), never more than ~250 ms.
        assert abs(expected - produced - resampler.delay_samples) <= 1.0
        held_max = max(held_max, expected - produced)
    assert held_max <= 0.25 * out_hz
    produced += len(resampler.flush())
    assert abs(produced - frames * frame * out_hz / in_hz) <= 2


def test_flush_ends_one_stream_and_starts_a_fresh_one() -> None:
    first, second = _tone(8000, 0.3), _tone(8000, 0.2)[::-1].copy()
    reused = Resampler(8000, 16000)
    reused.process(first)
    reused.flush()
    fresh = Resampler(8000, 16000)
    expected = np.concatenate([fresh.process(second), fresh.flush()])
    again = np.concatenate([reused.process(second), reused.flush()])
    # Nothing of the first stream leaks into the second (soxr's rounding may differ by an LSB after clear()).
    assert len(again) == len(expected)
    assert np.abs(again.astype(np.int32) - expected).max() <= LSB_TOLERANCE


def test_reset_drops_held_audio() -> None:
    resampler = Resampler(16000, 8000)
    resampler.process(_tone(16000, 0.1))
    assert resampler.delay_samples > 0
    resampler.reset()
    assert resampler.delay_samples == 0
    assert len(resampler.flush()) == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 700), max_size=12), st.sampled_from(PAIRS))
def test_any_chunking_gives_the_same_audio(cuts: list[int], pair: tuple[int, int]) -> None:
    pcm = _tone(pair[0], 0.15)
    whole = Resampler(*pair)
    reference = np.concatenate([whole.process(pcm), whole.flush()])
    split = Resampler(*pair)
    parts = np.split(pcm, sorted(min(c, len(pcm)) for c in cuts))
    out = np.concatenate([split.process(p) for p in parts] + [split.flush()])
    assert len(out) == len(reference)
    assert np.abs(out.astype(np.int32) - reference).max() <= LSB_TOLERANCE


def test_identity_fast_path() -> None:
    resampler = Resampler(16000, 16000)
    pcm = _tone(16000, 0.02)
    assert resampler.passthrough
    assert resampler.process(pcm) is pcm
    assert len(resampler.flush()) == 0 and resampler.delay_samples == 0


def test_full_scale_input_is_clipped_not_wrapped() -> None:
    square = np.tile(np.array([32767] * 8 + [-32768] * 8, dtype=np.int16), 200)
    resampler = Resampler(8000, 16000)
    head = resampler.process(square)
    assert resampler.clipped_samples > 0  # the filter's overshoot (Gibbs) exceeds full scale
    out = np.concatenate([head, resampler.flush()])
    assert resampler.clipped_samples == 0  # flush() starts a fresh stream, clip counter included
    assert out.dtype == np.int16 and out.max() == 32767 and out.min() == -32768
    assert np.abs(np.diff(out.astype(np.int32))).max() < 40000  # a wrapped sample would jump by ~65536


@pytest.mark.parametrize(
    "args",
    [(0, 8000), (8000, -1), (8000, 16000, "best")],
)
def test_bad_configuration_is_a_codec_error(args: tuple) -> None:
    with pytest.raises(CodecError):
        Resampler(*args)


def test_non_int16_input_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        Resampler(8000, 16000).process(np.zeros(160, np.float32))
    with pytest.raises(CodecError):
        Resampler(8000, 8000).process(np.zeros(160, np.int32))
