"""Minimal RTCP (RFC 3550 §6): SR, RR, SDES, BYE and compound packets, report blocks from receive
statistics, and NTP timestamp helpers. Time is passed in; nothing here reads a clock."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from trunkline.mediaserver.rtpstats import ReceiveStats

SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204
SDES_CNAME = 1
NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
_HEAD = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")  # ssrc, NTP, RTP ts, packet count, octet count
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, ext highest seq, jitter, LSR, DLSR
_MAX_COUNT = 31


class RtcpParseError(ValueError):
    """A datagram is not a valid (compound) RTCP packet; the message says why."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report about one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 0..255 = lost/expected * 256 over the last interval
    cumulative_lost: int  # signed 24-bit
    extended_highest_seq: int
    jitter: int  # RTP timestamp units
    lsr: int = 0  # middle 32 bits of the NTP timestamp of the last SR received, 0 if none
    dlsr: int = 0  # delay since that SR, in 1/65536 s


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT 200): what we sent, when (NTP and RTP clocks), plus reports about what we received."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP fixed point (seconds << 32 | fraction)
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension, kept verbatim


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT 201): reception reports from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The SDES items of one source."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()  # (item type, value); 1 = CNAME


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (PT 202); a compound packet must carry our CNAME."""

    chunks: tuple[SdesChunk, ...] = ()

    def cname(self, ssrc: int) -> str | None:
        """The CNAME this packet gives for `ssrc`, if any."""
        for chunk in self.chunks:
            if chunk.ssrc == ssrc:
                for kind, value in chunk.items:
                    if kind == SDES_CNAME:
                        return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (PT 203): these sources leave, with an optional reason."""

    ssrcs: tuple[int, ...] = ()
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """A packet type we do not interpret (APP, feedback, XR ...): kept verbatim so compounds still parse."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


# ---------------------------------------------------------------------------------------------- NTP time


def ntp_from_unix(unix_s: float) -> int:
    """64-bit NTP timestamp for a wall-clock time in Unix seconds (era wraps modulo 2^32 s)."""
    seconds = int(unix_s // 1)
    fraction = round((unix_s - seconds) * (1 << 32))
    if fraction >= 1 << 32:
        seconds, fraction = seconds + 1, fraction - (1 << 32)
    return (((seconds + NTP_UNIX_OFFSET_S) & 0xFFFFFFFF) << 32) | fraction


def unix_from_ntp(ntp: int) -> float:
    """Unix seconds for a 64-bit NTP timestamp; seconds with the top bit clear are era 1 (from 2036)."""
    seconds = ntp >> 32
    if not seconds & 0x80000000:
        seconds += 1 << 32
    return seconds - NTP_UNIX_OFFSET_S + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp, as carried in LSR."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_s(arrival_ntp: int, block: ReportBlock) -> float | None:
    """Round-trip time from a report block about our stream (RFC 3550 §6.4.1), None without an SR."""
    if block.lsr == 0:
        return None
    return ((ntp_middle32(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536.0


def report_block(
    stats: ReceiveStats,
    ssrc: int,
    now: float,
    last_sr_ntp_middle: int = 0,
    last_sr_received_s: float | None = None,
) -> ReportBlock:
    """A report block about `ssrc` from its receive statistics; advances the loss interval.

    `last_sr_ntp_middle` is ntp_middle32() of the last SR from that source and `last_sr_received_s` the
    (monotonic) time it arrived; `now` is on the same clock.
    """
    loss = stats.loss_interval()
    dlsr = 0
    if last_sr_ntp_middle and last_sr_received_s is not None:
        dlsr = min(0xFFFFFFFF, max(0, int((now - last_sr_received_s) * 65536)))
    return ReportBlock(
        ssrc=ssrc,
        fraction_lost=loss.fraction_lost,
        cumulative_lost=loss.cumulative_lost,
        extended_highest_seq=loss.extended_highest_seq,
        jitter=min(0xFFFFFFFF, int(stats.jitter)),
        lsr=last_sr_ntp_middle if last_sr_received_s is not None else 0,
        dlsr=dlsr,
    )


# ---------------------------------------------------------------------------------------------- serialize


def _header(packet_type: int, count: int, body_len: int) -> bytes:
    if count > _MAX_COUNT:
        raise ValueError(f"RTCP packet type {packet_type} carries at most {_MAX_COUNT} items, not {count}")
    return _HEAD.pack(0x80 | count, packet_type, body_len // 4)  # length = words - 1 (header word)


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    out = []
    for b in reports:
        if not 0 <= b.fraction_lost <= 255 or not -0x800000 <= b.cumulative_lost <= 0x7FFFFF:
            raise ValueError(f"report block loss out of range: {b.fraction_lost}, {b.cumulative_lost}")
        lost = (b.fraction_lost << 24) | (b.cumulative_lost & 0xFFFFFF)
        out.append(_BLOCK.pack(b.ssrc, lost, b.extended_highest_seq, b.jitter, b.lsr, b.dlsr))
    return b"".join(out)


def _check_extension(extension: bytes) -> None:
    if len(extension) % 4:
        raise ValueError("RTCP profile-specific extension must be a multiple of 4 octets")


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def serialize_packet(packet: RtcpPacket) -> bytes:
    """One RTCP packet on the wire (no padding bit); raises ValueError for fields that cannot be encoded."""
    try:
        return _serialize(packet)
    except struct.error as exc:
        raise ValueError(f"RTCP field out of range: {exc}") from None


def _serialize(packet: RtcpPacket) -> bytes:
    if isinstance(packet, SenderReport):
        _check_extension(packet.extension)
        info = _SENDER_INFO.pack(
            packet.ssrc, packet.ntp_timestamp, packet.rtp_timestamp, packet.packet_count, packet.octet_count
        )
        body = info + _blocks(packet.reports) + packet.extension
        return _header(SR, len(packet.reports), len(body)) + body
    if isinstance(packet, ReceiverReport):
        _check_extension(packet.extension)
        body = _SSRC.pack(packet.ssrc) + _blocks(packet.reports) + packet.extension
        return _header(RR, len(packet.reports), len(body)) + body
    if isinstance(packet, SourceDescription):
        body = b"".join(_sdes_chunk(chunk) for chunk in packet.chunks)
        return _header(SDES, len(packet.chunks), len(body)) + body
    if isinstance(packet, Bye):
        body = b"".join(_SSRC.pack(s) for s in packet.ssrcs)
        if packet.reason:
            if len(packet.reason) > 255:
                raise ValueError("BYE reason is at most 255 octets")
            body = _pad4(body + bytes((len(packet.reason),)) + packet.reason)
        return _header(BYE, len(packet.ssrcs), len(body)) + body
    body = _pad4(packet.body)
    return _header(packet.packet_type, packet.count, len(body)) + body


def _sdes_chunk(chunk: SdesChunk) -> bytes:
    parts = [_SSRC.pack(chunk.ssrc)]
    for kind, value in chunk.items:
        if not 1 <= kind <= 255 or len(value) > 255:
            raise ValueError(f"SDES item type {kind} / length {len(value)} out of range")
        parts.append(bytes((kind, len(value))) + value)
    raw = b"".join(parts)
    return raw + bytes(4 - len(raw) % 4)  # at least one null octet ends the item list


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """A compound RTCP packet (RFC 3550 §6.1: start with an SR or RR, and include an SDES CNAME)."""
    return b"".join(serialize_packet(p) for p in packets)


def sdes_cname(ssrc: int, cname: str) -> SourceDescription:
    """An SDES packet carrying just our CNAME."""
    return SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))


# ---------------------------------------------------------------------------------------------- parse


def parse_rtcp(datagram: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a (compound) RTCP datagram; raises RtcpParseError, never IndexError/struct.error."""
    data = bytes(datagram)
    size = len(data)
    if size < 4:
        raise RtcpParseError(f"RTCP packet too short: {size} octets")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if size - offset < 4:
            raise RtcpParseError(f"{size - offset} stray octets after the last RTCP packet at {offset}")
        first, packet_type, words = _HEAD.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpParseError(f"RTCP version is {first >> 6} at octet {offset}, expected 2")
        end = offset + 4 + 4 * words
        if end > size:
            raise RtcpParseError(
                f"RTCP packet at octet {offset} claims {4 + 4 * words} octets, {size - offset} left"
            )
        body = data[offset + 4 : end]
        if first & 0x20:
            if end != size:
                raise RtcpParseError(
                    f"padding bit set on RTCP packet at octet {offset}, which is not the last"
                )
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpParseError(f"bad RTCP padding length {pad} for a {len(body)}-octet body")
            body = body[:-pad]
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24 + 24 * count:
            raise RtcpParseError(
                f"SR with {count} report blocks needs {24 + 24 * count} octets, has {len(body)}"
            )
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        reports, extension = _parse_blocks(body, 24, count)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports, extension)
    if packet_type == RR:
        if len(body) < 4 + 24 * count:
            raise RtcpParseError(
                f"RR with {count} report blocks needs {4 + 24 * count} octets, has {len(body)}"
            )
        reports, extension = _parse_blocks(body, 4, count)
        return ReceiverReport(_SSRC.unpack_from(body)[0], reports, extension)
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    return UnknownRtcp(packet_type, count, body)


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[tuple[ReportBlock, ...], bytes]:
    blocks: list[ReportBlock] = []
    for i in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, offset + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    extension = body[offset + 24 * count :]
    if len(extension) % 4:
        raise RtcpParseError(f"report extension of {len(extension)} octets is not word aligned")
    return tuple(blocks), extension


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtcpParseError(f"SDES announces {count} chunks but ends after {len(chunks)}")
        ssrc = _SSRC.unpack_from(body, offset)[0]
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtcpParseError("SDES chunk not terminated by a null item")
            kind = body[offset]
            if kind == 0:
                offset = (offset + 4) & ~3  # skip the null octet(s) to the next word
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpParseError(f"SDES item type {kind} runs past the end of the packet")
            length = body[offset + 1]
            items.append((kind, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if len(body) < 4 * count:
        raise RtcpParseError(f"BYE with {count} SSRCs needs {4 * count} octets, has {len(body)}")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = b""
    rest = body[4 * count :]
    if rest:
        length = rest[0]
        if 1 + length > len(rest):
            raise RtcpParseError(f"BYE reason of {length} octets runs past the end of the packet")
        reason = rest[1 : 1 + length]
    return Bye(tuple(ssrcs), reason)
