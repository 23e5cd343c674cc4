"""Pure barge-in policy: when caller speech during agent playback pauses, interrupts or resumes the agent, and
how much of the agent's message the caller actually heard.

While the agent speaks, a caller burst of `min_speech_ms` voiced audio PAUSEs playout (the leg stops
sending on the next tick, keeping its queue). A burst that reaches `backchannel_max_ms`, or whose transcript
holds words that are not a backchannel, INTERRUPTs (flush, cancel LLM/TTS, truncate to `heard_text`). After a
paused burst the agent stays paused until its transcript says what it was: a backchannel ("uh-huh", "yeah",
"okay") or no words RESUMEs playout where it stopped; so does `hold_ms` without a transcript. More speech
in the meantime keeps it paused (a caller who says "Wait," and draws breath is not talked over). An
interruption that yields no words within `confirm_window_ms` after the caller falls silent was noise:
RESUME_CUT says the cut sentence again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from trunkline.vad.segmenter import (
    SegmentEvent,
    SilenceStarted,
    SpeechContinuing,
    SpeechEnded,
    SpeechResumed,
    SpeechStarted,
)

DEFAULT_BACKCHANNELS = frozenset(
    {
        "uh-huh", "uh huh", "uhhuh", "mm-hmm", "mm hmm", "mhm", "mmhmm", "mm-hm", "hmm", "mm", "hm",
        "uh", "um", "oh", "ah", "aha", "yeah", "yea", "yes", "yep", "yup", "ya", "okay", "ok", "o.k",
        "right", "alright", "all right", "sure", "got it", "i see", "cool", "great", "nice", "gotcha",
        "true", "exactly", "indeed", "mmm", "mhmm", "mm-hmm-hmm", "thanks", "thank you",
    }
)  # fmt: skip
# Short words that do interrupt on their own; any other lone word of three letters or fewer from a short
# burst is what a tiny ASR model makes of a backchannel or a noise ("Oh." -> "of", "I see." -> "i", a cough
# -> "L.").
SHORT_INTERRUPTIONS = frozenset(
    {"no", "nah", "nope", "hey", "hi", "wait", "what", "why", "how", "who", "huh", "but", "bye", "stop"}
)
_TOKEN = re.compile(r"[a-z0-9']+(?:[-.][a-z0-9']+)*")


class TranscriptKind(Enum):
    EMPTY = "empty"  # no words: noise
    BACKCHANNEL = "backchannel"  # only backchannel phrases
    WORDS = "words"  # the caller is saying something


def classify_burst(text: str, backchannels: frozenset[str] = DEFAULT_BACKCHANNELS) -> TranscriptKind:
    """Is this transcript empty, only backchannels ("Yeah, yeah. Okay."), or real words? A lone short word
    that is not a known interruption ("no", "wait", ...) counts as a misheard backchannel."""
    tokens = _TOKEN.findall(text.lower().replace("’", "'"))
    if not tokens:
        return TranscriptKind.EMPTY
    if len(tokens) == 1 and len(tokens[0]) <= 3 and tokens[0] not in SHORT_INTERRUPTIONS | backchannels:
        return TranscriptKind.BACKCHANNEL
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and f"{tokens[i]} {tokens[i + 1]}" in backchannels:
            i += 2
        elif tokens[i] in backchannels:
            i += 1
        else:
            return TranscriptKind.WORDS
    return TranscriptKind.BACKCHANNEL


class BargeInAction(Enum):
    PAUSE = "pause"  # stop sending agent audio on the next tick; keep the queue and in-flight work
    RESUME = "resume"  # carry on from where playout paused
    INTERRUPT = "interrupt"  # flush the queue, cancel LLM/TTS, truncate the message to what was heard
    RESUME_CUT = "resume_cut"  # the interruption was noise: say the cut sentence again


class BargeInState(Enum):
    IDLE = "idle"  # the agent is not speaking
    LISTENING = "listening"  # the agent speaks; no caller burst
    PENDING = "pending"  # a caller burst, playout continues
    PAUSED = "paused"  # a caller burst, playout paused
    INTERRUPTED = "interrupted"  # flushed; waiting for words to confirm


@dataclass(frozen=True, slots=True)
class BargeInDecision:
    action: BargeInAction
    now_s: float
    onset_s: float  # onset of the caller burst behind the decision
    reason: str  # static: "min_speech", "long_burst", "words", "late_words", "short_burst", ...


class BargeInPolicy:
    """One per leg. Feed it the agent's playback state, the caller segmenter's events and transcripts of the
    caller's audio; call `poll(now)` at `next_deadline()`. Speech separated by less than `burst_gap_ms` of
    silence (a stop consonant, a breath) is one burst."""

    def __init__(
        self,
        min_speech_ms: int = 100,
        backchannel_max_ms: int = 600,
        burst_gap_ms: int = 120,
        confirm_window_ms: int = 1200,
        late_transcript_ms: int = 1500,
        backchannel_words: frozenset[str] = DEFAULT_BACKCHANNELS,
        pause_while_pending: bool = True,
        hold_ms: int = 800,
    ) -> None:
        if not 0 < min_speech_ms <= backchannel_max_ms:
            raise ValueError("need 0 < min_speech_ms <= backchannel_max_ms")
        self.min_speech_ms = min_speech_ms
        self.backchannel_max_ms = backchannel_max_ms
        self.burst_gap_s = burst_gap_ms / 1000
        self.confirm_window_ms = confirm_window_ms
        self.late_transcript_ms = late_transcript_ms
        self.backchannel_words = backchannel_words
        self.pause_while_pending = pause_while_pending
        self.hold_s = hold_ms / 1000
        self.state = BargeInState.IDLE
        self._onset_s = 0.0
        self._burst_ms = 0  # voiced ms of the current burst
        self._total_ms = 0  # the segmenter's running speech_ms, to turn it into per-burst increments
        self._burst_active = False
        self._gap_start_s: float | None = None  # silence inside the current burst
        self._confirm_deadline: float | None = None
        self._late_deadline: float | None = None
        self._hold_deadline: float | None = None  # paused after a burst, waiting for its transcript

    def agent_started(self, now: float) -> list[BargeInDecision]:
        """Agent playback began (or resumed after RESUME_CUT)."""
        if self.state is BargeInState.IDLE:
            self.state = BargeInState.LISTENING
            self._late_deadline = None
        return []

    def agent_finished(self, now: float) -> list[BargeInDecision]:
        """Agent playback ended on its own: nothing left to interrupt."""
        if self.state in (BargeInState.LISTENING, BargeInState.PENDING):
            self._to_idle()
        return []

    def on_segment(self, event: SegmentEvent) -> list[BargeInDecision]:
        if isinstance(event, SpeechStarted):
            return self._burst_start(event.onset_s, event.speech_ms, event.speech_ms, event.now_s)
        if isinstance(event, SpeechResumed):
            if self._burst_active:  # within the gap: the same burst goes on
                self._gap_start_s = None
                return self._check_length(event.now_s)
            return self._burst_start(event.resumed_s, event.speech_ms, self._total_ms, event.now_s)
        if isinstance(event, SpeechContinuing):
            if self._burst_active:
                self._burst_ms += event.speech_ms - self._total_ms
            self._total_ms = event.speech_ms
            return self._check_gap(event.now_s) or self._check_length(event.now_s)
        if isinstance(event, SilenceStarted):
            if self._burst_active:
                self._gap_start_s = event.silence_start_s
            return self._check_gap(event.now_s)
        if isinstance(event, SpeechEnded):
            return self._burst_end(event.now_s)
        return []

    def on_transcript(self, text: str, now: float) -> list[BargeInDecision]:
        """Text of the caller's latest burst (partial or final)."""
        kind = classify_burst(text, self.backchannel_words)
        if self.state in (BargeInState.PENDING, BargeInState.PAUSED) and kind is TranscriptKind.WORDS:
            return [self._interrupt(now, "words")]
        if self._hold_deadline is not None:
            return [self._resume(now, "backchannel" if kind is TranscriptKind.BACKCHANNEL else "no_words")]
        if self.state is BargeInState.LISTENING and self._late_deadline is not None:
            if kind is TranscriptKind.WORDS and now <= self._late_deadline:
                decision = self._interrupt(now, "late_words")
                self._to_idle()  # words already confirm it
                return [decision]
            return []
        if self.state is BargeInState.INTERRUPTED:
            if kind is TranscriptKind.WORDS:
                self._to_idle()  # confirmed: the caller has the floor
            elif not self._burst_active:
                return [self._resume_cut(now, "no_words")]
        return []

    def poll(self, now: float) -> list[BargeInDecision]:
        if self._late_deadline is not None and now > self._late_deadline:
            self._late_deadline = None
        decisions = self._check_gap(now)
        if self._hold_deadline is not None and now >= self._hold_deadline - 1e-9:
            decisions.append(self._resume(now, "short_burst"))
        deadline = self._confirm_deadline
        if self.state is BargeInState.INTERRUPTED and deadline is not None and now >= deadline - 1e-9:
            decisions.append(self._resume_cut(now, "confirm_timeout"))
        return decisions

    def next_deadline(self) -> float | None:
        if self._burst_active and self._gap_start_s is not None:
            return self._gap_start_s + self.burst_gap_s
        if self.state is BargeInState.INTERRUPTED:
            return self._confirm_deadline
        if self._hold_deadline is not None:
            return self._hold_deadline
        return self._late_deadline

    def _burst_start(self, onset_s: float, burst_ms: int, total_ms: int, now: float) -> list[BargeInDecision]:
        self._total_ms = total_ms
        self._gap_start_s = None
        if self.state is BargeInState.INTERRUPTED:
            self._burst_active, self._confirm_deadline = True, None
            return []
        if self._hold_deadline is not None:  # more speech while paused: still paused, a new burst counts
            self._hold_deadline = None
            self._burst_ms, self._burst_active = burst_ms, True
            return self._check_length(now)
        if self.state is not BargeInState.LISTENING:
            return []
        self.state = BargeInState.PENDING
        self._onset_s, self._burst_ms, self._burst_active = onset_s, burst_ms, True
        return self._check_length(now)

    def _check_gap(self, now: float) -> list[BargeInDecision]:
        gap = self._gap_start_s
        if self._burst_active and gap is not None and now >= gap + self.burst_gap_s - 1e-9:
            return self._burst_end(now)
        return []

    def _check_length(self, now: float) -> list[BargeInDecision]:
        if self.state not in (BargeInState.PENDING, BargeInState.PAUSED) or not self._burst_active:
            return []
        if self._burst_ms >= self.backchannel_max_ms:
            return [self._interrupt(now, "long_burst")]
        if (
            self.state is BargeInState.PENDING
            and self.pause_while_pending
            and self._burst_ms >= self.min_speech_ms
        ):
            self.state = BargeInState.PAUSED
            return [BargeInDecision(BargeInAction.PAUSE, now, self._onset_s, "min_speech")]
        return []

    def _burst_end(self, now: float) -> list[BargeInDecision]:
        if not self._burst_active:
            return []
        self._burst_active, self._gap_start_s = False, None
        if self.state is BargeInState.INTERRUPTED:
            self._confirm_deadline = now + self.confirm_window_ms / 1000
            return []
        if self.state is BargeInState.PAUSED:
            self._hold_deadline = now + self.hold_s
            return []
        self.state = BargeInState.LISTENING
        return []

    def _resume(self, now: float, reason: str) -> BargeInDecision:
        """Playout goes on; words from a transcript that comes late still interrupt."""
        self.state = BargeInState.LISTENING
        self._hold_deadline = None
        self._late_deadline = now + self.late_transcript_ms / 1000
        return BargeInDecision(BargeInAction.RESUME, now, self._onset_s, reason)

    def _interrupt(self, now: float, reason: str) -> BargeInDecision:
        self.state = BargeInState.INTERRUPTED
        self._hold_deadline = None
        self._late_deadline = None
        self._confirm_deadline = None if self._burst_active else now + self.confirm_window_ms / 1000
        return BargeInDecision(BargeInAction.INTERRUPT, now, self._onset_s, reason)

    def _resume_cut(self, now: float, reason: str) -> BargeInDecision:
        self.state = BargeInState.LISTENING
        self._confirm_deadline = None
        return BargeInDecision(BargeInAction.RESUME_CUT, now, self._onset_s, reason)

    def _to_idle(self) -> None:
        self.state = BargeInState.IDLE
        self._burst_active = False
        self._gap_start_s = None
        self._confirm_deadline = None
        self._late_deadline = None
        self._hold_deadline = None


