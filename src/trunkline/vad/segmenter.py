"""Pure speech segmenter: per-frame VAD decisions in, utterance events out (quiet → starting → speaking →
stopping), with pre-roll and hysteresis.

Time is passed in: `now` is the monotonic time (s) at which a frame became available, i.e. the end of the
audio it holds; a frame pushed at `now` covers [now − frame_ms, now]. `SilenceStarted` is the moment to
start a speculative decode; `SpeechResumed` cancels it; whoever ends the turn (an `Endpointer`, or
`end_silence_ms` here) gets `SpeechEnded` with the utterance audio, pre-roll included.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int16)


class SegmenterState(Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


class EndReason(Enum):
    SILENCE = "silence"  # end_silence_ms of silence (the segmenter's own fallback)
    ENDPOINT = "endpoint"  # end_utterance() called, normally by the endpointer
    MAX_LENGTH = "max_length"  # max_utterance_ms since onset


@dataclass(frozen=True, slots=True, eq=False)
class SpeechStarted:
    """Speech confirmed. `audio` = up to `pre_roll_ms` before the onset plus the frames since the onset."""

    onset_s: float
    now_s: float
    audio: np.ndarray
    pre_roll_samples: int
    speech_ms: int  # voiced time since the onset


@dataclass(frozen=True, slots=True, eq=False)
class SpeechContinuing:
    """One more frame of the open utterance (speech or not); after `SpeechStarted.audio`, the full stream."""

    now_s: float
    frame: np.ndarray
    is_speech: bool
    speech_ms: int  # voiced time since the onset


@dataclass(frozen=True, slots=True, eq=False)
class SilenceStarted:
    """Speech stopped at `silence_start_s` (detected at `now_s`): start a speculative decode of `audio`."""

    silence_start_s: float
    now_s: float
    audio: np.ndarray


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back before the utterance ended: any speculative result for the silence is stale."""

    resumed_s: float
    now_s: float
    speech_ms: int  # voiced time since `resumed_s`


@dataclass(frozen=True, slots=True, eq=False)
class SpeechEnded:
    """The utterance is over: `audio` runs from the pre-roll to `end_s` plus at most `tail_ms` of silence."""

    onset_s: float
    end_s: float
    now_s: float
    audio: np.ndarray
    reason: EndReason


SegmentEvent = SpeechStarted | SpeechContinuing | SilenceStarted | SpeechResumed | SpeechEnded


