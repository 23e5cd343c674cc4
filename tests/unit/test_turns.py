"""Call-behaviour timers on a virtual clock: greeting, disclosure, re-prompts, hang-ups, max duration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.vad.turns import CallTimers, CallTimersConfig, HangUp, HangUpReason, Say

CFG = CallTimersConfig(reprompt_after_s=5.0, max_silences=3, max_call_s=300.0, warn_before_end_s=30.0)


def test_greeting_on_answer() -> None:
    timers = CallTimers(CFG)
    assert timers.next_deadline() is None
    assert timers.answered(10.0) == [Say("greeting")]
    assert timers.answered(11.0) == []  # once


def test_disclosure_comes_first_when_consent_is_required() -> None:
    timers = CallTimers(CallTimersConfig(consent_required=True, disclosure_key="recording_notice"))
    assert timers.answered(0.0) == [Say("recording_notice"), Say("greeting")]


def test_silence_reprompts_then_hangs_up_politely() -> None:
    timers = CallTimers(CFG)
    timers.answered(0.0)
    timers.agent_started(0.0)
    assert timers.next_deadline() == pytest.approx(270.0)  # only the max-duration warning
    timers.agent_finished(2.0)
    assert timers.next_deadline() == pytest.approx(7.0)
    assert timers.poll(6.999) == []
    assert timers.poll(7.0) == [Say("reprompt")]
    assert timers.silences == 1
    timers.agent_started(7.0)
    timers.agent_finished(9.0)
    assert timers.poll(14.0) == [Say("reprompt")]
    timers.agent_started(14.0)
    timers.agent_finished(16.0)
    assert timers.poll(21.0) == [Say("goodbye_silence"), HangUp(HangUpReason.SILENCE)]
    assert timers.ended and timers.next_deadline() is None
    assert timers.poll(1000.0) == []


def test_caller_speech_resets_the_silence_count() -> None:
    timers = CallTimers(CFG)
    timers.answered(0.0)
    timers.agent_finished(2.0)
    assert timers.poll(7.0) == [Say("reprompt")]
    timers.agent_finished(9.0)
    timers.caller_started(11.0)
    assert timers.silences == 0
    assert timers.next_deadline() == pytest.approx(270.0)
    timers.caller_finished(13.0)
    assert timers.poll(20.0) == []  # waiting for our reply is not the caller's silence
    timers.agent_started(13.5)
    timers.agent_finished(15.0)
    assert timers.poll(20.0) == [Say("reprompt")]
    assert timers.silences == 1


def test_no_silence_timer_before_answer() -> None:
    timers = CallTimers(CFG)
    timers.agent_finished(1.0)
    assert timers.next_deadline() is None
    assert timers.poll(100.0) == []


def test_max_duration_warns_then_ends() -> None:
    timers = CallTimers(CFG)
    timers.answered(100.0)
    timers.agent_started(100.0)
    assert timers.next_deadline() == pytest.approx(370.0)
    assert timers.poll(370.0) == [Say("max_duration_warning")]
    assert timers.next_deadline() == pytest.approx(400.0)
    assert timers.poll(370.0) == []
    assert timers.poll(400.0) == [Say("goodbye_max_duration"), HangUp(HangUpReason.MAX_DURATION)]
    assert timers.ended


def test_warning_and_reprompt_due_together() -> None:
    timers = CallTimers(CallTimersConfig(reprompt_after_s=5.0, max_call_s=60.0, warn_before_end_s=10.0))
    timers.answered(0.0)
    timers.agent_finished(45.0)
    assert timers.poll(50.0) == [Say("max_duration_warning"), Say("reprompt")]


def test_warning_disabled() -> None:
    timers = CallTimers(CallTimersConfig(max_call_s=60.0, warn_before_end_s=0.0))
    timers.answered(0.0)
    assert timers.next_deadline() == pytest.approx(60.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"reprompt_after_s": 0}, {"max_silences": 0}, {"max_call_s": 0}, {"warn_before_end_s": 900.0}],
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CallTimersConfig(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["agent_started", "agent_finished", "caller_started", "poll"]), st.floats(0, 20)
        ),
        max_size=40,
    )
)
def test_at_most_one_hangup_never_after_max_duration(steps: list[tuple[str, float]]) -> None:
    """Whatever happens, at most one HangUp, and by max_call_s at the latest when polled at deadlines."""
    timers = CallTimers(CFG)
    now = 0.0
    actions = list(timers.answered(now))
    for name, dt in steps:
        now += dt
        while (deadline := timers.next_deadline()) is not None and deadline <= now:
            actions.extend(timers.poll(deadline))
        if name == "poll":
            actions.extend(timers.poll(now))
        else:
            getattr(timers, name)(now)
    while (deadline := timers.next_deadline()) is not None:
        actions.extend(timers.poll(deadline))
    hangups = [a for a in actions if isinstance(a, HangUp)]
    assert len(hangups) == 1 and timers.ended
    assert isinstance(actions[-2], Say) and actions[-1] == hangups[0]
