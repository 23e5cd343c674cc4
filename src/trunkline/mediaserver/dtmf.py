"""DTMF: RFC 4733 telephone-event decode/encode and SIP INFO bodies, all yielding one DtmfDigit per key press.

The decoder reports a digit once, when its event ends (E bit) or, if every end packet was lost, when no
packet of it arrived for `end_timeout_s` (`poll(now)` at `next_deadline()`). Time is passed in.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from trunkline.mediaserver.rtp import RtpPacket

EVENT_DIGITS = "0123456789*#ABCD"
MAX_EVENT_DURATION = 0xFFFF  # the 16-bit duration field; longer events are sent in segments (§2.5.1.3)
_EVENT = struct.Struct("!BBH")
_DIGIT_EVENTS = {d: i for i, d in enumerate(EVENT_DIGITS)}


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, however it arrived."""

    digit: str
    duration_ms: int
    source: str  # "rfc4733" or "info"


@dataclass(frozen=True, slots=True)
class TelephoneEventFrame:
    """One RFC 4733 payload to send, one per packet interval. All frames of an event carry the event's start
    RTP timestamp plus `timestamp_offset` (non-zero only for segments of events longer than 0xFFFF units)."""

    payload: bytes
    marker: bool
    end: bool
    timestamp_offset: int = 0


class DtmfInfoError(ValueError):
    """A SIP INFO body does not carry a DTMF digit we understand."""


def event_to_digit(event: int) -> str | None:
    """The DTMF digit for a telephone-event code, None for non-DTMF events (flash, tones ...)."""
    return EVENT_DIGITS[event] if 0 <= event < 16 else None


def digit_to_event(digit: str) -> int:
    """The telephone-event code for a DTMF digit (0-9 * # A-D, case-insensitive)."""
    event = _DIGIT_EVENTS.get(digit.upper()) if len(digit) == 1 else None
    if event is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return event


# ---------------------------------------------------------------------------------------------- decoder


class _Pending:
    """The event being received: start key, current segment, longest duration seen, last arrival."""

    __slots__ = ("event", "last_s", "prior_units", "seg_ts", "ssrc", "start_ts", "units")

    def __init__(self, ssrc: int, ts: int, event: int, units: int, now: float) -> None:
        self.ssrc = ssrc
        self.start_ts = ts
        self.seg_ts = ts
        self.event = event
        self.prior_units = 0  # duration of completed 0xFFFF segments
        self.units = units
        self.last_s = now


class TelephoneEventDecoder:
    """RFC 4733 receiver for one RTP stream's telephone-event payload type: one DtmfDigit per event."""

    def __init__(self, clock_rate_hz: int = 8000, end_timeout_s: float = 0.3, history: int = 64) -> None:
        if clock_rate_hz <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate_hz}")
        self._clock_rate_hz = clock_rate_hz
        self._end_timeout_s = end_timeout_s
        self._pending: _Pending | None = None
        self._done: set[tuple[int, int]] = set()  # (ssrc, segment timestamp) of reported events
        self._done_order: deque[tuple[int, int]] = deque()
        self._history = history
        self._newest: tuple[int, int] | None = None  # (ssrc, start ts) of the newest event seen
        self.packets = 0
        self.malformed = 0  # payload shorter than one 4-octet event
        self.ignored_events = 0  # events other than 0-15 (flash, tones)
        self.repeats = 0  # packets of events already reported (duplicates, late end/updates)
        self.late = 0  # packets of an older, never seen event that arrived after a newer one
        self.timeouts = 0  # events reported because their end packets never came

    def next_deadline(self) -> float | None:
        """When poll() must run to report an event whose end packets were lost; None if nothing pending."""
        pending = self._pending
        return None if pending is None else pending.last_s + self._end_timeout_s

    def poll(self, now: float) -> list[DtmfDigit]:
        """Report the pending event if it timed out without an end packet."""
        pending = self._pending
        if pending is None or now < pending.last_s + self._end_timeout_s:
            return []
        self.timeouts += 1
        return [self._finish(pending)]

    def push(self, packet: RtpPacket, now: float) -> list[DtmfDigit]:
        """Feed one telephone-event packet; returns the digits it completes (usually none or one)."""
        self.packets += 1
        out = self.poll(now)
        payload = packet.payload
        if len(payload) < 4:
            self.malformed += 1
            return out
        ts = packet.timestamp
        for offset in range(0, len(payload) - 3, 4):  # several contiguous events may be packed (§2.5.1.5)
            event, flags, units = _EVENT.unpack_from(payload, offset)
            self._push_event(packet.ssrc, ts, event, bool(flags & 0x80), units, now, out)
            ts = (ts + units) & 0xFFFFFFFF
        return out

    def _push_event(
        self, ssrc: int, ts: int, event: int, end: bool, units: int, now: float, out: list[DtmfDigit]
    ) -> None:
        if (ssrc, ts) in self._done:
            self.repeats += 1
            return
        if event > 15:
            self.ignored_events += 1
            return
        pending = self._pending
        if pending is not None and pending.ssrc == ssrc:
            if ts == pending.seg_ts:
                pending.units = max(pending.units, units)
                pending.last_s = now
                if end:
                    out.append(self._finish(pending))
                return
            if event == pending.event and ts == (pending.seg_ts + MAX_EVENT_DURATION) & 0xFFFFFFFF:
                self._done_add((ssrc, pending.seg_ts))  # next segment of a long event (§2.5.1.3)
                pending.prior_units += MAX_EVENT_DURATION
                pending.seg_ts, pending.units, pending.last_s = ts, units, now
                if end:
                    out.append(self._finish(pending))
                return
        newest = self._newest
        if newest is not None and newest[0] == ssrc and _ts_before(ts, newest[1]):
            self.late += 1
            return
        if pending is not None:
            out.append(self._finish(pending))  # a new event began: the previous one's end packets were lost
        self._newest = (ssrc, ts)
        pending = _Pending(ssrc, ts, event, units, now)
        if end:
            out.append(self._finish(pending))
        else:
            self._pending = pending

    def _finish(self, pending: _Pending) -> DtmfDigit:
        self._pending = None
        self._done_add((pending.ssrc, pending.seg_ts))
        units = pending.prior_units + pending.units
        return DtmfDigit(EVENT_DIGITS[pending.event], round(units * 1000 / self._clock_rate_hz), "rfc4733")

    def _done_add(self, key: tuple[int, int]) -> None:
        self._done.add(key)
        self._done_order.append(key)
        if len(self._done_order) > self._history:
            self._done.discard(self._done_order.popleft())


