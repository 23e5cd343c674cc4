"""The lead-phrase split that lets piper's first audio of a clause be short (pure text rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.tts import split_lead


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure, one moment.", ["Sure,", "one moment."]),
        ("Okay, great, I can do that.", ["Okay,", "great, I can do that."]),
        ("All right then: here it is.", ["All right then:", "here it is."]),
        ("Yes, please.", ["Yes, please."]),  # a one-word rest is not worth a second piper call
        ("Sure.", ["Sure."]),
        ("I can help you with that booking, no problem.", ["I can help you with that booking, no problem."]),
        ("Hello! Thanks for calling.", ["Hello! Thanks for calling."]),  # piper splits sentences itself
        ("Mr. Smith, your table is ready.", ["Mr. Smith, your table is ready."]),
        ("Okay great sure thing, hello there.", ["Okay great sure thing, hello there."]),
    ],
)
def test_split_lead(text: str, expected: list[str]) -> None:
    assert split_lead(text) == expected


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=8)
_sep = st.sampled_from([" ", ", ", ". ", "; ", "  ", ": ", "! "])


@given(st.lists(st.tuples(_word, _sep), min_size=1, max_size=12))
def test_split_keeps_every_word_in_order_and_leads_are_short(parts: list[tuple[str, str]]) -> None:
    text = "".join(w + s for w, s in parts).strip()
    pieces = split_lead(text)
    assert 1 <= len(pieces) <= 2 and all(p.strip() == p and p for p in pieces)
    assert " ".join(pieces).split() == text.split()
    if len(pieces) == 2:
        assert len(pieces[0].split()) <= 3 and pieces[0][-1] in ",;:" and len(pieces[1].split()) >= 2
