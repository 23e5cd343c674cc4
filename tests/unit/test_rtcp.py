"""RTCP: SR/RR/SDES/BYE build and parse, compound packets, report blocks from stats, NTP helpers."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.pcap import write_pcap
from trunkline.mediaserver.rtcp import (
    NTP_UNIX_OFFSET_S,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    report_block,
    round_trip_s,
    sdes_cname,
    serialize_packet,
    serialize_rtcp,
    unix_from_ntp,
)
from trunkline.mediaserver.rtpstats import ReceiveStats

u32 = st.integers(0, 0xFFFFFFFF)

blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    extended_highest_seq=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
block_lists = st.lists(blocks, max_size=31).map(tuple)
extensions = st.integers(0, 4).map(lambda n: bytes(range(4 * n)))
sdes_items = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=4).map(tuple)

rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=block_lists,
        extension=extensions,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=block_lists, extension=extensions),
    st.builds(
        SourceDescription,
        chunks=st.lists(st.builds(SdesChunk, ssrc=u32, items=sdes_items), max_size=5).map(tuple),
    ),
    st.builds(Bye, ssrcs=st.lists(u32, max_size=31).map(tuple), reason=st.binary(max_size=255)),
    st.builds(
        UnknownRtcp,
        packet_type=st.sampled_from([204, 205, 206, 207]),
        count=st.integers(0, 31),
        body=st.integers(0, 8).map(lambda n: bytes(range(4 * n))),
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=5))
def test_compound_round_trip(packets: list[RtcpPacket]) -> None:
    wire = serialize_rtcp(packets)
    assert len(wire) % 4 == 0
    assert parse_rtcp(wire) == packets
    assert serialize_rtcp(parse_rtcp(wire)) == wire


def _rtcp_like(data: bytes) -> bytes:
    return bytes((0x80 | (data[0] & 0x3F),)) + data[1:] if data else data


@given(st.binary(max_size=200) | st.binary(max_size=200).map(_rtcp_like))
def test_arbitrary_bytes_parse_or_raise_typed_error(data: bytes) -> None:
    with contextlib.suppress(RtcpParseError):
        parse_rtcp(data)


def test_sender_report_layout_matches_rfc3550() -> None:
    block = ReportBlock(0xCAFE, 64, -2, 0x1_0005, 37, 0x12345678, 0x00018000)
    sr = SenderReport(0xABCD, 0x83AA7E80_80000000, 16000, 50, 8000, (block,))
    wire = serialize_packet(sr)
    assert wire[:4] == bytes((0x81, 200)) + struct.pack("!H", 12)  # V=2 RC=1, PT=SR, 13 words - 1
    assert struct.unpack("!IQIII", wire[4:28]) == (0xABCD, 0x83AA7E80_80000000, 16000, 50, 8000)
    assert struct.unpack("!IBBHIIII", wire[28:]) == (
        0xCAFE,
        64,
        0xFF,
        0xFFFE,
        0x1_0005,
        37,
        0x12345678,
        0x18000,
    )


def test_sdes_cname_and_bye_reason_are_word_aligned() -> None:
    sdes = sdes_cname(0x11, "trunkline@example")
    wire = serialize_packet(sdes)
    assert len(wire) % 4 == 0
    assert wire[8:10] == bytes((1, len("trunkline@example")))
    assert wire[-1] == 0  # items end with a null octet
    assert parse_rtcp(wire)[0] == sdes
    assert sdes.cname(0x11) == "trunkline@example"
    assert sdes.cname(0x12) is None
    bye = Bye((1, 2), b"bye")
    assert serialize_packet(bye) == bytes((0x82, 203, 0, 3)) + struct.pack("!II", 1, 2) + b"\x03bye"


def test_padding_on_the_last_packet_is_stripped() -> None:
    rr = serialize_packet(ReceiverReport(7))
    padded = bytes((rr[0] | 0x20, rr[1], 0, 2)) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(serialize_packet(sdes_cname(7, "x")) + padded)[1] == ReceiverReport(7)


def _head(first: int, packet_type: int, words: int) -> bytes:
    return bytes((first, packet_type)) + struct.pack("!H", words)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc9", "too short: 2 octets"),
        (_head(0x40, 201, 1) + bytes(4), "version is 1"),
        (_head(0x80, 201, 3) + bytes(4), "claims 16 octets, 8 left"),
        (_head(0x80, 201, 1) + bytes(4) + b"\x80\xc9", "2 stray octets"),
        (_head(0xA0, 201, 1) + bytes(4) + _head(0x80, 201, 1) + bytes(4), "not the last"),
        (_head(0xA0, 201, 1) + bytes(4), "bad RTCP padding length 0"),
        (_head(0xA0, 201, 1) + b"\0\0\0\x09", "bad RTCP padding length 9"),
        (_head(0x81, 200, 6) + bytes(24), "SR with 1 report blocks needs 48"),
        (_head(0x82, 201, 7) + bytes(28), "RR with 2 report blocks needs 52"),
        (_head(0xA0, 201, 2) + bytes(4) + b"\0\0\0\x02", "not word aligned"),
        (_head(0x82, 202, 2) + bytes(4) + b"\0\0\0\0", "announces 2 chunks but ends after 1"),
        (_head(0x81, 202, 2) + bytes(4) + b"\x01\x09ab", "runs past the end"),
        (_head(0x81, 202, 1) + bytes(4), "not terminated"),
        (_head(0x83, 203, 2) + bytes(8), "BYE with 3 SSRCs needs 12"),
        (_head(0x81, 203, 2) + bytes(4) + b"\x09abc", "reason of 9 octets"),
    ],
)
def test_malformed_rtcp_raises_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpParseError, match=message):
        parse_rtcp(data)


@pytest.mark.parametrize(
    "packet",
    [
        ReceiverReport(1, tuple(ReportBlock(i, 0, 0, 0, 0) for i in range(32))),
        ReceiverReport(1, (ReportBlock(1, 256, 0, 0, 0),)),
        ReceiverReport(1, (ReportBlock(1, 0, 0x800000, 0, 0),)),
        ReceiverReport(1, extension=b"abc"),
        ReceiverReport(1 << 32),
        Bye((1,), bytes(256)),
        SourceDescription((SdesChunk(1, ((0, b"x"),)),)),
    ],
)
def test_serialize_rejects_unencodable_fields(packet: RtcpPacket) -> None:
    with pytest.raises(ValueError):
        serialize_packet(packet)


def test_report_block_from_receive_stats() -> None:
    stats = ReceiveStats(8000)
    for seq in [0, *range(1, 41, 1)]:
        if seq % 10 != 5:  # 4 of the 40 validated sequence numbers are lost
            stats.update(seq, 160 * seq, 0.02 * seq + (0.004 if seq % 2 else 0.0))
    block = report_block(stats, 0x5555, now=12.5, last_sr_ntp_middle=0xAABBCCDD, last_sr_received_s=10.0)
    assert block.ssrc == 0x5555
    assert block.fraction_lost == (4 << 8) // 40
    assert block.cumulative_lost == 4
    assert block.extended_highest_seq == 40
    assert block.jitter == int(stats.jitter) > 0
    assert (block.lsr, block.dlsr) == (0xAABBCCDD, int(2.5 * 65536))
    no_sr = report_block(stats, 0x5555, now=12.5)
    assert (no_sr.lsr, no_sr.dlsr, no_sr.fraction_lost) == (0, 0, 0)  # the interval was consumed above
    assert parse_rtcp(serialize_packet(ReceiverReport(1, (block,))))[0] == ReceiverReport(1, (block,))


def test_ntp_epoch_and_fraction() -> None:
    assert ntp_from_unix(0.0) == NTP_UNIX_OFFSET_S << 32
    assert ntp_from_unix(1.5) == ((NTP_UNIX_OFFSET_S + 1) << 32) | 0x80000000
    assert ntp_middle32(0x1234_5678_9ABC_DEF0) == 0x5678_9ABC


@given(st.floats(0, 4_000_000_000))  # 1970 .. 2096, across the 2036 NTP era rollover
def test_ntp_round_trip(unix_s: float) -> None:
    assert unix_from_ntp(ntp_from_unix(unix_s)) == pytest.approx(unix_s, abs=1e-6)


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    sent_ntp = ntp_from_unix(1_700_000_000.25)
    block = ReportBlock(1, 0, 0, 0, 0, lsr=ntp_middle32(sent_ntp), dlsr=int(0.5 * 65536))
    rtt = round_trip_s(ntp_from_unix(1_700_000_000.25 + 0.5 + 0.12), block)
    assert rtt == pytest.approx(0.12, abs=1 / 65536)
    assert round_trip_s(sent_ntp, ReportBlock(1, 0, 0, 0, 0)) is None


def test_tshark_decodes_our_compound_packet(tmp_path: Path) -> None:
    """An independent decoder (Wireshark's) agrees with our SR + SDES + BYE encoding."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is missing: install the Debian package tshark (CI does)")
    block = ReportBlock(0x2222, 51, 7, 70000, 123, 0x01020304, 65536)
    compound = serialize_rtcp(
        [
            SenderReport(0x1111, ntp_from_unix(1_700_000_000.5), 4242, 10, 1600, (block,)),
            sdes_cname(0x1111, "agent@trunkline"),
            Bye((0x1111,), b"done"),
        ]
    )
    pcap = tmp_path / "rtcp.pcap"
    write_pcap(pcap, [(1.0, "127.0.0.1", 40001, "127.0.0.1", 40003, compound)])
    fields = [
        "rtcp.pt",
        "rtcp.senderssrc",
        "rtcp.ssrc.high_cycles",
        "rtcp.ssrc.high_seq",
        "rtcp.ssrc.jitter",
        "rtcp.ssrc.fraction",
    ]
    fields += ["rtcp.ssrc.cum_nr", "rtcp.sdes.text", "rtcp.ssrc.lsr", "rtcp.ssrc.dlsr", "_ws.expert"]
    fields += ["ip.checksum.status", "udp.checksum.status"]  # our pcap writer's checksums, 1 = good
    args = [tshark, "-r", str(pcap), "-d", "udp.port==40003,rtcp", "-T", "fields", "-E", "separator=|"]
    args += ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    for field in fields:
        args += ["-e", field]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    pt, sender, cycles, high, jitter, fraction, cum, cname, lsr, dlsr, expert, ip_ok, udp_ok = out.split("|")
    assert pt == "200,202,203"
    assert int(sender, 0) == 0x1111
    assert int(cycles) * 65536 + int(high) == 70000
    assert (int(jitter), int(fraction), int(cum)) == (123, 51, 7)
    assert (int(lsr, 0), int(dlsr, 0)) == (0x01020304, 65536)
    assert cname.split(",") == ["agent@trunkline", "done"]  # Wireshark files the BYE reason as text too
    assert expert == ""  # no malformed-packet warnings
    assert (ip_ok, udp_ok) == ("1", "1")
