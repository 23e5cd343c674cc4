"""Streaming piper with the real voice (en_US-joe-medium): the split graphs give the whole model's audio,
chunks stitch to the one-shot decode, the first chunk is short, and the speech stays intelligible."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr

from trunkline.codecs.lowdelay import LowDelayResampler
from trunkline.pipeline.asr import LocalWhisper
from trunkline.pipeline.models import (
    BoundedPool,
    PiperSpec,
    _piper_session,
    piper_stream_voice,
    piper_voice,
    piper_voice_paths,
)
from trunkline.pipeline.piper_stream import (
    StreamSettings,
    StreamVoice,
    check_stream_voice,
    load_stream_voice,
    sentence_scales,
    snr_db,
    to_int16,
)
from trunkline.pipeline.tts import AudioChunk, LocalPiper

pytestmark = pytest.mark.integration

SENTENCES = [
    "Sure, one moment.",
    "Of course.",
    "Yes.",
    "I can help you with that booking, no problem at all, just give me a second.",
    "Your appointment is on Tuesday, March third, at ten thirty in the morning with Doctor Patel.",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("split-cache")


@pytest.fixture(scope="module")
def spec() -> PiperSpec:
    model, config = piper_voice_paths()
    return PiperSpec(str(model), str(config), 2)


@pytest.fixture(scope="module")
def split(spec: PiperSpec, cache_dir: Path) -> StreamVoice:
    stream = piper_stream_voice(spec, StreamSettings(), str(cache_dir))
    assert stream is not None, "the bundled voice must split (see the models.piper_stream_* log)"
    return stream


@pytest.fixture(scope="module")
def pool() -> Iterator[BoundedPool]:
    pool = BoundedPool("tts", max_workers=1, max_queued=2)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def piper(pool: BoundedPool, cache_dir: Path) -> LocalPiper:
    tts = LocalPiper(pool, output_rate_hz=8000, split_cache_dir=cache_dir)
    tts.preload()
    return tts


def test_split_matches_the_whole_model_and_is_cached(
    spec: PiperSpec, split: StreamVoice, tmp_path: Path
) -> None:
    whole_db, chunked_db = check_stream_voice(split, piper_voice(spec), StreamSettings())
    assert whole_db >= 80 and chunked_db >= 40
    # the process keeps one split per voice (maybe loaded by an earlier test): split again into a fresh dir
    hop = int(piper_voice(spec).config.hop_length)
    again = load_stream_voice(spec.model_path, tmp_path, lambda m: _piper_session(m, 1), hop)
    assert sorted(p.name.split(".")[-2] for p in tmp_path.iterdir()) == ["decoder", "encoder", "flow"]
    assert check_stream_voice(again, piper_voice(spec), StreamSettings())[0] >= 80


@pytest.mark.parametrize("text", SENTENCES)
def test_stitched_chunks_equal_the_one_shot_decode(spec: PiperSpec, split: StreamVoice, text: str) -> None:
    voice = piper_voice(spec)
    settings = StreamSettings()
    z_p = split.latent(voice.phonemes_to_ids(voice.phonemize(text)[0]), sentence_scales(voice.config))
    pieces = [audio for audio, _ in split.stream(z_p, settings)]
    one_shot = split.decode_all(z_p)
    stitched = np.concatenate(pieces)
    assert len(stitched) == len(one_shot)
    assert snr_db(one_shot, stitched) >= 40
    assert len(pieces[0]) == min(z_p.shape[2], settings.first_frames) * split.hop_length or len(pieces) == 1
    if z_p.shape[2] > 2 * settings.first_frames:
        assert len(pieces) >= 3 and len(pieces[0]) / 22050 < 0.1  # the first audio is under 0.1 s of speech
    # resampled chunk by chunk through one stream (as LocalPiper does) = the one-shot resampling
    resampler = LowDelayResampler(22050, 8000)
    streamed = [resampler.process(to_int16(p)) for p in pieces] + [resampler.flush()]
    whole = LowDelayResampler(22050, 8000)
    reference = np.concatenate([whole.process(to_int16(one_shot)), whole.flush()])
    assert len(reference) == len(soxr.resample(to_int16(one_shot), 22050, 8000))
    assert snr_db(reference, np.concatenate(streamed)) >= 40


async def speak(tts: LocalPiper, text: str) -> list[AudioChunk]:
    async with asyncio.timeout(30):
        return [chunk async for chunk in tts.stream(text)]


async def test_each_sentence_streams_in_chunks_the_first_one_short(piper: LocalPiper) -> None:
    chunks = await speak(piper, "Hello there. We are open until six. Goodbye.")
    assert piper.streams and len(chunks) >= 6  # several chunks per sentence, not one per sentence
    assert all(c.sample_rate_hz == 8000 and c.pcm.dtype == np.int16 for c in chunks)
    assert chunks[0].duration_ms < 100
    total_s = sum(len(c.pcm) for c in chunks) / 8000
    assert 1.5 < total_s < 6.0


async def test_without_streaming_each_sentence_is_one_chunk(pool: BoundedPool) -> None:
    whole = LocalPiper(pool, output_rate_hz=8000, streaming=False)
    chunks = await speak(whole, "Hello there. We are open until six. Goodbye.")
    assert len(chunks) == 3 and not whole.streams


async def test_stopping_after_the_first_chunk_frees_the_worker(piper: LocalPiper, pool: BoundedPool) -> None:
    stream = piper.stream("I can help you with that booking, no problem at all, just give me a second.")
    async with asyncio.timeout(30):
        first = await anext(stream)
        await stream.aclose()
        assert first.duration_ms < 100
        assert await asyncio.to_thread(pool.wait_idle, 10)


async def test_streamed_speech_is_intelligible(piper: LocalPiper) -> None:
    asr_pool = BoundedPool("asr", max_workers=1, max_queued=1)
    try:
        whisper = LocalWhisper(asr_pool, cpu_threads=2)
        pcm = np.concatenate([c.pcm for c in await speak(piper, "Sure, I can book that for you.")])
        async with asyncio.timeout(60):
            transcript = await whisper.transcribe(pcm, 8000)
        heard = set(re.findall(r"[a-z0-9]+", transcript.text.lower()))
        assert "sure" in heard and len({"book", "that", "for", "you"} & heard) >= 3, transcript.text
    finally:
        asr_pool.shutdown()