@dataclass(frozen=True, slots=True)
class WordTiming:
    """Where one spoken word sits in the agent's audio, in samples from the start of the message."""

    word: str
    start_sample: int
    end_sample: int


def heard_text(
    full_text: str,
    samples_played: int,
    samples_total: int,
    word_timings: Sequence[WordTiming] | None = None,
) -> str:
    """The prefix of `full_text` the caller heard: whole words whose midpoint was played.

    Without timings the position is proportional by characters; with TTS alignment timings it is exact.
    """
    spans = [m.span() for m in re.finditer(r"\S+", full_text)]
    if not spans or samples_played <= 0:
        return ""
    if samples_total <= 0 or samples_played >= samples_total:
        return full_text[: spans[-1][1]]
    if word_timings:
        heard = sum(1 for w in word_timings if (w.start_sample + w.end_sample) / 2 <= samples_played)
        if len(word_timings) != len(spans):
            return " ".join(w.word for w in word_timings[:heard])
    else:
        cut = len(full_text) * samples_played / samples_total
        heard = sum(1 for start, end in spans if (start + end) / 2 <= cut)
    return full_text[: spans[heard - 1][1]] if heard else ""


def word_timings_from_phonemes(phoneme_samples: Sequence[tuple[str, int]], text: str) -> list[WordTiming]:
    """Word timings from a TTS phoneme alignment ((phoneme, samples) in order; words split at " ").

    Groups holding only boundary/punctuation symbols are skipped; when the word count matches the text's
    words, the text's spelling is used.
    """
    groups: list[tuple[int, int]] = []
    pos, start, end = 0, 0, None  # end: where the current word's last spoken phoneme stops
    for phoneme, samples in phoneme_samples:
        if phoneme == " ":
            if end is not None:
                groups.append((start, end))
            end = None
        elif phoneme not in _NON_WORD_PHONEMES:
            if end is None:
                start = pos
            end = pos + samples
        pos += samples
    if end is not None:
        groups.append((start, end))
    words = text.split()
    names = words if len(words) == len(groups) else [f"w{i}" for i in range(len(groups))]
    return [WordTiming(name, s, e) for name, (s, e) in zip(names, groups, strict=True)]


_NON_WORD_PHONEMES = frozenset({"^", "$", "_", ",", ".", "!", "?", ";", ":", "—", "-", "…", "'", '"'})
