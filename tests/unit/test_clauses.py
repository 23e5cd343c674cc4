"""Clause splitting of a streamed LLM reply: where clauses end, and that streaming loses or adds nothing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.clauses import FAST_FIRST_SOFT_WORDS, ClauseSplitter, split_clauses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure. I can help.", ["Sure.", "I can help."]),
        ("Really? Yes! Great.", ["Really?", "Yes!", "Great."]),
        ("Dr. Smith is in today.", ["Dr. Smith is in today."]),
        ("Ask Mrs. Jones or Mr. Lee.", ["Ask Mrs. Jones or Mr. Lee."]),
        ("J. R. Smith called.", ["J. R. Smith called."]),
        ("Come at 10.30 tomorrow.", ["Come at 10.30 tomorrow."]),
        ("It costs $4.50. Cash is fine.", ["It costs $4.50.", "Cash is fine."]),
        ("We open at 9 a.m. on weekdays.", ["We open at 9 a.m. on weekdays."]),
        ("We open at 9 a.m. Does that work?", ["We open at 9 a.m.", "Does that work?"]),
        ("Bring ID, e.g. a passport.", ["Bring ID, e.g. a passport."]),
        ("The total is 1,000 dollars.", ["The total is 1,000 dollars."]),
        ("Meet at 10:30 then.", ["Meet at 10:30 then."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("(See you then.) Bye.", ["(See you then.)", "Bye."]),
        ("Wait... okay.", ["Wait...", "okay."]),
        ("Yes, sure.", ["Yes, sure."]),  # too few words for a comma to end a clause
        ("Okay, I have booked you in, and you will get a text.",
         ["Okay, I have booked you in,", "and you will get a text."]),
        ("Here is what I found: two slots on Monday.", ["Here is what I found:", "two slots on Monday."]),
        ("First line\nSecond line", ["First line", "Second line"]),
        ("   ", []),
        ("No trailing punctuation", ["No trailing punctuation"]),
    ],
)  # fmt: skip
def test_examples(text: str, expected: list[str]) -> None:
    assert split_clauses(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure, Tuesday at ten works. Anything else?", ["Sure,", "Tuesday at ten works.", "Anything else?"]),
        ("Yes, sure.", ["Yes,", "sure."]),
        ("Great, I've noted Tuesday at ten for you.", ["Great,", "I've noted Tuesday at ten for you."]),
        ("Okay. Yes, we do.", ["Okay.", "Yes, we do."]),  # only the reply's first clause is cut short
        ("You're booked for Tuesday at ten.", ["You're booked for Tuesday at ten."]),
        ("The total is 1,000 dollars.", ["The total is 1,000 dollars."]),
    ],
)  # fmt: skip
def test_fast_first_clause_ends_at_the_first_soft_mark(text: str, expected: list[str]) -> None:
    assert split_clauses(text, first_min_soft_words=FAST_FIRST_SOFT_WORDS) == expected


def test_reset_makes_the_next_clause_a_first_clause_again() -> None:
    splitter = ClauseSplitter(first_min_soft_words=1)
    assert splitter.push("Hi, there. So, what now? ") == ["Hi,", "there.", "So, what now?"]
    splitter.reset()
    assert splitter.push("So, what now? ") == ["So,", "what now?"]


def test_a_sentence_end_waits_for_the_next_character() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("It is 10.") == []  # could still become 10.30
    assert splitter.push("30") == []
    assert splitter.push(" now. Next") == ["It is 10.30 now."]
    assert splitter.pending.strip() == "Next"
    assert splitter.flush() == ["Next"]
    assert splitter.flush() == []


def test_dotted_abbreviation_decided_by_the_next_word() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("See you at 9 a.m. ") == []  # depends on the next word's case
    assert splitter.push("Bye") == ["See you at 9 a.m."]
    splitter.reset()
    assert splitter.push("See you at 9 a.m. ") == []
    assert splitter.push("sharp. ") == ["See you at 9 a.m. sharp."]


def test_long_run_without_punctuation_is_cut_at_max_words() -> None:
    words = [f"w{i}" for i in range(25)]
    assert split_clauses(" ".join(words), max_words=10) == [
        " ".join(words[:10]),
        " ".join(words[10:20]),
        " ".join(words[20:]),
    ]


def test_run_without_whitespace_is_cut_at_max_chars() -> None:
    splitter = ClauseSplitter(max_chars=50)
    out = splitter.push("x" * 120)
    assert out == ["x" * 50, "x" * 50]
    assert splitter.flush() == ["x" * 20]


def test_reset_drops_pending_text() -> None:
    splitter = ClauseSplitter()
    splitter.push("Half a sent")
    splitter.reset()
    assert splitter.pending == "" and splitter.flush() == []


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClauseSplitter(min_soft_words=0)
    with pytest.raises(ValueError):
        ClauseSplitter(first_min_soft_words=0)


ALPHABET = st.sampled_from([*"abcXYZ019 ...,,;:!?'\"()\n-", "Dr.", "a.m.", "e.g.", "10.30", " ", "  "])
TEXTS = st.lists(ALPHABET, max_size=120).map("".join)


def _stream(text: str, cuts: list[int], **limits: int) -> list[str]:
    splitter = ClauseSplitter(**limits)
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    out: list[str] = []
    for start, end in itertools.pairwise(bounds):
        out += splitter.push(text[start:end])
    return out + splitter.flush()


@given(TEXTS, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_streamed_clauses_are_the_text_modulo_whitespace(text: str, cuts: list[int]) -> None:
    clauses = _stream(text, cuts)
    assert " ".join(clauses).split() == text.split()
    assert all(c and c == c.strip() for c in clauses)


@given(TEXTS, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), st.sampled_from([1, 2, 4]))
def test_chunking_does_not_change_the_clauses(text: str, cuts: list[int], first: int) -> None:
    limits = {"max_words": 8, "first_min_soft_words": first}
    assert _stream(text, cuts, **limits) == split_clauses(text, **limits)


@given(TEXTS)
def test_fast_first_clause_only_moves_the_first_cut_earlier(text: str) -> None:
    fast = split_clauses(text, first_min_soft_words=1)
    normal = split_clauses(text)
    assert " ".join(fast).split() == text.split()
    if fast and normal:
        assert normal[0].startswith(fast[0])


@given(TEXTS, st.integers(min_value=1, max_value=6))
def test_no_clause_exceeds_max_words(text: str, max_words: int) -> None:
    assert all(len(c.split()) <= max_words for c in split_clauses(text, max_words=max_words))


@given(st.text(max_size=300), st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_any_unicode_text_survives_even_with_forced_cuts(text: str, cuts: list[int]) -> None:
    clauses = _stream(text, cuts, max_chars=16)
    assert "".join("".join(clauses).split()) == "".join(text.split())
