"""Whisper's inventions over noise are dropped before they become caller turns; real words never are."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.hearing import NO_SPEECH_DROP, likely_hallucination


def test_never_spoken_phrases_are_dropped_whatever_the_confidence() -> None:
    assert likely_hallucination("Thanks for watching!", 0.0)
    assert likely_hallucination(" Subtitles by the Amara.org community", None)


def test_generic_words_are_dropped_only_when_whisper_doubts_there_was_speech() -> None:
    assert likely_hallucination(" Thank you.", NO_SPEECH_DROP)
    assert likely_hallucination("you", 0.9)
    assert not likely_hallucination("Thank you.", 0.1)
    assert not likely_hallucination("Thank you.", None)


@given(st.sampled_from(["I'd like to book a cleaning on Tuesday at ten.", "What are your hours?", "Yes.",
                        "Can I speak to someone?", "Thank you, that's all."]),
       st.floats(0.0, 1.0))  # fmt: skip
def test_real_requests_are_kept(text: str, no_speech_prob: float) -> None:
    assert not likely_hallucination(text, no_speech_prob)
