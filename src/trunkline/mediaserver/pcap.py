"""Classic pcap files: read Ethernet/IPv4/UDP datagrams (to replay captured RTP in tests) and write them
(to build captures for SIPp's pcap play). Pure: bytes in, bytes out; only read_pcap/write_pcap touch files."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_VLAN = (0x8100, 0x88A8)
_IPPROTO_UDP = 17


class PcapError(ValueError):
    """The file is not a classic pcap capture we can read."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    time_s: float
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    payload: bytes


def parse_pcap(data: bytes) -> Iterator[UdpDatagram]:
    """The IPv4/UDP datagrams in a classic pcap capture, in file order; other frames are skipped."""
    if len(data) < 24:
        raise PcapError(f"pcap file too short: {len(data)} octets")
    for endian in "<>":
        magic = struct.unpack_from(endian + "I", data)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise PcapError(f"not a classic pcap file (magic {data[:4].hex()}); pcapng is not supported")
    divisor = 1e6 if magic == _MAGIC_US else 1e9
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL):
        raise PcapError(f"unsupported pcap link type {linktype}")
    record = struct.Struct(endian + "IIII")
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _origlen = record.unpack_from(data, offset)
        offset += 16
        frame = data[offset : offset + caplen]
        offset += caplen
        if len(frame) < caplen:
            raise PcapError("pcap file truncated inside a packet record")
        ip = _ip_packet(frame, linktype)
        datagram = _udp(ip, sec + frac / divisor) if ip is not None else None
        if datagram is not None:
            yield datagram


def _ip_packet(frame: bytes, linktype: int) -> bytes | None:
    if linktype == LINKTYPE_RAW:
        return frame
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16 or struct.unpack_from("!H", frame, 14)[0] != _ETHERTYPE_IPV4:
            return None
        return frame[16:]
    offset = 12
    while offset + 2 <= len(frame):
        ethertype = struct.unpack_from("!H", frame, offset)[0]
        if ethertype in _ETHERTYPE_VLAN:
            offset += 4
            continue
        return frame[offset + 2 :] if ethertype == _ETHERTYPE_IPV4 else None
    return None


def _udp(ip: bytes, time_s: float) -> UdpDatagram | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != _IPPROTO_UDP:
        return None
    header_len = (ip[0] & 0x0F) * 4
    total_len = struct.unpack_from("!H", ip, 2)[0]
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:  # a fragment (offset or more-fragments set)
        return None
    if header_len < 20 or len(ip) < header_len + 8:
        return None
    src_port, dst_port, udp_len = struct.unpack_from("!HHH", ip, header_len)
    end = min(header_len + udp_len, total_len, len(ip))
    return UdpDatagram(
        time_s,
        str(ipaddress.IPv4Address(ip[12:16])),
        src_port,
        str(ipaddress.IPv4Address(ip[16:20])),
        dst_port,
        bytes(ip[header_len + 8 : end]),
    )


def read_pcap_udp(path: str | Path) -> list[UdpDatagram]:
    """All IPv4/UDP datagrams of a capture file, with addresses."""
    return list(parse_pcap(Path(path).read_bytes()))


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(capture time in seconds, UDP payload) for every IPv4/UDP datagram of a capture file."""
    for datagram in parse_pcap(Path(path).read_bytes()):
        yield datagram.time_s, datagram.payload


# ---------------------------------------------------------------------------------------------- writer


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(
    src_ip: str, src_port: int, dst_ip: str, dst_port: int, payload: bytes, ident: int = 0
) -> bytes:
    """One Ethernet/IPv4/UDP frame with valid IP and UDP checksums."""
    src = ipaddress.IPv4Address(src_ip).packed
    dst = ipaddress.IPv4Address(dst_ip).packed
    udp_len = 8 + len(payload)
    if 20 + udp_len > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} octets does not fit an IPv4 packet")
    pseudo = src + dst + struct.pack("!BBH", 0, _IPPROTO_UDP, udp_len)
    udp_head = struct.pack("!HHHH", src_port, dst_port, udp_len, 0)
    udp_sum = _checksum(pseudo + udp_head + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, udp_sum) + payload
    ip_head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    ip_head = ip_head[:10] + struct.pack("!H", _checksum(ip_head)) + ip_head[12:]
    ether = bytes.fromhex("020000000002020000000001") + struct.pack("!H", _ETHERTYPE_IPV4)
    return ether + ip_head + udp


def build_pcap(packets: Iterable[tuple[float, str, int, str, int, bytes]]) -> bytes:
    """A microsecond classic pcap (Ethernet) of (time_s, src_ip, src_port, dst_ip, dst_port, udp_payload)."""
    parts = [struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)]
    for ident, (time_s, src_ip, src_port, dst_ip, dst_port, payload) in enumerate(packets):
        frame = build_frame(src_ip, src_port, dst_ip, dst_port, payload, ident)
        usec_total = round(time_s * 1_000_000)
        sec, usec = divmod(usec_total, 1_000_000)
        parts.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
        parts.append(frame)
    return b"".join(parts)


def write_pcap(path: str | Path, packets: Iterable[tuple[float, str, int, str, int, bytes]]) -> None:
    """Write a capture of UDP datagrams, e.g. RTP for SIPp's `play_pcap_audio`."""
    Path(path).write_bytes(build_pcap(packets))
