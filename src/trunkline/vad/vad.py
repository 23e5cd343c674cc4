"""Frame-level voice activity: the `VoiceActivityDetector` protocol and `WebRtcVad`, webrtcvad behind an
energy gate.

webrtcvad only takes 8/16/32/48 kHz and 10/20/30 ms frames; any other rate is resampled per frame to the
nearest supported rate (a VAD decision tolerates the edge effects of a one-shot resample). Very quiet frames
(comfort noise, line hiss) are rejected before webrtcvad, which flags some low-level noise as speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import soxr
import webrtcvad

WEBRTC_RATES_HZ = (8000, 16000, 32000, 48000)
WEBRTC_FRAME_MS = (10, 20, 30)
MIN_RATE_HZ = 8000
MAX_RATE_HZ = 96000
DEFAULT_MIN_RMS_DBFS = -50.0
_INT16 = np.dtype(np.int16)


class VadError(ValueError):
    """A VAD cannot be built for these parameters (rate, aggressiveness, frame length)."""


class VadFrameError(VadError):
    """A frame a VAD cannot classify (wrong dtype, shape or length); adapters count and drop it."""


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Classifies one mono int16 frame of `frame_ms` at `sample_rate_hz` as speech or not."""

    sample_rate_hz: int
    frame_ms: int

    def is_speech(self, frame: np.ndarray) -> bool:
        """True when the frame holds speech."""
        ...


@dataclass(slots=True)
class VadStats:
    """Counters (not logs) for the per-frame path."""

    frames: int = 0
    speech_frames: int = 0
    gated_frames: int = 0
    bad_frames: int = 0


def rms_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dB relative to full scale (−inf for digital silence)."""
    if frame.size == 0:
        return -math.inf
    x = frame.astype(np.float64)
    mean_square = float(np.dot(x, x)) / frame.size
    if mean_square <= 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / (32768.0 * 32768.0))


def nearest_webrtc_rate(sample_rate_hz: int) -> int:
    """The webrtcvad rate to classify audio of `sample_rate_hz` at (itself when supported)."""
    if sample_rate_hz in WEBRTC_RATES_HZ:
        return sample_rate_hz
    return min(WEBRTC_RATES_HZ, key=lambda r: (abs(r - sample_rate_hz), r))


class WebRtcVad:
    """webrtcvad at the call's rate with an RMS gate: frames below `min_rms_dbfs` are never speech.

    `aggressiveness` 0-3 (webrtcvad's mode: higher rejects more non-speech). One instance per leg.
    """

    __slots__ = (
        "_frame_samples",
        "_min_mean_square",
        "_vad",
        "_vad_rate_hz",
        "aggressiveness",
        "frame_ms",
        "min_rms_dbfs",
        "sample_rate_hz",
        "stats",
    )

    def __init__(
        self,
        sample_rate_hz: int = 8000,
        aggressiveness: int = 2,
        frame_ms: int = 20,
        min_rms_dbfs: float = DEFAULT_MIN_RMS_DBFS,
    ) -> None:
        if not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ:
            raise VadError(f"sample rate {sample_rate_hz} Hz is outside {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz")
        if aggressiveness not in (0, 1, 2, 3):
            raise VadError(f"aggressiveness must be 0-3, got {aggressiveness}")
        if frame_ms not in WEBRTC_FRAME_MS:
            raise VadError(f"frame_ms must be one of {WEBRTC_FRAME_MS}, got {frame_ms}")
        if sample_rate_hz * frame_ms % 1000:
            raise VadError(f"{frame_ms} ms at {sample_rate_hz} Hz is not a whole number of samples")
        self.sample_rate_hz = sample_rate_hz
        self.aggressiveness = aggressiveness
        self.frame_ms = frame_ms
        self.min_rms_dbfs = min_rms_dbfs
        self.stats = VadStats()
        self._frame_samples = sample_rate_hz * frame_ms // 1000
        self._vad_rate_hz = nearest_webrtc_rate(sample_rate_hz)
        self._min_mean_square = (10.0 ** (min_rms_dbfs / 10.0)) * 32768.0 * 32768.0
        self._vad = webrtcvad.Vad(aggressiveness)

    @property
    def resampling(self) -> bool:
        """True when frames are resampled to `vad_rate_hz` before classification."""
        return self._vad_rate_hz != self.sample_rate_hz

    @property
    def vad_rate_hz(self) -> int:
        return self._vad_rate_hz

    def is_speech(self, frame: np.ndarray) -> bool:
        """Classify one frame; raises `VadFrameError` (and counts it) when the frame is malformed."""
        self._check(frame)
        self.stats.frames += 1
        x = frame.astype(np.float64)
        if float(np.dot(x, x)) < self._min_mean_square * frame.size:
            self.stats.gated_frames += 1
            return False
        pcm = frame if not self.resampling else self._resample(frame)
        speech = bool(self._vad.is_speech(np.ascontiguousarray(pcm).tobytes(), self._vad_rate_hz))
        if speech:
            self.stats.speech_frames += 1
        return speech

    def _check(self, frame: np.ndarray) -> None:
        if getattr(frame, "dtype", None) != _INT16 or getattr(frame, "ndim", 0) != 1:
            self.stats.bad_frames += 1
            raise VadFrameError("frames must be 1-D int16 arrays")
        if frame.size != self._frame_samples:
            self.stats.bad_frames += 1
            raise VadFrameError(
                f"expected {self._frame_samples} samples ({self.frame_ms} ms at {self.sample_rate_hz} Hz), "
                f"got {frame.size}"
            )

    def _resample(self, frame: np.ndarray) -> np.ndarray:
        out = soxr.resample(frame, self.sample_rate_hz, self._vad_rate_hz, quality="LQ")
        want = self._vad_rate_hz * self.frame_ms // 1000
        if out.size >= want:
            return np.asarray(out[:want], dtype=_INT16)
        return np.concatenate([out, np.zeros(want - out.size, dtype=_INT16)])
