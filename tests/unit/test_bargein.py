"""Barge-in policy on a virtual clock (segmenter events in, decisions out) and heard-text truncation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.vad.bargein import (
    BargeInAction,
    BargeInDecision,
    BargeInPolicy,
    BargeInState,
    TranscriptKind,
    WordTiming,
    classify_burst,
    heard_text,
    word_timings_from_phonemes,
)
from trunkline.vad.segmenter import SpeechSegmenter

PAUSE, RESUME = BargeInAction.PAUSE, BargeInAction.RESUME
INTERRUPT, RESUME_CUT = BargeInAction.INTERRUPT, BargeInAction.RESUME_CUT


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", TranscriptKind.EMPTY),
        (" ... ", TranscriptKind.EMPTY),
        ("Uh-huh.", TranscriptKind.BACKCHANNEL),
        ("Mm-hmm", TranscriptKind.BACKCHANNEL),
        ("Yeah, yeah. Okay.", TranscriptKind.BACKCHANNEL),
        ("All right", TranscriptKind.BACKCHANNEL),
        ("Got it, thanks", TranscriptKind.BACKCHANNEL),
        ("Thanks, but no", TranscriptKind.WORDS),
        ("Stop.", TranscriptKind.WORDS),
        ("Yeah but I want to cancel", TranscriptKind.WORDS),
        ("Wait", TranscriptKind.WORDS),
        ("No.", TranscriptKind.WORDS),
        ("What?", TranscriptKind.WORDS),
        ("Huh?", TranscriptKind.WORDS),
        ("of", TranscriptKind.BACKCHANNEL),  # "Oh." as the tiny model hears it
        ("i", TranscriptKind.BACKCHANNEL),  # "I see."
        ("L.", TranscriptKind.BACKCHANNEL),  # a cough
        ("Out.", TranscriptKind.BACKCHANNEL),
        ("Tuesday", TranscriptKind.WORDS),  # a lone word longer than three letters is real speech
        ("No way", TranscriptKind.WORDS),
    ],
)
def test_classify_burst(text: str, kind: TranscriptKind) -> None:
    assert classify_burst(text) is kind


def t(i: int) -> float:
    return (i + 1) * 0.02


@dataclass
class Call:
    """A caller segmenter feeding a barge-in policy while the agent speaks from t = 0."""

    policy: BargeInPolicy = field(default_factory=BargeInPolicy)
    seg: SpeechSegmenter = field(default_factory=lambda: SpeechSegmenter(start_frames=3, stop_frames=2))
    decisions: list[tuple[int, BargeInDecision]] = field(default_factory=list)
    i: int = 0

    def __post_init__(self) -> None:
        self.policy.agent_started(0.0)

    def feed(self, flags: list[int]) -> None:
        for flag in flags:
            self.tick(self.policy.poll(t(self.i)))
            for ev in self.seg.push(np.zeros(160, np.int16), bool(flag), t(self.i)):
                self.tick(self.policy.on_segment(ev))
            self.i += 1

    def say(self, text: str) -> None:
        self.tick(self.policy.on_transcript(text, t(self.i)))

    def tick(self, decisions: list[BargeInDecision]) -> None:
        self.decisions.extend((self.i, d) for d in decisions)

    @property
    def actions(self) -> list[BargeInAction]:
        return [d.action for _, d in self.decisions]


def test_backchannel_pauses_then_resumes_without_interrupting() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 12 + [0] * 20)  # 240 ms "uh-huh"
    assert call.actions == [PAUSE]  # the burst is over (frame 27); paused until its transcript comes
    (pi, pause) = call.decisions[0]
    assert pi == 14 and pause.reason == "min_speech"  # 5th voiced frame = 100 ms of speech
    assert pause.onset_s == pytest.approx(0.20)
    call.say("Uh-huh.")
    assert call.actions == [PAUSE, RESUME] and call.decisions[1][1].reason == "backchannel"
    call.feed([0] * 100)
    assert call.actions == [PAUSE, RESUME]
    assert call.policy.state is BargeInState.LISTENING


def test_without_a_transcript_playout_resumes_after_the_hold() -> None:
    call = Call(policy=BargeInPolicy(hold_ms=400))
    call.feed([0] * 10 + [1] * 12 + [0] * 60)
    assert call.actions == [PAUSE, RESUME]
    ri, resume = call.decisions[1]
    assert ri == 47 and resume.reason == "short_burst"  # burst over at 0.56 s (120 ms gap) + 400 ms


def test_a_caller_who_draws_breath_is_not_talked_over() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 15 + [0] * 12 + [1] * 20)  # "Wait," 240 ms breath "actually make it..."
    assert call.actions == [PAUSE]
    call.say("Wait, actually make it")
    assert call.actions == [PAUSE, INTERRUPT] and call.decisions[1][1].reason == "words"


def test_long_speech_interrupts_and_words_confirm_it() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 40 + [0] * 5)
    assert call.actions == [PAUSE, INTERRUPT]
    ii, interrupt = call.decisions[1]
    assert ii == 39 and interrupt.reason == "long_burst"  # 30th voiced frame = 600 ms
    call.say("Wait, I have a question about my bill.")
    call.feed([0] * 200)
    assert call.actions == [PAUSE, INTERRUPT]
    assert call.policy.state is BargeInState.IDLE


def test_interruption_without_words_resumes_the_cut_sentence() -> None:
    call = Call(policy=BargeInPolicy(confirm_window_ms=1000))
    call.feed([0] * 10 + [1] * 40 + [0] * 80)  # an 800 ms noise burst: silence from 1.00 s
    assert call.actions == [PAUSE, INTERRUPT, RESUME_CUT]
    ci, cut = call.decisions[2]
    assert cut.reason == "confirm_timeout"
    assert ci == 105  # burst over at 1.12 s (120 ms gap), + 1.0 s = 2.12 s = frame 105
    assert call.policy.state is BargeInState.LISTENING


def test_empty_transcript_after_the_burst_resumes_at_once() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 30 + [0] * 10)
    call.say("")
    assert call.actions == [PAUSE, INTERRUPT, RESUME_CUT]
    assert call.decisions[2][1].reason == "no_words"


def test_confirm_window_waits_for_the_caller_to_finish_talking() -> None:
    call = Call(policy=BargeInPolicy(confirm_window_ms=500))
    call.feed([0] * 10 + [1] * 200)  # 4 s of talking: no transcript yet, no timeout
    assert call.actions == [PAUSE, INTERRUPT]
    call.say("")  # a partial with no words while the burst goes on does not resume
    call.feed([1] * 10 + [0] * 10)
    call.say("I said I want the other option.")
    call.feed([0] * 100)
    assert call.actions == [PAUSE, INTERRUPT]


def test_a_short_stop_interrupts_once_its_transcript_comes() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 15 + [0] * 10)  # "stop!" 300 ms
    assert call.actions == [PAUSE]
    call.say("Stop!")
    assert call.actions == [PAUSE, INTERRUPT]
    assert call.decisions[1][1].reason == "words"


def test_words_after_the_hold_still_interrupt() -> None:
    call = Call(policy=BargeInPolicy(hold_ms=200))
    call.feed([0] * 10 + [1] * 15 + [0] * 20)
    assert call.actions == [PAUSE, RESUME]
    call.say("Stop!")
    assert call.actions == [PAUSE, RESUME, INTERRUPT]
    assert call.decisions[2][1].reason == "late_words"
    assert call.policy.state is BargeInState.IDLE


def test_late_transcript_after_the_window_is_ignored() -> None:
    call = Call(policy=BargeInPolicy(hold_ms=200, late_transcript_ms=500))
    call.feed([0] * 10 + [1] * 15 + [0] * 50)
    call.say("Stop!")
    assert call.actions == [PAUSE, RESUME]


def test_words_while_pending_interrupt_at_once() -> None:
    call = Call(policy=BargeInPolicy(pause_while_pending=False))
    call.feed([0] * 10 + [1] * 8)
    assert call.actions == []
    call.say("No,")
    assert call.actions == [INTERRUPT]
    assert call.decisions[0][1].reason == "words"


def test_without_pausing_a_long_burst_interrupts_at_backchannel_max() -> None:
    call = Call(policy=BargeInPolicy(pause_while_pending=False, backchannel_max_ms=300))
    call.feed([0] * 10 + [1] * 30)
    assert call.actions == [INTERRUPT]
    assert call.decisions[0][0] == 24  # 15th voiced frame


def test_clicks_and_short_noise_do_nothing() -> None:
    call = Call()
    call.feed([0] * 5 + ([1] * 4 + [0] * 10) * 5)  # 80 ms clicks 200 ms apart: each starts, none lasts 100 ms
    assert call.actions == []


def test_a_stop_consonant_does_not_split_the_burst() -> None:
    call = Call()
    call.feed([0] * 10 + [1] * 4 + [0] * 3 + [1] * 4 + [0] * 20)  # "s-[closure]-top": 60 ms gap
    assert call.actions == [PAUSE]
    assert call.decisions[0][0] == 17  # 5th voiced frame, the first after the gap
    call.say("Stop.")
    assert call.actions == [PAUSE, INTERRUPT]


def test_backchannels_in_a_row_keep_the_agent_paused_once() -> None:
    call = Call()
    call.feed([0] * 10 + ([1] * 12 + [0] * 8) * 3)  # "yeah ... yeah ... yeah"
    assert call.actions == [PAUSE]
    call.say("Yeah, yeah, yeah.")
    assert call.actions == [PAUSE, RESUME]


def test_no_decisions_while_the_agent_is_silent() -> None:
    call = Call()
    call.policy.agent_finished(0.0)
    call.feed([0] * 10 + [1] * 100 + [0] * 100)
    call.say("Hello, is anyone there?")
    assert call.actions == []


def test_agent_finishing_during_a_burst_ends_it() -> None:
    call = Call(policy=BargeInPolicy(pause_while_pending=False))
    call.feed([0] * 10 + [1] * 10)
    call.policy.agent_finished(t(call.i))
    call.feed([1] * 40)
    assert call.actions == []
    assert call.policy.state is BargeInState.IDLE


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=20),
    says=st.dictionaries(
        st.integers(0, 400), st.sampled_from(["", "yeah", "Stop.", "okay okay"]), max_size=8
    ),
    pause=st.booleans(),
)
def test_decision_grammar(runs: list[tuple[bool, int]], says: dict[int, str], pause: bool) -> None:
    """PAUSE is followed by RESUME or INTERRUPT; RESUME_CUT only follows an INTERRUPT; RESUME only a PAUSE."""
    call = Call(policy=BargeInPolicy(pause_while_pending=pause))
    flags = [int(s) for s, n in runs for _ in range(n)] + [0] * 150
    for k, flag in enumerate(flags):
        if k in says:
            call.say(says[k])
        call.feed([flag])
    previous: BargeInAction | None = None
    for action in call.actions:
        if action is PAUSE:
            assert previous in (None, RESUME, RESUME_CUT) and pause
        elif action is RESUME:
            assert previous is PAUSE
        elif action is RESUME_CUT:
            assert previous is INTERRUPT
        previous = action
    if call.policy.state is BargeInState.INTERRUPTED:
        assert call.policy.next_deadline() is not None or call.seg.in_utterance


# --- heard text -----------------------------------------------------------------------------------

TEXT = "Your table for two is booked for seven tomorrow."


@pytest.mark.parametrize(
    ("played", "expected"),
    [
        (0, ""),
        (100, "Your table for two is booked for seven tomorrow."),
        (150, "Your table for two is booked for seven tomorrow."),
        (52, "Your table for two is"),  # 48 chars: "booked" (22-28) has its midpoint at 25 = 52.1%
        (53, "Your table for two is booked"),
        (4, ""),  # "Your" has its midpoint at char 2 = 4.2%
        (5, "Your"),
    ],
)
def test_heard_text_is_proportional_by_characters(played: int, expected: str) -> None:
    assert heard_text(TEXT, played, 100) == expected


def test_heard_text_with_word_timings_is_exact() -> None:
    timings = [
        WordTiming("Hello", 0, 4000),
        WordTiming("there,", 4000, 8000),
        WordTiming("friend.", 9000, 16000),
    ]
    assert heard_text("Hello there, friend.", 5999, 16000, timings) == "Hello"
    assert heard_text("Hello there, friend.", 6000, 16000, timings) == "Hello there,"
    assert heard_text("Hello there, friend.", 12499, 16000, timings) == "Hello there,"
    assert heard_text("Hello there, friend.", 12500, 16000, timings) == "Hello there, friend."


def test_heard_text_with_mismatched_timings_uses_their_words() -> None:
    timings = [WordTiming("twenty", 0, 100), WordTiming("five", 100, 200), WordTiming("dollars", 200, 300)]
    assert heard_text("25 dollars", 160, 300, timings) == "twenty five"


@given(text=st.text(alphabet=" abc.,", max_size=60), played=st.integers(-5, 1200), total=st.integers(0, 1000))
def test_heard_text_is_a_monotonic_prefix(text: str, played: int, total: int) -> None:
    heard = heard_text(text, played, total)
    assert text.startswith(heard)
    assert len(heard_text(text, played + 37, total)) >= len(heard)


def test_word_timings_from_phonemes() -> None:
    alignment = [("^", 100), ("h", 50), ("ə", 50), ("l", 40), (" ", 30), ("w", 60), ("ɜː", 80), (",", 20)]
    alignment += [(" ", 10), ("j", 30), ("uː", 70), (".", 20), ("$", 100)]
    timings = word_timings_from_phonemes(alignment, "Hello world, you.")
    assert timings == [
        WordTiming("Hello", 100, 240),
        WordTiming("world,", 270, 410),
        WordTiming("you.", 440, 540),
    ]
    assert heard_text("Hello world, you.", 350, 640, timings) == "Hello world,"