class SpeechSegmenter:
    """Hysteresis over VAD flags. Speech starts after `start_frames` speech frames within
    `start_window_frames`; silence starts after `stop_frames` non-speech frames in a row; speech resumes
    after `resume_frames` speech frames in a row (shorter blips, clicks or breath, keep the silence)."""

    def __init__(
        self,
        frame_ms: int = 20,
        start_frames: int = 3,
        start_window_frames: int = 5,
        stop_frames: int = 2,
        resume_frames: int = 2,
        pre_roll_ms: int = 300,
        tail_ms: int = 200,
        end_silence_ms: int | None = None,
        max_utterance_ms: int = 60_000,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        if not 1 <= start_frames <= start_window_frames:
            raise ValueError("need 1 <= start_frames <= start_window_frames")
        if stop_frames < 1 or resume_frames < 1:
            raise ValueError("stop_frames and resume_frames must be >= 1")
        if min(pre_roll_ms, tail_ms) < 0 or (end_silence_ms is not None and end_silence_ms <= 0):
            raise ValueError("pre_roll_ms and tail_ms must be >= 0, end_silence_ms > 0")
        self.frame_ms = frame_ms
        self.start_frames = start_frames
        self.start_window_frames = start_window_frames
        self.stop_frames = stop_frames
        self.resume_frames = resume_frames
        self.pre_roll_ms = pre_roll_ms
        self.tail_frames = -(-tail_ms // frame_ms)
        self.end_silence_ms = end_silence_ms
        self.max_utterance_ms = max_utterance_ms
        self._frame_s = frame_ms / 1000
        self._pre_roll: deque[np.ndarray] = deque(maxlen=-(-pre_roll_ms // frame_ms))
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self.state = SegmenterState.QUIET
        self._candidate: list[tuple[np.ndarray, bool, float]] = []  # (frame, is_speech, now) while STARTING
        self._frames: list[np.ndarray] = []  # the open utterance, pre-roll first
        self._pre_roll_frames = 0
        self._onset_s = 0.0
        self._speech_end_s = 0.0
        self._speech_end_index = 0  # len(self._frames) after the last speech frame
        self._speech_ms = 0
        self._silent_run = 0
        self._speech_run = 0

    @property
    def in_utterance(self) -> bool:
        """True between SpeechStarted and SpeechEnded."""
        return self.state in (SegmenterState.SPEAKING, SegmenterState.STOPPING)

    @property
    def speech_end_s(self) -> float | None:
        """End of the last speech frame while STOPPING (when the current silence began), else None."""
        return self._speech_end_s if self.state is SegmenterState.STOPPING else None

    def push(self, frame: np.ndarray, is_speech: bool, now: float) -> list[SegmentEvent]:
        """Feed the next frame and its VAD flag; returns the events it causes (usually none or one)."""
        if self.state is SegmenterState.QUIET:
            if not is_speech:
                self._pre_roll.append(frame)
                return []
            self.state = SegmenterState.STARTING
        if self.state is SegmenterState.STARTING:
            return self._push_starting(frame, is_speech, now)
        events: list[SegmentEvent] = []
        self._frames.append(frame)
        if is_speech:
            self._speech_ms += self.frame_ms
        events.append(SpeechContinuing(now, frame, is_speech, self._speech_ms))
        if self.state is SegmenterState.SPEAKING:
            self._push_speaking(is_speech, now, events)
        else:
            self._push_stopping(is_speech, now, events)
        if self.in_utterance:
            if (now - self._onset_s) * 1000 >= self.max_utterance_ms:
                events.append(self._end(now, EndReason.MAX_LENGTH))
            elif self._silence_over(now):
                events.append(self._end(now, EndReason.SILENCE))
        return events

    def end_utterance(self, now: float) -> SpeechEnded | None:
        """End the open utterance now (the endpointer decided); None when there is none."""
        if not self.in_utterance:
            return None
        return self._end(now, EndReason.ENDPOINT)

    def reset(self) -> None:
        """Drop everything, including the pre-roll (a new call, or audio known to be unrelated)."""
        self._pre_roll.clear()
        self._reset_utterance()

    def _push_starting(self, frame: np.ndarray, is_speech: bool, now: float) -> list[SegmentEvent]:
        self._candidate.append((frame, is_speech, now))
        if sum(1 for _, s, _ in self._candidate if s) >= self.start_frames:
            return [self._start(now)]
        if len(self._candidate) >= self.start_window_frames:
            # Slide: the oldest frame moves to the pre-roll, then any non-speech frames that now lead.
            self._pre_roll.append(self._candidate.pop(0)[0])
            while self._candidate and not self._candidate[0][1]:
                self._pre_roll.append(self._candidate.pop(0)[0])
            if not self._candidate:
                self.state = SegmenterState.QUIET
        return []

    def _start(self, now: float) -> SpeechStarted:
        first_now = self._candidate[0][2]
        self._onset_s = first_now - self._frame_s
        self._frames = list(self._pre_roll)
        self._pre_roll_frames = len(self._frames)
        self._pre_roll.clear()
        pre_roll_samples = sum(f.size for f in self._frames)
        for frame, speech, _ in self._candidate:
            self._frames.append(frame)
            if speech:
                self._speech_ms += self.frame_ms
        # The frame that completes start_frames is a speech frame, so the speech ends with it.
        self._speech_end_index = len(self._frames)
        self._speech_end_s = now
        self._candidate = []
        self.state = SegmenterState.SPEAKING
        self._silent_run = 0
        return SpeechStarted(self._onset_s, now, _concat(self._frames), pre_roll_samples, self._speech_ms)

    def _push_speaking(self, is_speech: bool, now: float, events: list[SegmentEvent]) -> None:
        if is_speech:
            self._silent_run = 0
            self._speech_end_index = len(self._frames)
            self._speech_end_s = now
            return
        self._silent_run += 1
        if self._silent_run >= self.stop_frames:
            self.state = SegmenterState.STOPPING
            self._speech_run = 0
            events.append(SilenceStarted(self._speech_end_s, now, _concat(self._frames)))

    def _push_stopping(self, is_speech: bool, now: float, events: list[SegmentEvent]) -> None:
        if not is_speech:
            self._speech_run = 0
            return
        self._speech_run += 1
        if self._speech_run >= self.resume_frames:
            self.state = SegmenterState.SPEAKING
            self._silent_run = 0
            self._speech_end_index = len(self._frames)
            self._speech_end_s = now
            resumed_s = now - self._speech_run * self._frame_s
            events.append(SpeechResumed(resumed_s, now, self._speech_run * self.frame_ms))

    def _silence_over(self, now: float) -> bool:
        return (
            self.state is SegmenterState.STOPPING
            and self.end_silence_ms is not None
            and (now - self._speech_end_s) * 1000 >= self.end_silence_ms - 1e-6
        )

    def _end(self, now: float, reason: EndReason) -> SpeechEnded:
        end_s = self._speech_end_s if self.state is SegmenterState.STOPPING else now
        keep = len(self._frames) if self.state is SegmenterState.SPEAKING else self._speech_end_index
        audio = _concat(self._frames[: keep + self.tail_frames])
        onset = self._onset_s
        self._reset_utterance()
        return SpeechEnded(onset, end_s, now, audio, reason)


def _concat(frames: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(frames) if frames else _EMPTY
