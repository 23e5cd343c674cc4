"""RFC 4733 DTMF: recorded captures, encoder layout, decoder dedup/timeout/segments, INFO bodies."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mediaserver.dtmf import (
    MAX_EVENT_DURATION,
    DtmfDigit,
    DtmfInfoError,
    TelephoneEventDecoder,
    TelephoneEventFrame,
    digit_to_event,
    encode_digit,
    event_to_digit,
    parse_dtmf_info,
)
from trunkline.mediaserver.pcap import read_pcap
from trunkline.mediaserver.rtp import RtpPacket, parse_rtp

SIP_TESTER = Path("/usr/share/sip-tester")

# Known content of the captures Debian's sip-tester ships (checked with tshark: one event per file, event
# code as named, 7 updates then 3 end packets with duration 0x08c0 = 2240 units = 280 ms, last update 0x0780).
CAPTURES = {
    "dtmf_2833_0.pcap": "0",
    "dtmf_2833_1.pcap": "1",
    "dtmf_2833_2.pcap": "2",
    "dtmf_2833_3.pcap": "3",
    "dtmf_2833_4.pcap": "4",
    "dtmf_2833_5.pcap": "5",
    "dtmf_2833_6.pcap": "6",
    "dtmf_2833_7.pcap": "7",
    "dtmf_2833_8.pcap": "8",
    "dtmf_2833_9.pcap": "9",
    "dtmf_2833_star.pcap": "*",
    "dtmf_2833_pound.pcap": "#",
}
CAPTURE_DURATION_MS = 280
CAPTURE_LAST_UPDATE_MS = 240


def _capture(name: str) -> list[tuple[float, RtpPacket]]:
    path = SIP_TESTER / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the Debian package sip-tester (CI does)")
    return [(time_s, parse_rtp(payload)) for time_s, payload in read_pcap(path)]


def _push_all(decoder: TelephoneEventDecoder, packets: list[tuple[float, RtpPacket]]) -> list[DtmfDigit]:
    digits: list[DtmfDigit] = []
    for now, packet in packets:
        digits += decoder.push(packet, now)
    return digits


@pytest.mark.parametrize(("name", "digit"), sorted(CAPTURES.items()))
def test_sip_tester_capture_decodes_to_its_digit(name: str, digit: str) -> None:
    decoder = TelephoneEventDecoder()
    packets = _capture(name)
    assert len(packets) == 10
    assert _push_all(decoder, packets) == [DtmfDigit(digit, CAPTURE_DURATION_MS, "rfc4733")]
    assert decoder.repeats == 2  # the redundant end packets
    assert decoder.next_deadline() is None
    assert decoder.poll(packets[-1][0] + 10) == []


def test_sip_tester_captures_in_one_session() -> None:
    """All captures share one SSRC; replayed in RTP timestamp order through one decoder."""
    captures = sorted((_capture(name) for name in CAPTURES), key=lambda c: c[0][1].timestamp)
    decoder = TelephoneEventDecoder()
    digits: list[DtmfDigit] = []
    for index, packets in enumerate(captures):
        digits += _push_all(decoder, [(10.0 * index + t - packets[0][0], p) for t, p in packets])
    assert "".join(d.digit for d in digits) == "1023456789*#"


def test_capture_with_all_end_packets_lost_reports_on_timeout() -> None:
    packets = [(t, p) for t, p in _capture("dtmf_2833_7.pcap") if not p.payload[1] & 0x80]
    decoder = TelephoneEventDecoder(end_timeout_s=0.3)
    assert _push_all(decoder, packets) == []
    deadline = decoder.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(packets[-1][0] + 0.3)
    assert decoder.poll(deadline - 0.001) == []
    assert decoder.poll(deadline) == [DtmfDigit("7", CAPTURE_LAST_UPDATE_MS, "rfc4733")]
    assert decoder.next_deadline() is None
    assert decoder.timeouts == 1


def test_encoder_frame_layout() -> None:
    frames = encode_digit("5", duration_ms=100, clock_rate_hz=8000, packet_ms=20, volume=10)
    layout = [(*struct.unpack("!BBH", f.payload), f.marker, f.end, f.timestamp_offset) for f in frames]
    assert layout == [
        (5, 10, 160, True, False, 0),
        (5, 10, 320, False, False, 0),
        (5, 10, 480, False, False, 0),
        (5, 10, 640, False, False, 0),
        (5, 0x80 | 10, 800, False, True, 0),
        (5, 0x80 | 10, 800, False, True, 0),
        (5, 0x80 | 10, 800, False, True, 0),
    ]


def test_encoder_short_press_marks_the_first_end_frame() -> None:
    frames = encode_digit("#", duration_ms=10)
    assert [(f.marker, f.end) for f in frames] == [(True, True), (False, True), (False, True)]
    assert struct.unpack("!BBH", frames[0].payload) == (11, 0x80 | 10, 80)


def test_encoder_segments_events_longer_than_the_duration_field() -> None:
    frames = encode_digit(
        "9", duration_ms=20_000, clock_rate_hz=8000
    )  # 160000 units = 2 full segments + rest
    offsets = sorted({f.timestamp_offset for f in frames})
    assert offsets == [0, MAX_EVENT_DURATION, 2 * MAX_EVENT_DURATION]
    assert sum(f.marker for f in frames) == 1 and frames[0].marker
    for offset in offsets[:2]:
        last = [f for f in frames if f.timestamp_offset == offset][-1]
        assert struct.unpack("!BBH", last.payload)[2] == MAX_EVENT_DURATION and not last.end
    final = [struct.unpack("!BBH", f.payload)[2] for f in frames if f.end]
    assert final == [160_000 - 2 * MAX_EVENT_DURATION] * 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"digit": "E"},
        {"digit": "12"},
        {"digit": "1", "duration_ms": 0},
        {"digit": "1", "packet_ms": 0},
        {"digit": "1", "volume": 64},
        {"digit": "1", "clock_rate_hz": 0},
    ],
)
def test_encoder_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_digit(**kwargs)  # type: ignore[arg-type]


def _packets(
    frames: list[TelephoneEventFrame], start_ts: int, ssrc: int = 0x1234, seq0: int = 0
) -> list[RtpPacket]:
    return [
        RtpPacket(
            101, (seq0 + i) & 0xFFFF, (start_ts + f.timestamp_offset) & 0xFFFFFFFF, ssrc, f.payload, f.marker
        )
        for i, f in enumerate(frames)
    ]


def test_same_digit_twice_is_two_presses() -> None:
    decoder = TelephoneEventDecoder()
    first = _packets(encode_digit("3"), 1000)
    second = _packets(encode_digit("3"), 3000, seq0=len(first))
    digits = _push_all(decoder, [(0.02 * i, p) for i, p in enumerate(first + second)])
    assert digits == [DtmfDigit("3", 100, "rfc4733")] * 2


def test_late_and_reordered_packets_of_reported_events_are_ignored() -> None:
    decoder = TelephoneEventDecoder()
    first = _packets(encode_digit("1"), 1000)
    second = _packets(encode_digit("2"), 3000)
    order = [*first[4:], *second[:2], *first[:4], *second[2:]]  # the start of "1" arrives after "2" began
    digits = _push_all(decoder, [(0.02 * i, p) for i, p in enumerate(order)])
    assert [d.digit for d in digits] == ["1", "2"]
    assert decoder.repeats == 2 + 4 + 2


def test_packet_of_an_older_never_seen_event_is_late() -> None:
    decoder = TelephoneEventDecoder()
    newer = _packets(encode_digit("6"), 5000)
    older = _packets(encode_digit("4"), 1000)
    assert _push_all(decoder, [(0.0, newer[0]), (0.02, older[-1])]) == []
    assert decoder.late == 1
    assert _push_all(decoder, [(0.04, newer[-1])]) == [DtmfDigit("6", 100, "rfc4733")]


def test_new_ssrc_starts_a_new_stream() -> None:
    decoder = TelephoneEventDecoder()
    a = _packets(encode_digit("1"), 90000, ssrc=1)
    b = _packets(encode_digit("2"), 10, ssrc=2)
    digits = _push_all(decoder, [(0.02 * i, p) for i, p in enumerate(a[:3] + b)])
    assert [d.digit for d in digits] == ["1", "2"]  # "1" lost its end packets: the new stream ends it


def test_non_dtmf_events_and_short_payloads_are_counted_and_dropped() -> None:
    decoder = TelephoneEventDecoder()
    flash = RtpPacket(101, 1, 100, 7, struct.pack("!BBH", 16, 0x8A, 800))
    tone = RtpPacket(101, 2, 200, 7, struct.pack("!BBH", 100, 0x0A, 800))
    short = RtpPacket(101, 3, 300, 7, b"\x01\x8a")
    assert _push_all(decoder, [(0.0, flash), (0.01, tone), (0.02, short)]) == []
    assert (decoder.ignored_events, decoder.malformed, decoder.packets) == (2, 1, 3)
    assert decoder.next_deadline() is None


def test_packed_contiguous_events_in_one_packet() -> None:
    payload = struct.pack("!BBHBBH", 1, 0x8A, 800, 2, 0x8A, 400)
    digits = TelephoneEventDecoder().push(RtpPacket(101, 1, 5000, 7, payload), 0.0)
    assert digits == [DtmfDigit("1", 100, "rfc4733"), DtmfDigit("2", 50, "rfc4733")]


def test_event_digit_mapping() -> None:
    assert [event_to_digit(e) for e in range(16)] == list("0123456789*#ABCD")
    assert event_to_digit(16) is None
    assert [digit_to_event(d) for d in "0123456789*#abcd"] == list(range(16))


@st.composite
def press_sequences(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int, list[RtpPacket], bool]]]:
    """Presses encoded, then mangled per event: loss of updates and of up to all end packets, duplicates,
    reordering. Returns (clock rate, packet_ms, [(digit, true duration_ms, packets, an end survived)])."""
    rate = draw(st.sampled_from([8000, 16000, 48000]))
    packet_ms = draw(st.sampled_from([10, 20, 30, 50]))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    presses = []
    for _ in range(draw(st.integers(1, 5))):
        digit = draw(st.sampled_from("0123456789*#ABCD"))
        duration_ms = draw(st.integers(1, MAX_EVENT_DURATION * 1000 // rate))
        frames = encode_digit(digit, duration_ms, rate, packet_ms)
        kept = [f for f in frames if f.end or draw(st.booleans())]
        ends = [f for f in kept if f.end]
        drop_ends = draw(st.integers(0, 3))
        if drop_ends == 3 and len(kept) == 3:
            drop_ends = 2  # keep at least one packet of every press
        kept = [f for f in kept if not f.end] + ends[drop_ends:]
        kept += [draw(st.sampled_from(kept)) for _ in range(draw(st.integers(0, 3)))]
        kept = draw(st.permutations(kept))
        presses.append((digit, duration_ms, _packets(kept, ts), drop_ends < 3))
        ts = (ts + duration_ms * rate // 1000 + draw(st.integers(1, 4000))) & 0xFFFFFFFF
    return rate, packet_ms, presses


@settings(max_examples=150, deadline=None)
@given(press_sequences())
def test_encoder_decoder_round_trip_one_digit_per_press(
    case: tuple[int, int, list[tuple[str, int, list[RtpPacket], bool]]],
) -> None:
    rate, packet_ms, presses = case
    decoder = TelephoneEventDecoder(clock_rate_hz=rate, end_timeout_s=0.3)
    now = 100.0
    digits: list[DtmfDigit] = []
    for _digit, _duration_ms, packets, _ended in presses:
        for packet in packets:
            now += packet_ms / 1000
            digits += decoder.push(packet, now)
        now += 0.05
    deadline = decoder.next_deadline()
    if deadline is not None:
        digits += decoder.poll(deadline)
    assert [d.digit for d in digits] == [p[0] for p in presses]
    assert all(d.source == "rfc4733" for d in digits)
    for got, (_digit, duration_ms, _sent, ended) in zip(digits, presses, strict=True):
        if ended:
            assert got.duration_ms == duration_ms
        else:
            assert 0 < got.duration_ms <= duration_ms
    assert decoder.next_deadline() is None


@settings(max_examples=30, deadline=None)
@given(
    duration_ms=st.integers(8_200, 30_000),
    lost=st.sets(st.integers(0, 1500), max_size=300),
    duplicates=st.lists(st.integers(0, 1500), max_size=10),
)
def test_segmented_long_press_is_one_digit(duration_ms: int, lost: set[int], duplicates: list[int]) -> None:
    """A press longer than 0xFFFF units (8.19 s at 8 kHz) is sent in segments (RFC 4733 §2.5.1.3).
    Loss is bounded (≤ 300 packets) so every ~410-packet segment keeps some packets."""
    frames = encode_digit("A", duration_ms, 8000, 20)
    packets = _packets(frames, 0xFFFF0000)  # the event also crosses the RTP timestamp wrap
    kept = [p for i, p in enumerate(packets) if p.payload[1] & 0x80 or i not in lost]
    for i in duplicates:
        kept.insert(min(i, len(kept)), kept[min(i, len(kept) - 1)])
    decoder = TelephoneEventDecoder()
    digits = _push_all(decoder, [(0.02 * i, p) for i, p in enumerate(kept)])
    assert digits == [DtmfDigit("A", duration_ms, "rfc4733")]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("Signal=5\r\nDuration=160\r\n", "application/dtmf-relay", DtmfDigit("5", 160, "info")),
        (b"signal= #\nduration = 250", "Application/DTMF-Relay; charset=utf-8", DtmfDigit("#", 250, "info")),
        ("Signal=10\r\nDuration=100", "application/dtmf-relay", DtmfDigit("*", 100, "info")),
        ("Signal=b\r\n", "application/dtmf-relay", DtmfDigit("B", 100, "info")),
        ("9\r\n", "application/dtmf", DtmfDigit("9", 100, "info")),
        (b"11", "application/dtmf", DtmfDigit("#", 100, "info")),
    ],
)
def test_sip_info_bodies(body: str | bytes, content_type: str, expected: DtmfDigit) -> None:
    assert parse_dtmf_info(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("Signal=5", "text/plain", "content type 'text/plain'"),
        ("Duration=160", "application/dtmf-relay", "no Signal= line"),
        ("Signal=E", "application/dtmf-relay", "not a DTMF signal"),
        ("Signal=16", "application/dtmf-relay", "not a DTMF signal"),
        ("Signal=\u00b2", "application/dtmf-relay", "not a DTMF signal"),
        ("Signal=1\r\nDuration=\u00b2", "application/dtmf-relay", "Duration is not a number"),
        ("Signal=1\r\nDuration=x", "application/dtmf-relay", "Duration is not a number"),
        ("", "application/dtmf", "not a DTMF signal"),
    ],
)
def test_bad_sip_info_bodies_raise(body: str, content_type: str, message: str) -> None:
    with pytest.raises(DtmfInfoError, match=message):
        parse_dtmf_info(body, content_type)
