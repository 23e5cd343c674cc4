"""RTP packets (RFC 3550 §5.1): parse and serialize, byte-exact, with one typed error for bad input."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_HEADER = struct.Struct("!BBHII")  # the fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC
PLAIN_FIRST_OCTET = 0x80  # version 2, no padding, no extension, no CSRC: then the payload follows at 12
_EXT_HEADER = struct.Struct("!HH")
_CSRC = tuple(struct.Struct(f"!{n}I") for n in range(16))
_unpack_header = RTP_HEADER.unpack_from
RTP_VERSION = 2
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_CSRC = 15


class RtpParseError(ValueError):
    """A datagram is not a valid RTP packet; the message says precisely why."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. `padding` holds the padding octets verbatim (last octet = count) so serialize()
    reproduces the input byte for byte; use `padding_for(n)` to make n octets of padding."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: bytes = b""

    def serialize(self) -> bytes:
        """The packet on the wire; raises ValueError for fields that cannot be encoded."""
        if not 0 <= self.payload_type <= 0x7F:
            raise ValueError(f"RTP payload type must be 0..127, not {self.payload_type}")
        count = len(self.csrc)
        if count > MAX_CSRC:
            raise ValueError(f"RTP carries at most {MAX_CSRC} CSRCs, not {count}")
        first = (RTP_VERSION << 6) | count
        if self.padding:
            if self.padding[-1] != len(self.padding):
                raise ValueError("RTP padding must end with its own length (use padding_for(n))")
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        second = 0x80 | self.payload_type if self.marker else self.payload_type
        try:
            head = RTP_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)
            if count:
                head += _CSRC[count].pack(*self.csrc)
            if self.extension_profile is not None:
                words, rest = divmod(len(self.extension), 4)
                if rest:
                    raise ValueError("RTP header extension length must be a multiple of 4 octets")
                head += _EXT_HEADER.pack(self.extension_profile, words) + self.extension
        except struct.error as exc:
            raise ValueError(f"RTP header field out of range: {exc}") from None
        return head + self.payload + self.padding if self.padding else head + self.payload


def parse_rtp(datagram: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one datagram; raises RtpParseError (never IndexError/struct.error) on any malformed input."""
    data = datagram if type(datagram) is bytes else bytes(datagram)
    size = len(data)
    if size < 12:
        raise RtpParseError(f"packet too short: {size} octets, RTP header needs 12")
    first, second, seq, ts, ssrc = _unpack_header(data)
    if first == PLAIN_FIRST_OCTET:  # the common case
        return RtpPacket(second & 0x7F, seq, ts, ssrc, data[12:], second > 0x7F)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version is {first >> 6}, expected 2")
    return _parse_general(data, first, second, seq, ts, ssrc)


def _parse_general(data: bytes, first: int, second: int, seq: int, ts: int, ssrc: int) -> RtpPacket:
    size = len(data)
    cc = first & 0x0F
    offset = 12 + 4 * cc
    if offset > size:
        raise RtpParseError(f"CSRC count {cc} needs {offset} octets but the packet has {size}")
    csrc: tuple[int, ...] = _CSRC[cc].unpack_from(data, 12) if cc else ()
    ext_profile: int | None = None
    extension = b""
    if first & 0x10:
        if offset + 4 > size:
            raise RtpParseError(
                f"header extension flag set but the packet ends at octet {size}, before the extension header"
            )
        ext_profile, ext_words = _EXT_HEADER.unpack_from(data, offset)
        ext_end = offset + 4 + 4 * ext_words
        if ext_end > size:
            raise RtpParseError(
                f"header extension of {ext_words} words ends at octet {ext_end} beyond the packet ({size})"
            )
        extension = data[offset + 4 : ext_end]
        offset = ext_end
    end = size
    if first & 0x20:
        padding_len = data[-1]
        if padding_len == 0 or offset + padding_len > size:
            raise RtpParseError(
                f"bad padding length {padding_len} for {size - offset} octets after the header"
            )
        end = size - padding_len
    return RtpPacket(
        second & 0x7F,
        seq,
        ts,
        ssrc,
        data[offset:end],
        second > 0x7F,
        csrc,
        ext_profile,
        extension,
        data[end:],
    )


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number b to a, modulo 2^16 (positive when a is newer)."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


def ts_delta(a: int, b: int) -> int:
    """Signed distance from RTP timestamp b to a, modulo 2^32 (positive when a is later)."""
    d = (a - b) & 0xFFFFFFFF
    return d - TS_MOD if d >= 0x80000000 else d


def padding_for(n: int) -> bytes:
    """n octets of RTP padding (1..255): zeros, then the count."""
    if not 1 <= n <= 255:
        raise ValueError(f"RTP padding must be 1..255 octets, not {n}")
    return bytes(n - 1) + bytes((n,))
