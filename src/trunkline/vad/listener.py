"""The caller-side listening core for one leg: segmenter + endpointer + speculative decode, composed.

Feed every frame with its VAD flag (`push`), every ASR result (`on_transcript`), and call `poll(now)` at
`next_deadline()`. Out come the segmenter's events, `DecodeRequest`s to run on the ASR pool (speculative at
each silence, final when nothing can be reused), `DecodeCancelled` when speech resumes, `TurnEnded` when the
endpointer closes the turn, and `TurnTranscript` once the turn's text is known (at once when reused).
Answer every `DecodeRequest`, with "" when the decode failed, so an awaited turn still gets its transcript.
While the agent speaks, feed the same segment events to the `BargeInPolicy`; a turn whose burst it judged a
backchannel is the integration's to drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trunkline.vad.endpointing import (
    DecodeRequest,
    EndpointDecision,
    Endpointer,
    FinalAction,
    SpeculativeDecode,
)
from trunkline.vad.segmenter import (
    SegmentEvent,
    SilenceStarted,
    SpeechEnded,
    SpeechResumed,
    SpeechSegmenter,
    SpeechStarted,
)

# 80 ms of non-speech before the segmenter calls it silence and a speculative decode starts: a shorter wait
# starts a decode (0.5 CPU-s) at many stop consonants, and a running decode cannot be stopped.
AGENT_STOP_FRAMES = 4


def agent_segmenter() -> SpeechSegmenter:
    """The segmenter the agent listens with; the endpointing benchmark replays audio through the same."""
    return SpeechSegmenter(stop_frames=AGENT_STOP_FRAMES, pre_roll_ms=300)


@dataclass(frozen=True, slots=True)
class DecodeCancelled:
    """The speculative decode `request_id` is stale (speech resumed): cancel it if it has not started."""

    request_id: int
    now_s: float


@dataclass(frozen=True, slots=True, eq=False)
class TurnEnded:
    """The caller's turn is over (decided at `now_s`); `audio` is the utterance, pre-roll included."""

    onset_s: float
    end_s: float
    now_s: float
    audio: np.ndarray
    decision: EndpointDecision | None  # None when the segmenter ended it (its own silence/max length)
    transcript_request_id: int  # the request whose text is the turn's transcript


@dataclass(frozen=True, slots=True)
class TurnTranscript:
    """The turn's text; `reused` when it came from a speculative decode finished before the turn ended."""

    request_id: int
    text: str
    reused: bool
    now_s: float


ListenerEvent = SegmentEvent | DecodeRequest | DecodeCancelled | TurnEnded | TurnTranscript


class TurnListener:
    """Owns one segmenter, endpointer and speculative-decode tracker; pure (time passed in)."""

    def __init__(
        self, segmenter: SpeechSegmenter | None = None, endpointer: Endpointer | None = None
    ) -> None:
        self.segmenter = segmenter or SpeechSegmenter()
        self.endpointer = endpointer or Endpointer()
        self.speculative = SpeculativeDecode()

    def push(self, frame: np.ndarray, is_speech: bool, now: float) -> list[ListenerEvent]:
        """One frame (ending at `now`) and its VAD flag. A deadline already passed is honoured first."""
        events: list[ListenerEvent] = self.poll(now)
        for event in self.segmenter.push(frame, is_speech, now):
            events.append(event)
            self._route(event, now, events)
        return events

    def on_transcript(
        self,
        request_id: int,
        text: str,
        now: float,
        last_word_confidence: float | None = None,
        after_last_word_s: float | None = None,
    ) -> list[ListenerEvent]:
        """An ASR result arrived for `request_id` (speculative or final). With word timings, pass the last
        word's probability and `after_last_word_s` = the request audio's duration minus the last word's end:
        speech the ASR did not turn into words keeps a complete-looking text from ending the turn early."""
        events: list[ListenerEvent] = []
        trailing = self.speculative.trailing_silence_s(request_id)
        if self.speculative.result(request_id, text):
            untranscribed = None
            if after_last_word_s is not None and trailing is not None:
                untranscribed = max(0.0, after_last_word_s - trailing)
            self.endpointer.set_text(text, last_word_confidence, untranscribed)
            events.extend(self.poll(now))
        elif self.speculative.is_final(request_id):
            events.append(TurnTranscript(request_id, text, False, now))
        return events

    def poll(self, now: float) -> list[ListenerEvent]:
        """End the turn if the endpointer's deadline has passed."""
        decision = self.endpointer.poll(now)
        if decision is None:
            return []
        ended = self.segmenter.end_utterance(now)
        if ended is None:
            return []
        events: list[ListenerEvent] = [ended]
        self._turn_over(ended, decision, now, events)
        return events

    def next_deadline(self) -> float | None:
        return self.endpointer.next_deadline()

    def _route(self, event: SegmentEvent, now: float, events: list[ListenerEvent]) -> None:
        if isinstance(event, SpeechStarted):
            self.endpointer.speech_started(event.onset_s)
        elif isinstance(event, SilenceStarted):
            self.endpointer.silence_started(event.silence_start_s)
            events.append(self.speculative.silence_started(event))
        elif isinstance(event, SpeechResumed):
            self.endpointer.speech_resumed()
            cancelled = self.speculative.speech_resumed()
            if cancelled is not None:
                events.append(DecodeCancelled(cancelled, now))
        elif isinstance(event, SpeechEnded):  # the segmenter's own end (silence fallback or max length)
            self.endpointer.reset()
            self._turn_over(event, None, now, events)

    def _turn_over(
        self, ended: SpeechEnded, decision: EndpointDecision | None, now: float, events: list[ListenerEvent]
    ) -> None:
        final = self.speculative.turn_ended(ended)
        assert final.request_id is not None
        events.append(TurnEnded(ended.onset_s, ended.end_s, now, ended.audio, decision, final.request_id))
        if final.action is FinalAction.REUSE:
            events.append(TurnTranscript(final.request_id, final.text or "", True, now))
        elif final.action is FinalAction.DECODE and final.request is not None:
            events.append(final.request)
