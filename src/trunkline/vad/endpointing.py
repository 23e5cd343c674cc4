"""Pure end-of-turn decisions: how long a silence must last before the caller's turn is over, given what the
caller has said so far, plus the bookkeeping that lets a speculative decode started at the silence become the
turn's transcript.

A silence after words that look complete ("... tomorrow at six.") ends the turn after a short hangover; after
a trailing "and", "um", "the", a comma, or before any text is known, it waits longer. Time is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from trunkline.vad.segmenter import SilenceStarted, SpeechEnded

FILLER_WORDS = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "uhm", "hmm", "hm", "mm", "ah", "eh"})
# prepositions that rarely end a statement
PREPOSITIONS = frozenset(
    {
        "to", "of", "for", "with", "from", "at", "by", "about", "into", "onto", "between", "after", "before",
        "as", "per", "via",
    }
)  # fmt: skip
# closed-class words that rarely end a statement either ("... my subscription without?")
MORE_PREPOSITIONS = frozenset(
    {"without", "during", "whether", "toward", "towards", "against", "among", "upon"}
)  # fmt: skip
CONTINUATION_WORDS = FILLER_WORDS | PREPOSITIONS | MORE_PREPOSITIONS | frozenset(
    {
        # conjunctions and clause openers
        "and", "or", "but", "so", "because", "cause", "if", "when", "while", "than", "then", "that",
        "which", "who", "whose", "where", "although", "though", "unless", "until", "plus", "also", "like",
        # articles, possessives, determiners
        "the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "these", "those",
        "some", "any", "every", "each", "no",
        # auxiliaries and subjects that need a continuation
        "is", "are", "was", "were", "am", "be", "been", "have", "has", "had", "will", "would", "can", "could",
        "should", "shall", "may", "might", "must", "do", "does", "did", "i", "i'm", "we", "we're", "you're",
        "very", "really", "just", "maybe",
    }
)  # fmt: skip
# The rules below were written from early cuts on bench/endpointing.py's tuning set (4 of 7 fixed there); on
# its held-out set they change nothing. Turn-holding phrases: a caller who ends on these is about to say
# more ("Yes, I think, ..." / "Hmm, let me think, ..."), even when the ASR writes a full stop after them.
HOLDING_PHRASES = (("let", "me", "think"), ("let", "me", "see"), ("i", "think"), ("i", "mean"))
# An object pronoun right after a preposition, with an unsure last word, is the ASR finishing a cut-off
# phrase ("... a table for" → "... a table for it.") more often than the caller's last word.
OBJECT_PRONOUNS = frozenset({"it", "them", "him", "her", "me", "us", "you", "that", "this"})
_INCOMPLETE_TAILS = (",", ";", ":", "-", "–", "—", "…", "...")
_WORD = re.compile(r"[a-z0-9']+")


class Completeness(Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"


def classify_text(
    text: str | None,
    continuation_words: frozenset[str] = CONTINUATION_WORDS,
    holding_phrases: tuple[tuple[str, ...], ...] = HOLDING_PHRASES,
) -> Completeness:
    """Does the transcript so far look like a finished turn?

    '?'/'!' or '.' after an ordinary word → COMPLETE; a trailing comma/dash/ellipsis, a last word that
    needs a continuation (conjunction, filler, article, preposition) or one of `holding_phrases` ("let me
    think") → INCOMPLETE; no text, or no punctuation → UNKNOWN.
    """
    if text is None:
        return Completeness.UNKNOWN
    stripped = text.strip().strip("\"'”’)]")
    words = _WORD.findall(stripped.lower().replace("’", "'"))
    if not words:
        return Completeness.UNKNOWN
    if stripped.endswith(_INCOMPLETE_TAILS) or words[-1] in continuation_words:
        return Completeness.INCOMPLETE
    if any(tuple(words[-len(phrase) :]) == phrase for phrase in holding_phrases):
        return Completeness.INCOMPLETE
    if stripped.endswith((".", "?", "!")):
        return Completeness.COMPLETE
    return Completeness.UNKNOWN


def _object_after_preposition(words: list[str], object_pronouns: frozenset[str]) -> bool:
    """A trailing "... for it": the pattern an ASR uses to finish a phrase the caller paused in."""
    return len(words) >= 2 and words[-1] in object_pronouns and words[-2] in PREPOSITIONS | MORE_PREPOSITIONS


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Hangovers count from the end of the last speech frame, not from when the silence was detected."""

    complete_hangover_ms: int = 200
    incomplete_hangover_ms: int = 900
    unknown_hangover_ms: int = 800
    max_turn_ms: int = 30_000
    # complete-looking text whose last word the ASR is less sure of counts as UNKNOWN (tiny ASR models
    # "finish" a cut-off phrase: "declined and" → "declined in.")
    min_complete_confidence: float = 0.5
    # ... but between this and `min_complete_confidence` the wait scales with the doubt: from the doubtful
    # hangover (at min_complete_confidence) up to the unknown one (at this floor), so a last word at 0.49
    # is not treated like one at 0.1 (a cliff that made the same sentence wait 450 or 800 ms from decode to
    # decode). None: no ramp. 0.3 is the lowest floor that cut no more turns early on bench/endpointing.py's
    # tuning sets (0.2 cut one more); the held-out sets were unchanged by it.
    unsure_floor_confidence: float | None = 0.3
    # evidence-scaled hangover: complete-looking text gets the short hangover only when its last word is
    # at least `sure_complete_confidence` likely (when the ASR gives a probability) and it has at least
    # `min_complete_words` words; otherwise `doubtful_complete_hangover_ms` ("I'd like to book a table
    # for it." at 0.45-0.9 before "two people")
    sure_complete_confidence: float = 0.9
    min_complete_words: int = 1
    doubtful_complete_hangover_ms: int = 450
    # complete-looking text whose last word ends this long before the speech did counts as UNKNOWN: the
    # ASR dropped the trailing speech ("We have a leak in the bathroom and" → "... bathroom."); None
    # disables. Defaults chosen on bench/endpointing.py's tuning set only (see its docstring).
    max_untranscribed_ms: int | None = 150
    continuation_words: frozenset[str] = CONTINUATION_WORDS
    # text ending in one of these phrases counts as INCOMPLETE (see HOLDING_PHRASES)
    holding_phrases: tuple[tuple[str, ...], ...] = HOLDING_PHRASES
    # complete-looking text ending in preposition + one of these, with a last word below
    # `sure_complete_confidence`, counts as UNKNOWN (see OBJECT_PRONOUNS); empty turns the rule off
    object_pronouns: frozenset[str] = OBJECT_PRONOUNS

    def hangover_ms(self, completeness: Completeness) -> int:
        if completeness is Completeness.COMPLETE:
            return self.complete_hangover_ms
        if completeness is Completeness.INCOMPLETE:
            return self.incomplete_hangover_ms
        return self.unknown_hangover_ms


@dataclass(frozen=True, slots=True)
class EndpointDecision:
    """The turn is over at `now_s`. `silence_start_s` is None when the turn hit `max_turn_ms` mid-speech."""

    now_s: float
    silence_start_s: float | None
    completeness: Completeness
    max_turn: bool = False


class Endpointer:
    """Per-turn state: onset, the current silence and the text known for it. Feed it, then `poll(now)` at
    `next_deadline()` (and whenever new text arrives) to get the decision."""

    def __init__(self, config: EndpointConfig | None = None) -> None:
        self.config = config or EndpointConfig()
        self._onset_s: float | None = None
        self._silence_start_s: float | None = None
        self._completeness = Completeness.UNKNOWN
        self._hangover_ms = self.config.unknown_hangover_ms

    @property
    def in_turn(self) -> bool:
        return self._onset_s is not None

    @property
    def completeness(self) -> Completeness:
        return self._completeness

    @property
    def hangover_ms(self) -> int:
        """The hangover the current silence gets, given the text known for it."""
        return self._hangover_ms

    def speech_started(self, onset_s: float) -> None:
        self._onset_s = onset_s
        self._silence_start_s = None
        self._set(Completeness.UNKNOWN)

    def silence_started(self, silence_start_s: float) -> None:
        if self._onset_s is not None:
            self._silence_start_s = silence_start_s
            self._set(Completeness.UNKNOWN)

    def speech_resumed(self) -> None:
        self._silence_start_s = None
        self._set(Completeness.UNKNOWN)

    def _set(self, completeness: Completeness, hangover_ms: int | None = None) -> None:
        self._completeness = completeness
        self._hangover_ms = self.config.hangover_ms(completeness) if hangover_ms is None else hangover_ms

    def set_text(
        self,
        text: str | None,
        last_word_confidence: float | None = None,
        untranscribed_s: float | None = None,
    ) -> None:
        """Text decoded from the audio up to the current silence (ignored while the caller speaks), with the
        ASR's probability for its last word and the speech after that word's end, when it has them."""
        if self._silence_start_s is None:
            return
        cfg = self.config
        completeness = classify_text(text, cfg.continuation_words, cfg.holding_phrases)
        if completeness is not Completeness.COMPLETE:
            self._set(completeness)
            return
        words = _WORD.findall((text or "").lower().replace("’", "'"))
        unsure = last_word_confidence is not None and last_word_confidence < cfg.sure_complete_confidence
        if (
            untranscribed_s is not None
            and cfg.max_untranscribed_ms is not None
            and untranscribed_s * 1000 > cfg.max_untranscribed_ms
        ) or (unsure and _object_after_preposition(words, cfg.object_pronouns)):
            self._set(Completeness.UNKNOWN)
        elif last_word_confidence is not None and last_word_confidence < cfg.min_complete_confidence:
            self._set(Completeness.UNKNOWN, self._doubt_hangover_ms(last_word_confidence))
        elif unsure or len(words) < cfg.min_complete_words:
            self._set(completeness, max(cfg.complete_hangover_ms, cfg.doubtful_complete_hangover_ms))
        else:
            self._set(completeness)

    def _doubt_hangover_ms(self, confidence: float) -> int:
        """The hangover of complete-looking text whose last word is below min_complete_confidence."""
        cfg = self.config
        floor, top = cfg.unsure_floor_confidence, cfg.min_complete_confidence
        if floor is None or confidence < floor or top <= floor:
            return cfg.unknown_hangover_ms
        low = max(cfg.complete_hangover_ms, cfg.doubtful_complete_hangover_ms)
        return round(low + (top - confidence) / (top - floor) * (cfg.unknown_hangover_ms - low))

    def reset(self) -> None:
        self._onset_s = None
        self._silence_start_s = None
        self._set(Completeness.UNKNOWN)

    def next_deadline(self) -> float | None:
        if self._onset_s is None:
            return None
        deadline = self._onset_s + self.config.max_turn_ms / 1000
        if self._silence_start_s is not None:
            hangover = self._hangover_ms / 1000
            deadline = min(deadline, self._silence_start_s + hangover)
        return deadline

    def poll(self, now: float) -> EndpointDecision | None:
        """The decision once `now` reaches the deadline; the turn is then closed (reset)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline - 1e-9 or self._onset_s is None:
            return None
        max_turn = now >= self._onset_s + self.config.max_turn_ms / 1000 - 1e-9
        decision = EndpointDecision(now, self._silence_start_s, self._completeness, max_turn)
        self.reset()
        return decision


@dataclass(frozen=True, slots=True, eq=False)
class DecodeRequest:
    """Ask the ASR to decode `audio`; answer with `SpeculativeDecode.result(request_id, text)`."""

    request_id: int
    audio: np.ndarray
    audio_end_s: float
    final: bool  # False: speculative (started at a silence); True: the turn's own decode
    trailing_silence_s: float = 0.0  # silence at the end of `audio` (after the last speech frame)


class FinalAction(Enum):
    REUSE = "reuse"  # the speculative result is the turn's transcript
    AWAIT = "await"  # the speculative decode still running will be the turn's transcript
    DECODE = "decode"  # nothing usable: decode the turn's audio now


@dataclass(frozen=True, slots=True)
class FinalDecode:
    action: FinalAction
    text: str | None = None
    request: DecodeRequest | None = None
    request_id: int | None = None


@dataclass(slots=True)
class SpeculativeStats:
    started: int = 0
    cancelled: int = 0  # still running when speech resumed
    discarded: int = 0  # finished, then made stale by speech
    reused: int = 0
    awaited: int = 0
    fresh: int = 0


class SpeculativeDecode:
    """Which decode is current. A speculative result is valid only if no speech resumed after its audio
    ended; at the end of the turn a valid result (or the decode still running) is reused, not redone."""

    def __init__(self) -> None:
        self._next_id = 1
        self._current: int | None = None  # id of the valid speculative request, if any
        self._text: str | None = None
        self._has_text = False
        self._awaited: set[int] = set()
        self._trailing_s = 0.0
        self.stats = SpeculativeStats()

    def silence_started(self, event: SilenceStarted) -> DecodeRequest:
        trailing = max(0.0, event.now_s - event.silence_start_s)
        request = self._new_request(event.audio, event.silence_start_s, final=False, trailing_s=trailing)
        self._current, self._text, self._has_text = request.request_id, None, False
        self._trailing_s = trailing
        self.stats.started += 1
        return request

    def speech_resumed(self) -> int | None:
        """Invalidate the current speculation; returns its id when it is still running (to cancel the job)."""
        current, self._current = self._current, None
        finished, self._text, self._has_text = self._has_text, None, False
        if current is None:
            return None
        if finished:
            self.stats.discarded += 1
            return None
        self.stats.cancelled += 1
        return current

    def trailing_silence_s(self, request_id: int) -> float | None:
        """Silence at the end of the current speculative request's audio (None if `request_id` is stale)."""
        return self._trailing_s if request_id == self._current else None

    def result(self, request_id: int, text: str) -> bool:
        """Record a speculative result; True when it is still current (the endpointer may use it)."""
        if request_id != self._current:
            return False
        self._text, self._has_text = text, True
        return True

    def is_final(self, request_id: int) -> bool:
        """True (once) when this request's result is a turn's transcript: awaited or a final decode."""
        if request_id in self._awaited:
            self._awaited.discard(request_id)
            return True
        return False

    def turn_ended(self, event: SpeechEnded) -> FinalDecode:
        current, self._current = self._current, None
        text, has_text = self._text, self._has_text
        self._text, self._has_text = None, False
        if current is not None and has_text:
            self.stats.reused += 1
            return FinalDecode(FinalAction.REUSE, text=text, request_id=current)
        if current is not None:
            self.stats.awaited += 1
            self._awaited.add(current)
            return FinalDecode(FinalAction.AWAIT, request_id=current)
        self.stats.fresh += 1
        request = self._new_request(event.audio, event.end_s, final=True)
        self._awaited.add(request.request_id)
        return FinalDecode(FinalAction.DECODE, request=request, request_id=request.request_id)

    def _new_request(
        self, audio: np.ndarray, audio_end_s: float, *, final: bool, trailing_s: float = 0.0
    ) -> DecodeRequest:
        request = DecodeRequest(self._next_id, audio, audio_end_s, final, trailing_s)
        self._next_id += 1
        return request
