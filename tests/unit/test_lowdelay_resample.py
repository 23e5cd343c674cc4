"""Low-delay streaming resampler: output as soon as its input exists, any chunking gives the same samples,
the telephone band passes flat, aliases are stopped, and a finished stream matches soxr's length and phase."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.codecs import CodecError
from trunkline.codecs.lowdelay import LowDelayResampler

PAIRS = [(22050, 8000), (24000, 8000), (16000, 8000), (8000, 16000), (48000, 8000), (22050, 16000)]


def _tone(rate_hz: int, freq_hz: float, seconds: float = 0.5, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def _whole(resampler: LowDelayResampler, pcm: np.ndarray, chunk: int) -> np.ndarray:
    parts = [resampler.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    return np.concatenate([*parts, resampler.flush()])


def _gain_db(out: np.ndarray, amplitude: float = 10000.0) -> float:
    middle = out[len(out) // 4 : 3 * len(out) // 4].astype(np.float64)
    return float(20 * np.log10(max(np.sqrt(np.mean(middle**2)), 1e-9) / (amplitude / np.sqrt(2))))


@given(
    st.sampled_from(PAIRS),
    st.lists(st.integers(0, 700), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_any_chunking_gives_the_same_samples(pair: tuple[int, int], cuts: list[int], seed: int) -> None:
    in_hz, out_hz = pair
    pcm = np.random.default_rng(seed).integers(-20000, 20000, sum(cuts) + 1, dtype=np.int16)
    one_go = LowDelayResampler(in_hz, out_hz)
    reference = np.concatenate([one_go.process(pcm), one_go.flush()])
    chunked = LowDelayResampler(in_hz, out_hz)
    parts, start = [], 0
    for size in [*cuts, 1]:
        parts.append(chunked.process(pcm[start : start + size]))
        start += size
    parts.append(chunked.flush())
    assert np.array_equal(np.concatenate(parts), reference)
    assert len(reference) == len(soxr.resample(pcm, in_hz, out_hz))  # round(n · out / in), as soxr ends one


@pytest.mark.parametrize(("in_hz", "out_hz"), PAIRS)
def test_a_finished_stream_matches_soxr_in_the_passband(in_hz: int, out_hz: int) -> None:
    pcm = _tone(in_hz, 1000.0) + _tone(in_hz, 2900.0, amplitude=5000.0)
    ours = _whole(LowDelayResampler(in_hz, out_hz), pcm, in_hz // 50)
    theirs = soxr.resample(pcm, in_hz, out_hz, quality="HQ")
    assert len(ours) == len(theirs)  # same length and no phase shift: the difference is tiny
    error = ours[50:-50].astype(np.float64) - theirs[50:-50]
    assert 20 * np.log10(np.sqrt(np.mean(error**2)) / 10000) < -60


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 2000.0, 3000.0, 3400.0])
def test_the_telephone_band_passes_flat(freq_hz: float) -> None:
    out = _whole(LowDelayResampler(22050, 8000), _tone(22050, freq_hz), 441)
    assert abs(_gain_db(out)) < 0.05


@pytest.mark.parametrize("freq_hz", [4400.0, 5000.0, 7000.0, 10000.0])
def test_what_would_alias_is_stopped(freq_hz: float) -> None:
    out = _whole(LowDelayResampler(22050, 8000), _tone(22050, freq_hz), 441)
    assert _gain_db(out) < -60


def test_output_follows_input_within_a_few_ms() -> None:
    resampler = LowDelayResampler(22050, 8000)
    pcm = _tone(22050, 440.0)
    first = resampler.process(pcm[:1024])  # 46 ms of 22.05 kHz: soxr's stream returns nothing yet
    owed_ms = 1024 / 22050 * 1000 - len(first) / 8
    assert 0 < owed_ms < 3
    assert resampler.delay_samples == pytest.approx(1024 * 8000 / 22050 - len(first))
    for start in range(1024, 8192, 256):
        resampler.process(pcm[start : start + 256])
        assert resampler.delay_samples < 3 * 8  # never more than 3 ms owed


def test_reset_forgets_the_previous_stream() -> None:
    pcm = _tone(22050, 700.0)
    fresh = LowDelayResampler(22050, 8000).process(pcm)
    reused = LowDelayResampler(22050, 8000)
    reused.process(_tone(22050, 3000.0)[:777])
    reused.reset()
    assert np.array_equal(reused.process(pcm), fresh)


def test_flush_starts_a_new_stream() -> None:
    resampler = LowDelayResampler(24000, 8000)
    first = _whole(resampler, _tone(24000, 500.0), 480)
    second = _whole(resampler, _tone(24000, 500.0), 480)
    assert np.array_equal(first, second)


def test_full_scale_overshoot_is_clipped_and_counted() -> None:
    square = np.where(np.arange(22050) % 40 < 20, 32767, -32768).astype(np.int16)
    resampler = LowDelayResampler(22050, 8000)
    out = resampler.process(square)
    assert out.dtype == np.int16 and resampler.clipped_samples > 0
    resampler.reset()
    assert resampler.clipped_samples == 0


def test_equal_rates_pass_the_same_array_through() -> None:
    resampler = LowDelayResampler(8000, 8000)
    pcm = _tone(8000, 440.0)
    assert resampler.passthrough and resampler.process(pcm) is pcm
    assert len(resampler.flush()) == 0 and resampler.delay_samples == 0


def test_bad_input_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        LowDelayResampler(0, 8000)
    with pytest.raises(CodecError):
        LowDelayResampler(22050, 8000).process(np.zeros(10, np.float32))


def test_a_long_input_in_one_call_equals_the_stream() -> None:
    """Outputs are computed in blocks inside one call (memory): a whole sentence at once = 20 ms chunks."""
    pcm = np.random.default_rng(7).integers(-20000, 20000, 22050 * 5, dtype=np.int16)
    one_go = LowDelayResampler(22050, 8000)
    whole = np.concatenate([one_go.process(pcm), one_go.flush()])
    assert len(whole) == 40000  # several blocks of outputs
    assert np.array_equal(whole, _whole(LowDelayResampler(22050, 8000), pcm, 441))
