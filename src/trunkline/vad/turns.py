"""Pure call-behaviour timers: what the agent says or does on its own (not in answer to the caller).

Disclosure line first when the tenant requires consent, then the greeting on answer; a re-prompt after
`reprompt_after_s` of silence following the agent's last words; a polite goodbye and hang-up after
`max_silences` silences in a row; a warning before `max_call_s` and a goodbye at it. Time is passed in and the
object returns actions (`Say`, `HangUp`) with `next_deadline()` for the adapter's timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class HangUpReason(Enum):
    SILENCE = "silence"
    MAX_DURATION = "max_duration"


@dataclass(frozen=True, slots=True)
class Say:
    """Speak the tenant's prompt `text_key` (resolved to words and voice by the agent layer)."""

    text_key: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call once what was queued before it has played."""

    reason: HangUpReason


CallAction = Say | HangUp


@dataclass(frozen=True, slots=True)
class CallTimersConfig:
    reprompt_after_s: float = 8.0
    max_silences: int = 3  # the Nth silence in a row says goodbye and hangs up; earlier ones re-prompt
    max_call_s: float = 900.0
    warn_before_end_s: float = 60.0  # 0 disables the warning
    consent_required: bool = False
    greeting_key: str = "greeting"
    disclosure_key: str = "disclosure"
    reprompt_key: str = "reprompt"
    silence_goodbye_key: str = "goodbye_silence"
    warning_key: str = "max_duration_warning"
    max_duration_goodbye_key: str = "goodbye_max_duration"

    def __post_init__(self) -> None:
        if self.reprompt_after_s <= 0 or self.max_call_s <= 0 or self.max_silences < 1:
            raise ValueError("reprompt_after_s and max_call_s must be > 0 and max_silences >= 1")
        if not 0 <= self.warn_before_end_s < self.max_call_s:
            raise ValueError("warn_before_end_s must be in [0, max_call_s)")


class CallTimers:
    """One per call. The silence timer runs only while neither side is speaking and no reply is being
    prepared: it starts when the agent finishes speaking and stops when the caller starts."""

    def __init__(self, config: CallTimersConfig | None = None) -> None:
        self.config = config or CallTimersConfig()
        self._answered_s: float | None = None
        self._silence_deadline: float | None = None
        self._silences = 0
        self._warned = False
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once a HangUp was returned: no further actions."""
        return self._ended

    @property
    def silences(self) -> int:
        """Silences in a row since the caller last spoke."""
        return self._silences

    def answered(self, now: float) -> list[CallAction]:
        """The call was answered: the disclosure (when consent is required) and the greeting."""
        if self._answered_s is not None or self._ended:
            return []
        self._answered_s = now
        actions: list[CallAction] = []
        if self.config.consent_required:
            actions.append(Say(self.config.disclosure_key))
        actions.append(Say(self.config.greeting_key))
        return actions

    def agent_started(self, now: float) -> None:
        """The agent began speaking (a reply or a prompt): no silence is counted meanwhile."""
        self._silence_deadline = None

    def agent_finished(self, now: float) -> None:
        """The agent's audio finished playing: the caller's silence is counted from here."""
        if self._answered_s is not None and not self._ended:
            self._silence_deadline = now + self.config.reprompt_after_s

    def caller_started(self, now: float) -> None:
        """The caller spoke (a real turn, not a backchannel): the silence count starts over."""
        self._silence_deadline = None
        self._silences = 0

    def caller_finished(self, now: float) -> None:
        """The caller's turn ended; a reply is being prepared: no timer until the agent speaks and ends."""
        self._silence_deadline = None

    def next_deadline(self) -> float | None:
        if self._answered_s is None or self._ended:
            return None
        deadlines = [self._end_s()]
        if self.config.warn_before_end_s > 0 and not self._warned:
            deadlines.append(self._end_s() - self.config.warn_before_end_s)
        if self._silence_deadline is not None:
            deadlines.append(self._silence_deadline)
        return min(deadlines)

    def poll(self, now: float) -> list[CallAction]:
        """Actions due at `now` (call at `next_deadline()`; calling early returns nothing)."""
        if self._answered_s is None or self._ended:
            return []
        if now >= self._end_s() - 1e-9:
            self._ended = True
            return [Say(self.config.max_duration_goodbye_key), HangUp(HangUpReason.MAX_DURATION)]
        actions: list[CallAction] = []
        warn_at = self._end_s() - self.config.warn_before_end_s
        if self.config.warn_before_end_s > 0 and not self._warned and now >= warn_at - 1e-9:
            self._warned = True
            actions.append(Say(self.config.warning_key))
        if self._silence_deadline is not None and now >= self._silence_deadline - 1e-9:
            self._silence_deadline = None
            self._silences += 1
            if self._silences >= self.config.max_silences:
                self._ended = True
                return [*actions, Say(self.config.silence_goodbye_key), HangUp(HangUpReason.SILENCE)]
            actions.append(Say(self.config.reprompt_key))
        return actions

    def _end_s(self) -> float:
        assert self._answered_s is not None
        return self._answered_s + self.config.max_call_s
