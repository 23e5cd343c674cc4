"""Split an LLM token stream into speakable clauses as the tokens arrive, so TTS can start early.

A clause ends at a sentence end (`.`, `!`, `?`, `…`, optionally followed by closing quotes/brackets) once
whitespace follows it, at a line break, or at `,` `;` `:` `—` followed by whitespace once the clause has
`min_soft_words` words (`first_min_soft_words` for the first clause of a reply: a short first clause such as
"Sure," reaches TTS, and so the caller, sooner while the rest is synthesized behind it). Dots that do not
end a sentence are kept inside the clause: titles ("Dr. Smith"), single initials ("J. Smith"), numbers
("10.30", "$4.50") and dotted abbreviations ("a.m.", "e.g.") unless the next word starts with a capital
letter. Splits happen only at whitespace (or, for a run of `max_chars` characters without any, inside it),
so the clauses joined with spaces are the input modulo whitespace.
"""

from __future__ import annotations

import re

SENTENCE_ENDS = frozenset(".!?…")
SOFT_ENDS = frozenset(",;:—–")
CLOSERS = frozenset("\"')]}”’»")
TITLES = frozenset(
    {"dr", "mr", "mrs", "ms", "mx", "prof", "st", "mt", "ft", "sr", "jr", "vs", "rev", "gen", "col", "capt",
     "lt", "sgt", "hon", "approx", "dept", "apt", "ave", "blvd", "rd", "inc", "ltd", "co", "corp", "fig"}
)  # fmt: skip
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # "a.m", "e.g", "U.S" (final dot already removed)
_INITIAL = re.compile(r"^[A-Z]$")

DEFAULT_MIN_SOFT_WORDS = 4
FAST_FIRST_SOFT_WORDS = 1  # what the turn runner and the intents policy use for a reply's first clause
DEFAULT_MAX_WORDS = 40
DEFAULT_MAX_CHARS = 400


class ClauseSplitter:
    """Incremental splitter: `push()` each token as it arrives, `flush()` at the end of the reply.
    Plain synchronous code over strings; one instance per reply (or `reset()` between replies)."""

    __slots__ = ("_buf", "_checked", "_emitted", "first_min_soft_words", "max_chars", "max_words",
                 "min_soft_words")  # fmt: skip

    def __init__(
        self,
        *,
        min_soft_words: int = DEFAULT_MIN_SOFT_WORDS,
        max_words: int = DEFAULT_MAX_WORDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_min_soft_words: int | None = None,
    ) -> None:
        first = min_soft_words if first_min_soft_words is None else first_min_soft_words
        if min(min_soft_words, max_words, max_chars, first) < 1:
            raise ValueError("clause limits must be positive")
        self.min_soft_words = min_soft_words
        self.first_min_soft_words = first
        self.max_words = max_words
        self.max_chars = max_chars
        self._buf = ""
        self._checked = 0  # buffer positions before this one are known not to be boundaries
        self._emitted = False  # a clause of this reply has gone out (the first-clause rule is spent)

    @property
    def pending(self) -> str:
        """Text received but not yet emitted as a clause."""
        return self._buf

    def push(self, text: str) -> list[str]:
        """Add the next piece of the stream; return the clauses it completed (often none)."""
        if not text:
            return []
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_boundary()
            if cut is None:
                break
            self._emit(cut, out)
        while len(self._buf) > self.max_chars:  # no whitespace for far too long: cut anyway
            self._emit(self.max_chars, out)
        return out

    def flush(self) -> list[str]:
        """End of the reply: whatever is pending becomes the last clause."""
        out: list[str] = []
        self._emit(len(self._buf), out)
        return out

    def reset(self) -> None:
        """Drop pending text (barge-in) and start afresh (the next clause is a first clause again)."""
        self._buf = ""
        self._checked = 0
        self._emitted = False

    def _emit(self, cut: int, out: list[str]) -> None:
        clause = self._buf[:cut].strip()
        self._buf = self._buf[cut:]
        self._checked = 0
        if clause:
            out.append(clause)
            self._emitted = True

    def _find_boundary(self) -> int | None:
        """Index of the first whitespace that ends a clause, or None if none is decidable yet."""
        buf = self._buf
        words = 0
        in_word = False
        for i, ch in enumerate(buf):
            if not ch.isspace():
                in_word = True
                continue
            if in_word:
                words += 1
                in_word = False
            if i < self._checked or words == 0:
                continue
            verdict = self._boundary_at(buf, i, words)
            if verdict is None:
                return None  # need to see the next word first
            if verdict:
                return i
            self._checked = i + 1
        return None

    def _boundary_at(self, buf: str, i: int, words: int) -> bool | None:
        """Whether the whitespace at `i` ends a clause of `words` words; None if the next word decides."""
        if buf[i] == "\n" or words >= self.max_words:
            return True
        start = i
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:i]
        if not word:
            return False
        core = word.rstrip("".join(CLOSERS)) or word
        last = core[-1]
        if last in SOFT_ENDS:
            return words >= (self.min_soft_words if self._emitted else self.first_min_soft_words)
        if last not in SENTENCE_ENDS:
            return False
        if last != "." or core.endswith(".."):
            return True
        return _dot_ends_sentence(core[:-1], _next_char(buf, i))


def _next_char(buf: str, i: int) -> str | None:
    """First non-space character after position `i`, or None if the buffer ends first."""
    for ch in buf[i:]:
        if not ch.isspace():
            return ch
    return None


def _dot_ends_sentence(stem: str, next_char: str | None) -> bool | None:
    """Decide a word ending in one dot (`stem` is the word without it)."""
    bare = stem.lstrip("\"'([{“‘«")
    if bare.lower() in TITLES or _INITIAL.match(bare):
        return False
    if _INITIALISM.match(bare):
        if next_char is None:
            return None
        return next_char.isupper()
    return True


def split_clauses(text: str, **limits: int) -> list[str]:
    """All clauses of a complete text (the streaming splitter fed in one piece, then flushed)."""
    splitter = ClauseSplitter(**limits)
    return splitter.push(text) + splitter.flush()
