"""Cloud ASR and TTS backends with the real `openai` client against the OpenAI-compatible stub."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from tests.peers.openai_stub import Hang, Hold, HttpError, OpenAIStub, SpeechStream, TranscriptionReply
from trunkline.pipeline.asr import AsrError, AsrUnavailable, OpenAITranscriber, SpeechRecognizer
from trunkline.pipeline.llm import make_openai_client
from trunkline.pipeline.tts import AudioChunk, OpenAISpeech, PromptCache, SpeechSynthesizer, TtsUnavailable


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


@pytest.fixture
async def client(stub: OpenAIStub) -> AsyncIterator[Any]:
    api = make_openai_client(stub.base_url, "sk-test-key")
    yield api
    await api.close()


def tone(freq_hz: float, rate_hz: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (8000 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate_hz / len(pcm))


def split_bytes(data: bytes, size: int) -> tuple[bytes, ...]:
    return tuple(data[i : i + size] for i in range(0, len(data), size))


async def collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with asyncio.timeout(10):
        return [c async for c in chunks]


# --- transcription ------------------------------------------------------------------------------------


async def test_transcription_posts_a_wav_and_returns_the_text(stub: OpenAIStub, client: Any) -> None:
    stub.transcriptions.append(TranscriptionReply(" I'd like to book a cleaning. "))
    asr = OpenAITranscriber(client, model="whisper-1")
    assert isinstance(asr, SpeechRecognizer)
    pcm = tone(440, 8000, 1.25)
    result = await asr.transcribe(pcm, 8000, prompt="Acme Dental")
    assert result.text == "I'd like to book a cleaning."
    assert result.duration_s == pytest.approx(1.25)
    assert result.processing_ms > 0
    (request,) = stub.requests_to("/audio/transcriptions")
    assert request.form["model"] == "whisper-1"
    assert request.form["language"] == "en" and request.form["prompt"] == "Acme Dental"
    name, data = request.files["file"]
    assert name.endswith(".wav")
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert np.array_equal(np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), pcm)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False), (401, False)])
async def test_transcription_http_errors_are_typed(
    stub: OpenAIStub, client: Any, status: int, retryable: bool
) -> None:
    stub.transcriptions.append(HttpError(status))
    with pytest.raises(AsrUnavailable) as info:
        await OpenAITranscriber(client, model="whisper-1").transcribe(tone(300, 8000, 0.5), 8000)
    assert info.value.reason == f"http {status}" and info.value.retryable is retryable
    assert len(stub.requests_to("/audio/transcriptions")) == 1  # no SDK retries


async def test_transcription_times_out(stub: OpenAIStub, client: Any) -> None:
    stub.transcriptions.append(Hang(stub.gate()))
    with pytest.raises(AsrUnavailable) as info:
        async with asyncio.timeout(10):
            await OpenAITranscriber(client, model="whisper-1", timeout_s=0.3).transcribe(
                tone(300, 8000, 0.5), 8000
            )
    assert info.value.reason == "timeout" and info.value.retryable


@pytest.mark.parametrize(
    "pcm",
    [
        np.zeros(0, np.int16),
        np.zeros(100, np.float32),
        np.zeros((2, 100), np.int16),
        np.zeros(8000 * 31, np.int16),
    ],
)
async def test_transcription_rejects_bad_input_without_a_request(
    stub: OpenAIStub, client: Any, pcm: Any
) -> None:
    with pytest.raises(AsrError):
        await OpenAITranscriber(client, model="whisper-1").transcribe(pcm, 8000)
    assert stub.requests == []


# --- speech -------------------------------------------------------------------------------------------


async def test_speech_streams_pcm_and_keeps_odd_bytes_for_the_next_read(
    stub: OpenAIStub, client: Any
) -> None:
    source = tone(440, 24_000, 0.5)
    stub.speech.append(SpeechStream(split_bytes(source.astype("<i2").tobytes(), 1001)))
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", output_rate_hz=24_000)
    assert isinstance(tts, SpeechSynthesizer)
    chunks = await collect(tts.stream("Hello there."))
    assert len(chunks) > 1 and all(c.sample_rate_hz == 24_000 for c in chunks)
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), source)
    body = stub.requests_to("/audio/speech")[0].json
    assert body == {"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "pcm"}


async def test_speech_is_resampled_and_yields_before_the_response_ends(stub: OpenAIStub, client: Any) -> None:
    gate = stub.gate()
    data = tone(440, 24_000, 1.0).astype("<i2").tobytes()
    stub.speech.append(SpeechStream((data[:9600], Hold(gate), data[9600:])))
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", output_rate_hz=8000)
    chunks: list[AudioChunk] = []
    async with asyncio.timeout(10):
        async for chunk in tts.stream("Hello there."):
            if not chunks:
                assert not gate.is_set()  # audio arrived while the server still held the rest back
                gate.set()
            chunks.append(chunk)
    audio = np.concatenate([c.pcm for c in chunks])
    assert all(c.sample_rate_hz == 8000 for c in chunks)
    assert abs(len(audio) - 8000) <= 2
    assert dominant_hz(audio, 8000) == pytest.approx(440, abs=2)


async def test_speech_stall_raises_tts_unavailable(stub: OpenAIStub, client: Any) -> None:
    data = tone(440, 24_000, 0.5).astype("<i2").tobytes()
    stub.speech.append(SpeechStream((data[:4800], Hold(stub.gate()))))
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", stall_timeout_s=0.3, output_rate_hz=24_000)
    got: list[AudioChunk] = []
    with pytest.raises(TtsUnavailable) as info:
        async with asyncio.timeout(10):
            async for chunk in tts.stream("Hello"):
                got.append(chunk)
    assert info.value.reason == "speech stream stalled" and info.value.retryable
    assert sum(len(c.pcm) for c in got) == 2400


async def test_speech_without_headers_times_out(stub: OpenAIStub, client: Any) -> None:
    stub.speech.append(Hang(stub.gate()))
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", first_byte_timeout_s=0.3)
    with pytest.raises(TtsUnavailable) as info:
        await collect(tts.stream("Hello"))
    assert info.value.retryable


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (400, False)])
async def test_speech_http_errors_are_typed(
    stub: OpenAIStub, client: Any, status: int, retryable: bool
) -> None:
    stub.speech.append(HttpError(status))
    with pytest.raises(TtsUnavailable) as info:
        await collect(OpenAISpeech(client, model="tts-1", voice="alloy").stream("Hello"))
    assert info.value.reason == f"http {status}" and info.value.retryable is retryable


async def test_empty_text_makes_no_request(stub: OpenAIStub, client: Any) -> None:
    assert await collect(OpenAISpeech(client, model="tts-1", voice="alloy").stream("  ")) == []
    assert stub.requests == []


# --- cached fixed prompts -----------------------------------------------------------------------------


async def test_prompt_cache_synthesizes_each_prompt_once(stub: OpenAIStub, client: Any) -> None:
    greeting = tone(300, 24_000, 0.3).astype("<i2").tobytes()
    sorry = tone(500, 24_000, 0.2).astype("<i2").tobytes()
    stub.speech.extend([SpeechStream(split_bytes(greeting, 4800)), SpeechStream((sorry,)),
                        SpeechStream((greeting,))])  # fmt: skip
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", output_rate_hz=24_000)
    cache = PromptCache(max_entries=1)
    first = await collect(cache.stream(tts, "Thanks for calling Acme."))
    again = await collect(cache.stream(tts, " Thanks for calling Acme. "))
    assert [c.pcm.tobytes() for c in again] == [c.pcm.tobytes() for c in first]
    assert b"".join(c.pcm.tobytes() for c in first) == greeting
    assert (cache.hits, cache.misses, len(stub.requests)) == (1, 1, 1)
    await cache.warm(tts, ["Sorry, one moment."])  # evicts the greeting (max_entries=1)
    assert (
        cache.get(tts, "Sorry, one moment.") is not None
        and cache.get(tts, "Thanks for calling Acme.") is None
    )
    await collect(cache.stream(tts, "Thanks for calling Acme."))
    assert [r.json["input"] for r in stub.requests if r.json] == [
        "Thanks for calling Acme.", "Sorry, one moment.", "Thanks for calling Acme."]  # fmt: skip


async def test_prompt_cache_does_not_keep_a_cut_short_synthesis(stub: OpenAIStub, client: Any) -> None:
    data = tone(300, 24_000, 0.4).astype("<i2").tobytes()
    stub.speech.append(SpeechStream(split_bytes(data, 4800)))
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", output_rate_hz=24_000)
    cache = PromptCache()
    stream = cache.stream(tts, "Hello")
    async with asyncio.timeout(10):
        await anext(stream)
        await stream.aclose()  # barge-in during the greeting
    assert cache.get(tts, "Hello") is None and len(cache) == 0


async def test_a_stock_lead_phrase_is_synthesized_once_and_replayed(stub: OpenAIStub, client: Any) -> None:
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.pipeline.speaker import Speaker

    lead = tone(300, 24_000, 0.3).astype("<i2").tobytes()
    rest = tone(500, 24_000, 0.5).astype("<i2").tobytes()
    stub.speech.extend([SpeechStream((lead,)), SpeechStream((rest,)), SpeechStream((rest,))])
    tts = OpenAISpeech(client, model="tts-1", voice="alloy", output_rate_hz=8000)
    engine = MediaEngine("127.0.0.1", 41000, 41099)
    await engine.start()
    try:
        leg = engine.open_leg("PCMU", 8000, 0)
        speaker = Speaker(leg, tts, PromptCache(), clock=asyncio.get_running_loop().time)
        for _ in range(2):  # two replies that open the same way
            playback = speaker.begin()
            await speaker.say(playback, "Sure,")
            await speaker.say(playback, "Tuesday at ten works for you.")
            assert playback.total_samples > 8000 * 0.7  # both clauses were queued on the leg
    finally:
        await engine.aclose()
    assert [r.json["input"] for r in stub.requests if r.json] == [
        "Sure,", "Tuesday at ten works for you.", "Tuesday at ten works for you."]  # fmt: skip
