"""A tiny pure matcher for the offline intents policy: pick an intent, pull slot values out of a phrase.

Scoring is word overlap with each example phrase (the share of an example's content words the caller
said); it is deliberately simple and predictable. Slot values come out normalised: weekdays as
'monday', times as 'HH:MM' (24 h), numbers as digits, choices as written in the tenant file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trunkline.tenants.model import Intent, SlotDef

_WORD_RE = re.compile(r"[a-z0-9']+")
_STOP_WORDS = "a an the i i'd i'm to you can could do is me my for on at please and of in it be we us our"
_STOP = frozenset(_STOP_WORDS.split(" "))
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBER_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve "
    "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBER_WORDS = {w: i for i, w in enumerate(_NUMBER_TEXT.split(" "))}
_MINUTE_WORDS = {"fifteen": 15, "thirty": 30, "forty five": 45, "forty-five": 45, "o'clock": 0}
_HOUR = r"(\d{1,2}|" + "|".join(list(_NUMBER_WORDS)[1:13]) + ")"
_MERIDIEM_RE = re.compile(
    r"\b" + _HOUR + r"(?::(\d{2})|\s+(fifteen|thirty|forty[- ]five|o'clock))?\s*([ap])\.?\s*m\b\.?",
    re.IGNORECASE,
)
_CLOCK_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_AT_RE = re.compile(r"\bat\s+" + _HOUR + r"(?:\s+(fifteen|thirty|forty[- ]five|o'clock))?\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class IntentMatch:
    intent: Intent
    score: float
    slots: Mapping[str, str]
    missing: tuple[str, ...]


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("\u2019", "'"))


def _hour(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS[token.lower()]


def extract_time(text: str) -> str | None:
    """'3 pm', '3:30 p.m.', 'three thirty pm', '15:00', 'noon', 'at 9' → 'HH:MM' (bare hours 1-7 mean pm)."""
    lower = text.lower()
    if re.search(r"\b(noon|midday)\b", lower):
        return "12:00"
    if re.search(r"\bmidnight\b", lower):
        return "00:00"
    if m := _MERIDIEM_RE.search(lower):
        hour, minute = _hour(m[1]), int(m[2]) if m[2] else _MINUTE_WORDS.get((m[3] or "o'clock").lower(), 0)
        if not 1 <= hour <= 12 or minute > 59:
            return None
        hour = hour % 12 + (12 if m[4] == "p" else 0)
        return f"{hour:02d}:{minute:02d}"
    if m := _CLOCK_RE.search(lower):
        return f"{int(m[1]):02d}:{m[2]}"
    if m := _AT_RE.search(lower):
        hour, minute = _hour(m[1]), _MINUTE_WORDS.get((m[2] or "o'clock").lower(), 0)
        if 1 <= hour <= 7:
            hour += 12  # "at 3" on a business line means the afternoon
        return f"{hour:02d}:{minute:02d}" if hour <= 23 else None
    return None


def spoken_time(hhmm: str) -> str:
    """'10:00' → '10 AM', '15:30' → '3:30 PM', '12:00' → 'noon': how a person says it (and how TTS reads it
    naturally; "10:00" comes out as "ten hundred"). Anything else is returned unchanged."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", hhmm)
    if m is None:
        return hhmm
    hour, minute = int(m[1]), int(m[2])
    if hour > 23 or minute > 59:
        return hhmm
    if minute == 0 and hour in (0, 12):
        return "midnight" if hour == 0 else "noon"
    clock = f"{hour % 12 or 12}" + (f":{minute:02d}" if minute else "")
    return f"{clock} {'PM' if hour >= 12 else 'AM'}"


def spoken_slots(slots: Mapping[str, str], defs: Mapping[str, SlotDef]) -> dict[str, str]:
    """Slot values as the agent says them in a reply (tool arguments keep the normalised values)."""
    return {
        name: spoken_time(value) if name in defs and defs[name].type == "time" else value
        for name, value in slots.items()
    }


def extract_slot(slot: SlotDef, text: str) -> str | None:
    """The value of `slot` in `text`, normalised, or None when it is not there (or out of range)."""
    said = words(text)
    if slot.type == "weekday":
        return next((d for w in said for d in _DAYS if w in (d, d + "s")), None)
    if slot.type == "time":
        return extract_time(text)
    if slot.type == "number":
        return _number(said, slot)
    if slot.type == "choice":
        lower = " ".join(said)
        return next((c for c in slot.choices if re.search(rf"\b{re.escape(c.lower())}\b", lower)), None)
    if slot.type == "pattern" and slot.pattern is not None:
        m = re.search(slot.pattern, text, re.IGNORECASE)
        return m[0] if m else None
    return text.strip() or None


def _number(said: list[str], slot: SlotDef) -> str | None:
    for w in said:
        value = float(w) if w.isdigit() else _NUMBER_WORDS.get(w)
        if value is None:
            continue
        if (slot.min_value is not None and value < slot.min_value) or (
            slot.max_value is not None and value > slot.max_value
        ):
            continue
        return str(int(value))
    return None


def extract_slots(intent: Intent, slot_defs: Mapping[str, SlotDef], text: str) -> dict[str, str]:
    found = {}
    for name in intent.slots:
        if name in slot_defs and (value := extract_slot(slot_defs[name], text)) is not None:
            found[name] = value
    return found


def _example_score(example: str, said: set[str]) -> float:
    content = [w for w in words(re.sub(r"\{[^{}]*\}", " ", example)) if w not in _STOP] or words(example)
    return sum(w in said for w in content) / len(content) if content else 0.0


def match_intent(
    intents: Iterable[Intent], slot_defs: Mapping[str, SlotDef], text: str, *, threshold: float = 0.5
) -> IntentMatch | None:
    """The best intent for `text` (ties: the one listed first), or None when nothing scores `threshold`."""
    said = set(words(text))
    best: IntentMatch | None = None
    for intent in intents:
        score = max((_example_score(e, said) for e in intent.examples), default=0.0)
        slots = extract_slots(intent, slot_defs, text)
        score += 0.05 * len(slots)  # a phrase that carries this intent's slots leans towards it
        if score >= threshold and (best is None or score > best.score):
            missing = tuple(s for s in intent.slots if s not in slots)
            best = IntentMatch(intent, score, slots, missing)
    return best
