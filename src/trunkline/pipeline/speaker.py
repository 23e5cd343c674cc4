"""The agent's mouth on one leg: clauses → TTS → `leg.play`, one leg utterance per reply, with playout
tracking so a barge-in knows which words the caller actually heard, and a prompt cache for fixed lines.

Synthesis runs ahead of playout (the leg queues audio; the pacer sends it in real time), so clause 2 is made
while clause 1 plays. `on_tick` (called for every inbound frame) notices the first packet of a reply going
out; the leg's `playout` stream reports completions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trunkline.logs import get_logger
from trunkline.mediaserver.outbound import OutboundQueueFull
from trunkline.pipeline.latency import TurnLatency
from trunkline.pipeline.tts import PromptCache, SpeechSynthesizer, TtsUnavailable
from trunkline.vad.bargein import heard_text

log = get_logger("trunkline.pipeline.speaker")
# Replies often open with one of these (the first clause ends at its first comma): made once per voice and
# rate at start-up and replayed from the prompt cache, so the first audio of such a reply needs no synthesis.
STOCK_LEADS = ("Sure,", "Okay,", "Great,", "Of course,", "Certainly,", "Alright,", "Yes,", "No problem,",
               "Got it,", "Thanks,", "Thank you,", "Sorry,")  # fmt: skip


def is_stock_phrase(text: str) -> bool:
    """A clause short enough (≤ 3 words) to be worth caching whole: "Sure,", "Of course.", "Got it,"."""
    stripped = text.strip()
    return len(stripped) <= 24 and len(stripped.split()) <= 3


@dataclass(slots=True)
class Playback:
    """One reply (or prompt) as one leg utterance: its clauses with their sample spans at the leg's rate."""

    uid: str
    latency: TurnLatency | None
    clauses: list[tuple[str, int, int]] = field(default_factory=list)
    total_samples: int = 0
    ended: bool = False
    interrupted: bool = False
    heard_text: str | None = None  # set when cut by barge-in
    started_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return " ".join(c[0] for c in self.clauses)

    def heard(self, samples_played: int) -> str:
        """The words of this reply the caller heard after `samples_played` samples went out."""
        parts: list[str] = []
        for text, start, end in self.clauses:
            if samples_played >= end:
                parts.append(text)
            elif samples_played > start:
                partial = heard_text(text, samples_played - start, end - start)
                if partial:
                    parts.append(partial)
                break
            else:
                break
        return " ".join(parts)

    def unheard_from(self, samples_played: int) -> list[str]:
        """The clauses from the one that was cut (inclusive): what RESUME_CUT says again."""
        return [text for text, _start, end in self.clauses if end > samples_played]


@dataclass(frozen=True, slots=True)
class Cut:
    """A reply cut by barge-in: what the caller heard and the clauses left unsaid (from the cut one)."""

    playback: Playback
    heard: str
    unsaid: tuple[str, ...]


class Speaker:
    """Plays replies on `leg` with `synth` (already at the leg's rate). `on_started`/`on_finished` tell the
    agent when the caller starts hearing the agent and when all queued speech has played."""

    def __init__(
        self,
        leg: Any,
        synth: SpeechSynthesizer,
        cache: PromptCache,
        *,
        clock: Callable[[], float],
        on_started: Callable[[float], None] | None = None,
        on_finished: Callable[[float], None] | None = None,
    ) -> None:
        self._leg = leg
        self._synth = synth
        self._cache = cache
        self._clock = clock
        self.on_started = on_started
        self.on_finished = on_finished
        self._seq = 0
        self._active: list[Playback] = []
        self.tts_characters = 0
        self.tts_samples = 0

    @property
    def speaking(self) -> bool:
        """True while any reply is queued or playing."""
        return bool(self._active)

    def begin(self, latency: TurnLatency | None = None) -> Playback:
        self._seq += 1
        playback = Playback(f"a{self._seq}", latency)
        self._active.append(playback)
        return playback

    async def say(self, playback: Playback, text: str, *, cached: bool = False) -> None:
        """Synthesize one clause and queue it behind what `playback` already holds."""
        if playback.interrupted or playback.ended or not text.strip():
            return
        start = playback.total_samples
        cached = cached or is_stock_phrase(text)
        stream = self._cache.stream(self._synth, text) if cached else self._synth.stream(text)
        try:
            async for chunk in stream:
                if playback.interrupted:
                    break
                if playback.latency is not None:
                    playback.latency.mark("first_tts_audio", self._clock())
                try:
                    self._leg.play(playback.uid, chunk.pcm, chunk.sample_rate_hz)
                except OutboundQueueFull:
                    log.warning("speaker.queue_full")
                    break
                playback.total_samples += len(chunk.pcm)
        except TtsUnavailable as exc:
            log.warning("speaker.tts_failed", reason=exc.reason)
        finally:
            await _aclose(stream)
        if playback.total_samples > start:
            playback.clauses.append((text.strip(), start, playback.total_samples))
            self.tts_characters += len(text)
            self.tts_samples += playback.total_samples - start

    def end(self, playback: Playback) -> None:
        """No more clauses for `playback`: it completes once its audio has gone out."""
        if playback.ended or playback.interrupted:
            return
        playback.ended = True
        if playback.total_samples == 0:
            self._complete(playback, self._clock())
        else:
            self._leg.end_utterance(playback.uid)

    def on_tick(self, now: float) -> None:
        """Called per inbound frame: notice the first packet of each reply leaving."""
        for playback in self._active:
            if playback.started_at is None and playback.total_samples:
                position = self._leg.played(playback.uid)
                if position is not None and position.samples_played > 0:
                    self._started(playback, now)

    def on_playout(self, uid: str, now: float) -> None:
        """The leg reports utterance `uid` completed."""
        for playback in list(self._active):
            if playback.uid == uid:
                if playback.started_at is None:
                    self._started(playback, now)
                self._complete(playback, now)

    def pause(self) -> None:
        self._leg.session.outbound.pause()

    def resume(self) -> None:
        self._leg.session.outbound.resume()

    def interrupt(self) -> list[Cut]:
        """Barge-in: drop all queued audio now (the next tick sends silence) and say what was heard."""
        positions = {p.utterance_id: p.samples_played for p in self._leg.flush()}
        self.resume()
        now = self._clock()
        cuts: list[Cut] = []
        for playback in list(self._active):
            played = positions.get(playback.uid, 0)
            playback.interrupted = True
            playback.heard_text = playback.heard(played)
            cuts.append(Cut(playback, playback.heard_text, tuple(playback.unheard_from(played))))
            self._complete(playback, now)
        return cuts

    def _started(self, playback: Playback, now: float) -> None:
        playback.started_at = now
        if playback.latency is not None:
            playback.latency.mark("first_rtp_out", now)
        if self.on_started is not None:
            self.on_started(now)

    def _complete(self, playback: Playback, now: float) -> None:
        if playback in self._active:
            self._active.remove(playback)
        playback.done.set()
        if not self._active and self.on_finished is not None:
            self.on_finished(now)


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
