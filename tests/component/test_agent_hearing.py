"""The agent's listening side on the event loop: a turn ends at the endpointer's deadline even when no
further frame arrives (a loop timer, not the next frame), and the decode started when the silence began
is the turn's transcript (one decode per turn, none after the turn ended)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from trunkline.pipeline.asr import Transcript, Word
from trunkline.pipeline.hearing import Hearing
from trunkline.pipeline.speaker import Speaker
from trunkline.pipeline.tts import PromptCache
from trunkline.pipeline.work import CallerTurn, WorkItem
from trunkline.vad.bargein import BargeInPolicy
from trunkline.vad.endpointing import EndpointConfig, Endpointer
from trunkline.vad.listener import TurnListener
from trunkline.vad.segmenter import SpeechSegmenter
from trunkline.vad.turns import CallTimers

RATE = 8000
FRAME = RATE // 50
SPEECH = (8000 * np.sin(np.arange(FRAME) * 2 * np.pi * 440 / RATE)).astype(np.int16)
SILENCE = np.zeros(FRAME, dtype=np.int16)


class LevelVad:
    """A VAD backend for tests: loud frames are speech."""

    def is_speech(self, frame: np.ndarray) -> bool:
        return int(np.abs(frame).max()) > 1000


class ScriptedAsr:
    """An ASR backend answering every decode with `text` once `release` is set; counts its calls."""

    def __init__(self, text: str, last_word_probability: float | None = None) -> None:
        self.text = text
        self.probability = last_word_probability
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def transcribe(
        self, pcm: np.ndarray, sample_rate_hz: int, *, language: str = "en", prompt: str | None = None
    ) -> Transcript:
        self.calls += 1
        await self.release.wait()
        duration_s = len(pcm) / sample_rate_hz
        words = None
        if self.probability is not None:  # one word spanning the speech, ending where the silence began
            words = (Word(self.text, 0.0, max(0.0, duration_s - 0.1), self.probability),)
        return Transcript(self.text, duration_s, 0.0, words, 0.0)


class QuietSynth:
    """Never asked to speak in these tests (the agent is silent)."""

    sample_rate_hz = RATE
    voice_id = "none"

    def stream(self, text: str) -> AsyncIterator[Any]:
        raise AssertionError("nothing is said in these tests")


class Leg:
    """The parts of a media leg that listening uses: inbound frames we feed by hand."""

    sample_rate_hz = RATE

    def __init__(self) -> None:
        self.queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self.frames = self._frames()

    async def _frames(self) -> AsyncIterator[np.ndarray]:
        while (frame := await self.queue.get()) is not None:
            yield frame

    def feed(self, *frames: np.ndarray) -> None:
        for frame in frames:
            self.queue.put_nowait(frame)


def hearing(leg: Leg, asr: ScriptedAsr, submitted: asyncio.Queue[WorkItem]) -> Hearing:
    loop = asyncio.get_running_loop()
    config = EndpointConfig(complete_hangover_ms=50, incomplete_hangover_ms=150, unknown_hangover_ms=150)
    return Hearing(
        leg,
        vad=LevelVad(),
        listener=TurnListener(SpeechSegmenter(stop_frames=4), Endpointer(config)),
        barge_in=BargeInPolicy(),
        timers=CallTimers(),
        asr=asr,
        speaker=Speaker(leg, QuietSynth(), PromptCache(), clock=loop.time),
        language="en",
        clock=loop.time,
        submit=submitted.put_nowait,
        cancel_current=lambda: None,
        timers_changed=lambda: None,
    )


async def listen_for_turn(leg: Leg, ears: Hearing, submitted: asyncio.Queue[WorkItem]) -> CallerTurn:
    async with asyncio.TaskGroup() as group:
        group.create_task(ears.run(group))
        leg.feed(*[SPEECH] * 25, *[SILENCE] * 5)  # then nothing: the caller's RTP stops arriving
        async with asyncio.timeout(5):
            turn = await submitted.get()
        leg.feed(None)  # the leg closes
    assert isinstance(turn, CallerTurn)
    return turn


async def test_a_turn_ends_at_its_deadline_without_another_frame() -> None:
    leg, asr, submitted = Leg(), ScriptedAsr("so I was wondering"), asyncio.Queue[WorkItem]()
    ears = hearing(leg, asr, submitted)
    turn = await listen_for_turn(leg, ears, submitted)
    assert turn.text == "so I was wondering"
    assert turn.latency is not None and list(turn.latency.breakdown_ms()) == ["endpoint", "transcript"]
    assert turn.latency.marks["endpoint"] >= turn.end_s + 0.15 - 1e-6  # the incomplete-text hangover
    assert asr.calls == 1  # the speculative decode was the transcript
    assert ears.speculative_stats.reused == 1


async def test_a_speculative_decode_still_running_at_the_deadline_is_awaited_not_redone() -> None:
    leg, asr, submitted = Leg(), ScriptedAsr("Book me in for Tuesday."), asyncio.Queue[WorkItem]()
    asr.release.clear()  # the decode outlasts the hangover
    ears = hearing(leg, asr, submitted)
    loop = asyncio.get_running_loop()
    loop.call_later(0.4, asr.release.set)
    turn = await listen_for_turn(leg, ears, submitted)
    assert turn.text == "Book me in for Tuesday."
    assert turn.latency is not None
    assert turn.latency.marks["transcript"] > turn.latency.marks["endpoint"]
    assert asr.calls == 1
    assert ears.speculative_stats.awaited == 1


async def test_a_doubtful_last_word_keeps_a_complete_looking_turn_open_longer() -> None:
    """whisper's probability for the last word reaches the endpointer: a complete-looking text whose last
    word the ASR doubts gets the unknown-text hangover, not the short complete one."""
    leg, asr, submitted = Leg(), ScriptedAsr("I need it on Tuesday.", 0.2), asyncio.Queue[WorkItem]()
    ears = hearing(leg, asr, submitted)
    turn = await listen_for_turn(leg, ears, submitted)
    assert turn.text == "I need it on Tuesday."
    assert turn.latency is not None
    assert turn.latency.marks["endpoint"] >= turn.end_s + 0.15 - 1e-6  # not the 50 ms complete hangover
