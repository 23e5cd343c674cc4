"""Packet-loss concealment: continuity at every boundary, pitch reconstruction, fade to silence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mediaserver.plc import Concealer


def voiced(rate: int, f0: float, seconds: float = 1.0, seed: int = 0, glide: float = 0.0) -> np.ndarray:
    """A vowel-like int16 signal: harmonics of f0 (rising by `glide`× over the signal, with a swelling
    envelope when gliding) with decaying amplitudes and fixed random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + glide * t / seconds)) / rate
    x = np.zeros_like(t)
    for k in range(1, 12):
        if k * f0 * (1 + glide) < rate / 2:
            x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    if glide:
        x *= 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * t / seconds))
    return (x / np.abs(x).max() * 12000).astype(np.int16)


def play(c: Concealer, signal: np.ndarray, frame: int, lost: set[int]) -> np.ndarray:
    out = []
    for i in range(signal.size // frame):
        chunk = signal[i * frame : (i + 1) * frame]
        out.append(c.conceal() if i in lost else c.good(chunk))
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("f0", [95.0, 137.0, 212.5])
def test_a_dropped_frame_of_a_periodic_signal_is_reconstructed(rate: int, f0: float) -> None:
    frame = rate // 50
    sig = voiced(rate, f0)
    out = play(Concealer(rate, frame), sig, frame, {12})
    seg = slice(12 * frame, 13 * frame)
    truth = sig[seg].astype(float)
    corr = np.corrcoef(out[seg].astype(float), truth)[0, 1]
    assert corr > 0.9
    first_10ms = slice(12 * frame, 12 * frame + rate // 100)  # not attenuated yet: the waveform matches
    err = out[first_10ms].astype(float) - sig[first_10ms]
    assert np.sqrt(np.mean(err**2)) < 0.25 * np.sqrt(np.mean(truth**2))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_long_gap_fades_out_then_is_silent(rate: int) -> None:
    frame = rate // 50
    sig = voiced(rate, 120.0)
    c = Concealer(rate, frame)
    for i in range(10):
        c.good(sig[i * frame : (i + 1) * frame])
    gap = np.concatenate([c.conceal() for _ in range(6)]).astype(float)
    per_10ms = rate // 100
    peaks = [np.abs(gap[i : i + per_10ms]).max() for i in range(0, gap.size, per_10ms)]
    assert peaks[0] > 6000  # the first 10 ms are played at full level
    assert all(b <= a + 1 for a, b in itertools.pairwise(peaks[1:6]))  # fading
    assert not gap[6 * per_10ms :].any()  # silent from 60 ms on
    start = next(i * frame for i in range(20, 45) if abs(int(sig[i * frame])) > 6000)
    resumed = c.good(sig[start : start + frame]).astype(float)
    ola = rate // 100  # 10 ms after a long loss
    ramp = (np.arange(ola) + 1) / ola
    assert np.all(np.abs(resumed[:ola]) <= ramp * 12000 + 1)  # fades back in from silence, no click
    assert np.array_equal(resumed[ola:], sig[start + ola : start + frame])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_resuming_into_different_audio_is_cross_faded(rate: int) -> None:
    frame = rate // 50
    before, after = voiced(rate, 110.0, seed=1), voiced(rate, 173.0, seed=2)
    c = Concealer(rate, frame)
    out = [c.good(before[i * frame : (i + 1) * frame]) for i in range(10)]
    out += [c.conceal(), c.conceal()]
    peak = int(np.argmax(np.abs(after[:frame])))  # resume on a peak: the worst case for a click
    out += [c.good(after[peak + i * frame : peak + (i + 1) * frame]) for i in range(12, 16)]
    jumps = np.abs(np.diff(np.concatenate(out).astype(float)))
    natural = max(np.abs(np.diff(before.astype(float))).max(), np.abs(np.diff(after.astype(float))).max())
    assert jumps.max() <= 1.1 * natural


@settings(max_examples=60)
@given(
    f0=st.floats(80.0, 300.0),
    seed=st.integers(0, 1000),
    rate=st.sampled_from([8000, 16000]),
    lost=st.sets(st.integers(3, 28), max_size=10),
)
def test_no_clicks_at_any_boundary(f0: float, seed: int, rate: int, lost: set[int]) -> None:
    frame = rate // 50
    sig = voiced(rate, f0, 0.6, seed, glide=0.3)  # pitch and level change, so copies never fit exactly
    out = play(Concealer(rate, frame), sig, frame, lost).astype(float)
    natural = np.abs(np.diff(sig.astype(float))).max()
    jumps = np.abs(np.diff(out))
    boundaries = [i * frame - 1 for i in range(1, out.size // frame)]
    assert jumps[boundaries].max() <= 1.15 * natural
    assert jumps.max() <= 1.15 * natural  # nor inside concealed frames (loop wrap-around)


def test_audio_passes_untouched_without_loss() -> None:
    sig = voiced(8000, 150.0)
    c = Concealer(8000, 160)
    for i in range(20):
        chunk = sig[i * 160 : (i + 1) * 160]
        assert c.good(chunk) is chunk
    assert not c.concealing


def test_conceal_before_any_audio_is_silence_and_dtype_follows_input() -> None:
    c = Concealer(16000, 320)
    first = c.conceal()
    assert first.dtype == np.int16 and first.shape == (320,) and not first.any()
    c.good(np.full(320, 0.25, dtype=np.float32))
    assert c.conceal().dtype == np.float32


def test_frames_of_other_lengths_and_short_frames_after_loss() -> None:
    sig = voiced(8000, 140.0)
    c = Concealer(8000, 160)
    c.good(sig[:240])  # a 30 ms packet
    c.good(sig[240:480])
    c.conceal()
    tail = c.good(sig[640:680])  # shorter than the cross-fade
    assert tail.shape == (40,) and tail.dtype == np.int16
    assert not c.concealing


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        Concealer(1000, 160)
    with pytest.raises(ValueError):
        Concealer(8000, 0)