def _ts_before(a: int, b: int) -> bool:
    """True if RTP timestamp a is earlier than b (modulo 2^32)."""
    return 0 < ((b - a) & 0xFFFFFFFF) < 0x80000000


# ---------------------------------------------------------------------------------------------- encoder


def encode_digit(
    digit: str, duration_ms: int = 100, clock_rate_hz: int = 8000, packet_ms: int = 20, volume: int = 10
) -> list[TelephoneEventFrame]:
    """The RFC 4733 frames for one key press, one per `packet_ms`: a first frame with the marker, duration
    updates, then the end frame three times with the final duration."""
    event = digit_to_event(digit)
    if duration_ms <= 0 or packet_ms <= 0 or clock_rate_hz <= 0:
        raise ValueError("duration, packet interval and clock rate must be positive")
    if not 0 <= volume <= 63:
        raise ValueError(f"telephone-event volume is 0..63 (-dBm0), not {volume}")
    total = max(1, round(duration_ms * clock_rate_hz / 1000))
    step = max(1, round(packet_ms * clock_rate_hz / 1000))
    frames: list[TelephoneEventFrame] = []
    segment = 0  # start of the current 0xFFFF segment, in units from the event start
    elapsed = step
    while elapsed < total:
        if elapsed - segment > MAX_EVENT_DURATION:
            frames.append(_frame(event, volume, MAX_EVENT_DURATION, False, segment, not frames))
            segment += MAX_EVENT_DURATION
        frames.append(_frame(event, volume, elapsed - segment, False, segment, not frames))
        elapsed += step
    while total - segment > MAX_EVENT_DURATION:
        frames.append(_frame(event, volume, MAX_EVENT_DURATION, False, segment, not frames))
        segment += MAX_EVENT_DURATION
    for _ in range(3):
        frames.append(_frame(event, volume, total - segment, True, segment, not frames))
    return frames


def _frame(event: int, volume: int, units: int, end: bool, offset: int, first: bool) -> TelephoneEventFrame:
    payload = _EVENT.pack(event, (0x80 if end else 0) | volume, units)
    return TelephoneEventFrame(payload, first, end, offset)


# ---------------------------------------------------------------------------------------------- SIP INFO


def parse_dtmf_info(body: bytes | str, content_type: str, default_duration_ms: int = 100) -> DtmfDigit:
    """The digit in a SIP INFO body of type application/dtmf-relay ("Signal=5\\r\\nDuration=160") or
    application/dtmf ("5"); raises DtmfInfoError otherwise."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/dtmf":
        return DtmfDigit(_info_digit(text.strip()), default_duration_ms, "info")
    if kind != "application/dtmf-relay":
        raise DtmfInfoError(f"content type {kind!r} is not application/dtmf-relay or application/dtmf")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise DtmfInfoError("dtmf-relay body has no Signal= line")
    duration_ms = default_duration_ms
    if "duration" in fields:
        raw = fields["duration"]
        if not (raw.isascii() and raw.isdigit()):
            raise DtmfInfoError(f"dtmf-relay Duration is not a number: {raw[:16]!r}")
        duration_ms = int(raw)
    return DtmfDigit(_info_digit(fields["signal"]), duration_ms, "info")


def _info_digit(value: str) -> str:
    """A digit from an INFO Signal value: the character itself or its event code (10 = *, 11 = # ...)."""
    if len(value) == 1 and value.upper() in _DIGIT_EVENTS:
        return value.upper()
    if value.isascii() and value.isdigit() and int(value) < 16:
        return EVENT_DIGITS[int(value)]
    raise DtmfInfoError(f"not a DTMF signal: {value[:16]!r}")
