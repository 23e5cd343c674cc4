"""RTP packets (RFC 3550 §5.1): parse and serialize, byte-exact, with one typed error for bad input."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")
RTP_VERSION = 2
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


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
        """The packet on the wire."""
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            if len(self.extension) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4 octets")
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        parts.append(self.padding)
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one datagram; raises RtpParseError (never IndexError/struct.error) on any malformed input."""
    size = len(data)
    if size < 12:
        raise RtpParseError(f"packet too short: {size} octets, RTP header needs 12")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpParseError(f"RTP version is {version}, expected 2")
    cc = first & 0x0F
    offset = 12 + 4 * cc
    if offset > size:
        raise RtpParseError(f"CSRC count {cc} needs {offset} octets but the packet has {size}")
    csrc = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    ext_profile: int | None = None
    extension = b""
    if first & 0x10:
        if offset + 4 > size:
            raise RtpParseError("header extension flag set but the packet ends before the extension header")
        ext_profile, ext_words = struct.unpack_from("!HH", data, offset)
        ext_end = offset + 4 + 4 * ext_words
        if ext_end > size:
            raise RtpParseError(
                f"header extension of {ext_words} words ends at octet {ext_end} beyond the packet ({size})"
            )
        extension = data[offset + 4 : ext_end]
        offset = ext_end
    padding_len = 0
    end = size
    if first & 0x20:
        padding_len = data[-1]
        if padding_len == 0 or offset + padding_len > size:
            raise RtpParseError(f"bad padding length {padding_len} for {size - offset} octets after the header")
        end = size - padding_len
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrc=tuple(csrc),
        extension_profile=ext_profile,
        extension=bytes(extension),
        padding=bytes(data[end:]),
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
