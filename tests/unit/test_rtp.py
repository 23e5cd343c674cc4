"""RTP parse/serialize: byte-exact round trips, precise errors on malformed input, recorded packets."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.pcap import PcapError, build_pcap, parse_pcap, read_pcap, read_pcap_udp
from trunkline.mediaserver.rtp import (
    RtpPacket,
    RtpParseError,
    padding_for,
    parse_rtp,
    seq_delta,
    ts_delta,
)

SIP_TESTER = Path("/usr/share/sip-tester")

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def packets(draw: st.DrawFn) -> RtpPacket:
    """Any encodable RTP packet: every field, with or without CSRCs, extension and padding."""
    extension_profile = draw(st.none() | u16)
    words = draw(st.integers(0, 10)) if extension_profile is not None else 0
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=200)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=extension_profile,
        extension=draw(st.binary(min_size=4 * words, max_size=4 * words)),
        padding=draw(st.just(b"") | st.integers(1, 255).map(padding_for)),
    )


@given(packets())
def test_serialize_parse_round_trip(packet: RtpPacket) -> None:
    wire = packet.serialize()
    parsed = parse_rtp(wire)
    assert parsed == packet
    assert parsed.serialize() == wire


def _rtp_like(data: bytes) -> bytes:
    """Force version 2 so hypothesis explores the CSRC/extension/padding paths, not just the version check."""
    return bytes((0x80 | (data[0] & 0x3F),)) + data[1:] if data else data


@given(st.binary(max_size=120) | st.binary(max_size=120).map(_rtp_like))
def test_arbitrary_bytes_parse_exactly_or_raise_typed_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpParseError:
        return
    assert packet.serialize() == data


@given(st.binary(min_size=12, max_size=64).map(_rtp_like))
def test_parse_accepts_bytearray_and_memoryview(data: bytes) -> None:
    try:
        expected = parse_rtp(data)
    except RtpParseError:
        with pytest.raises(RtpParseError):
            parse_rtp(memoryview(data))
        return
    assert parse_rtp(bytearray(data)) == expected
    assert parse_rtp(memoryview(data)) == expected
    assert type(parse_rtp(memoryview(data)).payload) is bytes


def test_field_layout_matches_rfc3550() -> None:
    packet = RtpPacket(
        payload_type=101,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"\x05\x0a\x00\xa0",
        marker=True,
        csrc=(7, 8),
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        padding=padding_for(4),
    )
    wire = packet.serialize()
    assert wire[0] == 0b10_1_1_0010  # V=2, P, X, CC=2
    assert wire[1] == 0x80 | 101
    assert struct.unpack_from("!HII", wire, 2) == (0x1234, 0xDEADBEEF, 0x01020304)
    assert struct.unpack_from("!II", wire, 12) == (7, 8)
    assert struct.unpack_from("!HH", wire, 20) == (0xBEDE, 1)
    assert wire[24:28] == b"\x10\xaa\x00\x00"
    assert wire[28:32] == b"\x05\x0a\x00\xa0"
    assert wire[32:] == b"\x00\x00\x00\x04"


def _header(first: int = 0x80, second: int = 0) -> bytes:
    return bytes((first, second)) + struct.pack("!HII", 1, 2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short: 0 octets"),
        (_header()[:11], "too short: 11 octets"),
        (_header(0x40), "version is 1"),
        (_header(0x00) + b"x", "version is 0"),
        (_header(0xC0), "version is 3"),
        (_header(0x83) + bytes(8), "CSRC count 3 needs 24 octets but the packet has 20"),
        (_header(0x90) + b"\xbe\xde", "before the extension header"),
        (_header(0x90) + b"\xbe\xde\x00\x02" + bytes(4), "extension of 2 words ends at octet 24 beyond"),
        (_header(0xA0) + b"abc\x00", "bad padding length 0"),
        (_header(0xA0) + b"abc\x05", "bad padding length 5 for 4 octets"),
        (_header(0xA0), "bad padding length"),
    ],
)
def test_malformed_packets_raise_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        parse_rtp(data)


def test_padding_may_take_all_octets_after_the_header() -> None:
    packet = parse_rtp(_header(0xA0) + padding_for(8))
    assert packet.payload == b""
    assert packet.padding == padding_for(8)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(0, 1, 2, 3, csrc=tuple(range(16))),
        RtpPacket(128, 1, 2, 3),
        RtpPacket(0, 0x10000, 2, 3),
        RtpPacket(0, 1, 1 << 32, 3),
        RtpPacket(0, 1, 2, 3, extension_profile=1, extension=b"abc"),
        RtpPacket(0, 1, 2, 3, padding=b"\x00\x00"),
    ],
)
def test_serialize_rejects_unencodable_fields(packet: RtpPacket) -> None:
    with pytest.raises(ValueError):
        packet.serialize()


def test_padding_for_bounds() -> None:
    assert padding_for(1) == b"\x01"
    assert padding_for(255)[-1] == 255
    for bad in (0, 256):
        with pytest.raises(ValueError):
            padding_for(bad)


@given(u16, st.integers(-0x7FFF, 0x7FFF))
def test_seq_delta_is_signed_distance_modulo_2_16(base: int, step: int) -> None:
    assert seq_delta((base + step) & 0xFFFF, base) == step


@given(u32, st.integers(-0x7FFFFFFF, 0x7FFFFFFF))
def test_ts_delta_is_signed_distance_modulo_2_32(base: int, step: int) -> None:
    assert ts_delta((base + step) & 0xFFFFFFFF, base) == step


def _capture(name: str) -> Path:
    path = SIP_TESTER / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the Debian package sip-tester (CI does)")
    return path


def test_recorded_packets_round_trip_byte_exact() -> None:
    names = ["g711a.pcap", *sorted(p.name for p in SIP_TESTER.glob("dtmf_2833_*.pcap"))]
    count = 0
    for name in names:
        for _time_s, payload in read_pcap(_capture(name)):
            assert parse_rtp(payload).serialize() == payload
            count += 1
    assert count > 236  # g711a.pcap alone holds 236 packets; the DTMF captures add more


def test_recorded_g711a_stream_fields() -> None:
    parsed = [parse_rtp(p) for _t, p in read_pcap(_capture("g711a.pcap"))]
    assert {p.payload_type for p in parsed} == {8}
    assert {len(p.payload) for p in parsed} == {240}
    assert len({p.ssrc for p in parsed}) == 1
    assert parsed[0].marker
    for prev, cur in itertools.pairwise(parsed):
        assert seq_delta(cur.sequence_number, prev.sequence_number) == 1
        assert ts_delta(cur.timestamp, prev.timestamp) == 240


datagrams = st.tuples(
    st.integers(0, 4_000_000_000).map(lambda us: us / 1_000_000),
    st.ip_addresses(v=4).map(str),
    u16,
    st.ip_addresses(v=4).map(str),
    u16,
    st.binary(max_size=300),
)


@given(st.lists(datagrams, max_size=8))
def test_pcap_writer_and_reader_round_trip(records: list[tuple[float, str, int, str, int, bytes]]) -> None:
    read = list(parse_pcap(build_pcap(records)))
    assert [(d.src_ip, d.src_port, d.dst_ip, d.dst_port, d.payload) for d in read] == [r[1:] for r in records]
    for datagram, record in zip(read, records, strict=True):
        assert datagram.time_s == pytest.approx(record[0], abs=1e-6)


def test_pcap_reader_handles_both_byte_orders_and_nanoseconds(tmp_path: Path) -> None:
    little = build_pcap([(12.345678, "127.0.0.1", 1000, "127.0.0.2", 2000, b"rtp")])
    header = struct.unpack("<IHHiIII", little[:24])
    record = struct.unpack("<IIII", little[24:40])
    frame = little[40:]
    big_ns = struct.pack(">IHHiIII", 0xA1B23C4D, *header[1:])
    big_ns += struct.pack(">IIII", record[0], record[1] * 1000, record[2], record[3]) + frame
    path = tmp_path / "big_ns.pcap"
    path.write_bytes(big_ns)
    assert [(round(t, 6), p) for t, p in read_pcap(path)] == [(12.345678, b"rtp")]
    assert read_pcap_udp(path)[0].dst_port == 2000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x0d\x0d\x0a" + bytes(40), "pcapng is not supported"),
        (b"\xd4\xc3\xb2\xa1", "too short"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105), "unsupported pcap link type 105"),
        (build_pcap([(0.0, "1.2.3.4", 1, "5.6.7.8", 2, b"x" * 20)])[:-5], "truncated"),
    ],
)
def test_pcap_reader_errors(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        list(parse_pcap(data))
