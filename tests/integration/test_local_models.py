"""Real local models: piper speaks, faster-whisper listens (at the telephone rate), on bounded pools."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from trunkline.pipeline.asr import LocalWhisper, SpeechRecognizer, to_whisper_input
from trunkline.pipeline.models import BoundedPool, BusyError
from trunkline.pipeline.tts import AudioChunk, LocalPiper, PromptCache, SpeechSynthesizer

pytestmark = pytest.mark.integration

BOOKING = "I'd like to book a cleaning on Tuesday at ten."


@pytest.fixture(scope="module")
def asr_pool() -> Iterator[BoundedPool]:
    pool = BoundedPool("asr", max_workers=1, max_queued=1)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def tts_pool() -> Iterator[BoundedPool]:
    pool = BoundedPool("tts", max_workers=1, max_queued=2)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def whisper(asr_pool: BoundedPool) -> LocalWhisper:
    asr = LocalWhisper(asr_pool, cpu_threads=2)
    asr.preload()
    return asr


@pytest.fixture(scope="module")
def piper(tts_pool: BoundedPool) -> LocalPiper:
    tts = LocalPiper(tts_pool, output_rate_hz=8000)
    tts.preload()
    return tts


async def speak(tts: SpeechSynthesizer, text: str) -> list[AudioChunk]:
    async with asyncio.timeout(30):
        return [chunk async for chunk in tts.stream(text)]


@asynccontextmanager
async def pool_filled(pool: BoundedPool) -> AsyncIterator[None]:
    """Every worker and queue slot of `pool` taken by a job that waits until the block exits."""
    assert await asyncio.to_thread(pool.wait_idle, 30)
    release = threading.Event()
    held = []
    try:
        for _ in range(pool.capacity):
            held.append(pool.submit(release.wait, 30))
        yield
    finally:
        release.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*(asyncio.wrap_future(f) for f in held))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


async def test_piper_speech_round_trips_through_whisper_at_8_khz(
    piper: LocalPiper, whisper: LocalWhisper
) -> None:
    assert isinstance(piper, SpeechSynthesizer) and isinstance(whisper, SpeechRecognizer)
    chunks = await speak(piper, BOOKING)
    assert chunks and all(c.sample_rate_hz == 8000 and c.pcm.dtype == np.int16 for c in chunks)
    pcm = np.concatenate([c.pcm for c in chunks])
    assert 1.5 < len(pcm) / 8000 < 5.0
    assert (
        500 < np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) < 20000
    )  # audible speech, not silence or clipping
    async with asyncio.timeout(30):
        transcript = await whisper.transcribe(pcm, 8000)
    heard = words(transcript.text)
    assert {"book", "cleaning", "tuesday"} <= heard, transcript.text
    assert heard & {"ten", "10"}, transcript.text
    assert transcript.duration_s == pytest.approx(len(pcm) / 8000)
    assert transcript.processing_ms > 0 and transcript.words is None


@pytest.mark.parametrize("text", [BOOKING, "Yes, that works."])
async def test_fitted_encoder_window_hears_the_same(
    asr_pool: BoundedPool, piper: LocalPiper, text: str
) -> None:
    fitted = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True)
    pcm = np.concatenate([c.pcm for c in await speak(piper, text)])
    async with asyncio.timeout(30):
        transcript = await fitted.transcribe(np.concatenate([np.zeros(1600, np.int16), pcm]), 8000)
    assert words(transcript.text) >= words(text) - {"ten", "i'd", "i", "d"}, transcript.text
    assert transcript.no_speech_prob is not None and transcript.no_speech_prob < 0.5


async def test_busy_pools_refuse_at_once_and_recover(
    asr_pool: BoundedPool, whisper: LocalWhisper, tts_pool: BoundedPool, piper: LocalPiper
) -> None:
    pcm = np.concatenate([c.pcm for c in await speak(piper, "Hello.")])
    for pool in (asr_pool, tts_pool):
        rejected = pool.rejected
        async with pool_filled(pool):
            with pytest.raises(BusyError):
                await whisper.transcribe(pcm, 8000) if pool is asr_pool else await speak(piper, "Hello.")
        assert pool.rejected == rejected + 1
    async with asyncio.timeout(30):
        again = await whisper.transcribe(pcm, 8000)
    assert "hello" in words(again.text)
    assert asr_pool.in_flight == 0


async def test_prompt_cache_replays_the_greeting_without_the_model(
    piper: LocalPiper, tts_pool: BoundedPool
) -> None:
    cache = PromptCache()
    await cache.warm(piper, ["Thanks for calling Acme Dental."])
    async with pool_filled(tts_pool):  # the pool is full, yet the cached greeting plays
        replay = await speak_cached(cache, piper, "Thanks for calling Acme Dental.")
    assert replay and cache.hits == 1 and sum(len(c.pcm) for c in replay) > 8000


async def speak_cached(cache: PromptCache, tts: SpeechSynthesizer, text: str) -> list[AudioChunk]:
    async with asyncio.timeout(30):
        return [chunk async for chunk in cache.stream(tts, text)]


async def test_fitted_window_word_timings_end_where_the_speech_ends(
    asr_pool: BoundedPool, piper: LocalPiper
) -> None:
    timed = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True, word_timestamps=True)
    speech = np.concatenate([c.pcm for c in await speak(piper, BOOKING)])
    pcm = np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(2400, np.int16)])
    async with asyncio.timeout(30):
        transcript = await timed.transcribe(pcm, 8000)
    assert transcript.words and timed.full_window_fallbacks == 0
    assert {"book", "cleaning", "tuesday"} <= words(" ".join(w.text for w in transcript.words))
    starts = [w.start_s for w in transcript.words]
    assert starts == sorted(starts) and all(w.start_s <= w.end_s for w in transcript.words)
    speech_end_s = (4000 + len(speech)) / 8000
    assert abs(transcript.words[-1].end_s - speech_end_s) < 0.35
    assert 0.0 <= transcript.words[-1].probability <= 1.0


async def test_a_stale_decode_stops_after_the_encoder(asr_pool: BoundedPool, piper: LocalPiper) -> None:
    from trunkline.pipeline.models import whisper_model
    from trunkline.pipeline.whisper_fit import DecodeAborted, decode_fitted

    timed = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True, word_timestamps=True)
    timed.preload()
    model = whisper_model(timed._spec)
    audio = to_whisper_input(np.concatenate([c.pcm for c in await speak(piper, BOOKING)]), 8000)
    asked: list[str] = []

    def aborted() -> bool:  # the caller spoke again while the encoder ran
        asked.append("asked")
        return True

    with pytest.raises(DecodeAborted):
        await asyncio.to_thread(decode_fitted, model, audio, None, 600, True, aborted)
    assert asked == ["asked"]  # checked once, right after the encoder; nothing generated
    fitted = await asyncio.to_thread(decode_fitted, model, audio, None, 600, True, lambda: False)
    assert fitted is not None and {"book", "cleaning"} <= words(fitted[0])


async def test_cancelling_a_decode_frees_the_worker(asr_pool: BoundedPool, piper: LocalPiper) -> None:
    timed = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True, word_timestamps=True)
    pcm = np.concatenate([c.pcm for c in await speak(piper, BOOKING)])
    assert await asyncio.to_thread(asr_pool.wait_idle, 30)
    decode = asyncio.create_task(timed.transcribe(pcm, 8000))
    await asyncio.sleep(0)  # submitted; it is dropped if still queued, else it stops after its stage
    decode.cancel()
    with pytest.raises(asyncio.CancelledError):
        await decode
    assert await asyncio.to_thread(asr_pool.wait_idle, 30)
    assert timed.aborted_decodes <= 1
    async with asyncio.timeout(30):  # the worker is free and the next decode is whole
        transcript = await timed.transcribe(pcm, 8000)
    assert {"book", "cleaning"} <= words(transcript.text)
