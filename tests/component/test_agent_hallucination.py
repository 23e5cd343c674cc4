"""Whisper's inventions over noise are dropped before they become caller turns; real words never are; a
doubted scrap heard over the agent does not stop it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.asr import Word
from trunkline.pipeline.hearing import NO_SPEECH_DROP, likely_hallucination, unsure_backchannel


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


def _words(*pairs: tuple[str, float]) -> tuple[Word, ...]:
    return tuple(Word(text, 0.1 * i, 0.1 * i + 0.1, p) for i, (text, p) in enumerate(pairs))


def test_a_doubted_short_transcript_over_the_agent_is_a_misheard_backchannel() -> None:
    # what tiny whisper made of "Mm-hmm." and "Mhm." on the wire (bench/barge_in.py)
    assert unsure_backchannel("in a month.", _words(("in", 0.12), ("a", 0.2), ("month.", 0.3)))
    assert unsure_backchannel("and may chant.", _words(("and", 0.25), ("may", 0.3), ("chant.", 0.22)))


def test_interruptions_are_acted_on() -> None:
    assert not unsure_backchannel("Hold on.", _words(("Hold", 0.97), ("on.", 0.9)))  # whisper is sure
    assert not unsure_backchannel("No.", _words(("No.", 0.31)))  # a known interruption, however doubted
    assert not unsure_backchannel("Wait, stop.", _words(("Wait,", 0.3), ("stop.", 0.4)))
    long = "I said I want the other one"
    assert not unsure_backchannel(long, _words(*((w, 0.2) for w in long.split())))  # more than 3 words
    assert not unsure_backchannel("Uh-huh.", _words(("Uh-huh.", 0.2)))  # a backchannel: the policy knows it
    assert not unsure_backchannel("in a month.", None)  # no word probabilities: nothing to doubt
