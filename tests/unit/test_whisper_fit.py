"""The fitted encoder window's sizing, token cap and loop detector (the model-free parts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.whisper_fit import (
    FULL_WINDOW_FRAMES,
    cut_loop,
    looks_repetitive,
    max_tokens_for,
    window_frames,
)


@pytest.mark.parametrize(
    ("content", "min_frames", "expected"),
    [
        (100, 1000, 1000),  # short audio: the floor
        (149, 600, 600),
        (150, 600, 300),  # 1.5 s and longer: the audio plus a 1 s tail
        (200, 1000, 300),
        (250, 600, 400),
        (950, 1000, 1100),
        (1000, 500, 1100),
        (1, 100, 200),
        (10, 101, 200),
        (2950, 1000, 3000),
        (9000, 1000, 3000),
    ],
)
def test_window_frames(content: int, min_frames: int, expected: int) -> None:
    assert window_frames(content, min_frames) == expected


@given(st.integers(0, 10_000), st.integers(100, 3000), st.integers(0, 3000))
def test_window_covers_the_speech_or_is_the_full_window(content: int, min_frames: int, below: int) -> None:
    frames = window_frames(content, min_frames, below)
    assert frames % 100 == 0 and frames <= FULL_WINDOW_FRAMES
    assert frames >= content + 100 or frames == FULL_WINDOW_FRAMES
    if content < below:
        assert frames >= min(min_frames, FULL_WINDOW_FRAMES)


def test_token_cap_grows_with_duration_and_is_bounded() -> None:
    assert max_tokens_for(0.5) < max_tokens_for(2.0) < max_tokens_for(10.0) <= 220
    assert max_tokens_for(60.0) == 220


@pytest.mark.parametrize(
    "text",
    [
        "Yes? Yes? Yes? Yes?",
        "No. No. No.",
        "Okay, thanks. Okay, thanks. Okay, thanks.",
        "at ten at ten at ten",
    ],
)
def test_loops_are_detected(text: str) -> None:
    assert looks_repetitive(text)


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a cleaning on Tuesday at 10.",
        "No, no.",
        "Okay, thanks. Thanks.",
        "",
        "My number is 555-1234.",
    ],
)
def test_normal_speech_is_not_a_loop(text: str) -> None:
    assert not looks_repetitive(text)


@pytest.mark.parametrize(
    ("looped", "kept"),
    [
        ("Yes, please. Yes, please. Yes, ple", "Yes, please."),
        ("No. No. No. No. No.", "No."),
        ("I'd like to order two pizzas. I'd like to order two pi", "I'd like to order two pizzas."),
        ("and what about the fee? What about the fee? What about the", "and what about the fee?"),
        ("Thanks. That's everything. Thanks. That's everything. Thanks. That", "Thanks. That's everything."),
    ],
)
def test_a_loop_to_the_end_is_cut_after_its_first_copy(looped: str, kept: str) -> None:
    assert cut_loop(looped) == kept


@pytest.mark.parametrize(
    "text",
    [
        "No, no, no.",
        "Thank you, thank you.",
        "My PIN is 1 1 1 1.",
        "My number is 5 5 5 1 2 3 4.",
        "I'd like to book a cleaning on Tuesday at 10.",
        "Okay.",
        "",
    ],
)
def test_real_repetition_is_kept(text: str) -> None:
    assert cut_loop(text) == text


@given(st.lists(st.sampled_from(["yes", "no", "the", "5", "book", "ten"]), max_size=12))
def test_a_cut_is_a_prefix_ending_before_a_repeat(words: list[str]) -> None:
    text = " ".join(words)
    cut = cut_loop(text)
    assert text.startswith(cut)
    assert cut == text or len(cut.split()) < len(words)
