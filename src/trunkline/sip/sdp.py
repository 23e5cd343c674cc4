"""SDP for our audio leg: parse an offer, negotiate an answer, build our own offer/answer text.

Pure functions over strings. We support one audio stream over RTP/AVP with PCMU, PCMA or G.722 plus
telephone-event (RFC 4733), IPv4 only; anything we cannot honour raises `SdpError` carrying the SIP status
the INVITE should be answered with (488 for "not acceptable here", 400 for unparseable).

A media-level `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605) says where the far end wants RTCP. It is advisory:
a malformed one (bad port, not a unicast IPv4 address, IPv6, a name) is ignored rather than failing the
call, and the RFC 3550 default (RTP port + 1 on the media host) applies. Our own SDP has no a=rtcp since
our RTCP is on that default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

STATIC_PAYLOADS = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}
CODEC_PAYLOAD = {"PCMU": 0, "PCMA": 8, "G722": 9}
# Sampling rate of the audio itself (G.722's RTP clock is 8000 for historical reasons, RFC 3551).
CODEC_SAMPLE_RATE_HZ = {"PCMU": 8000, "PCMA": 8000, "G722": 16000}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
REVERSE_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
DEFAULT_DTMF_PT = 101


class SdpError(Exception):
    """An SDP we cannot use; `status` is the SIP response code to send (400 or 488)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class NoCommonCodec(SdpError):
    """The offer has no codec we accept: answer 488 Not Acceptable Here."""

    def __init__(self, offered: tuple[str, ...]) -> None:
        super().__init__(488, f"no common codec (offered: {', '.join(offered) or 'none'})")


@dataclass(frozen=True, slots=True)
class AudioMedia:
    """The audio m= line of a session description, with what applies to it resolved."""

    host: str
    port: int
    payload_types: tuple[int, ...]
    rtpmap: tuple[tuple[int, str, int], ...]  # (payload type, encoding name upper-case, clock rate)
    direction: str
    ptime_ms: int | None
    rtcp_port: int | None = None  # a=rtcp (RFC 3605); None: RTP port + 1
    rtcp_host: str | None = None  # a=rtcp's address; None: the media's connection host

    def encoding(self, pt: int) -> tuple[str, int] | None:
        for number, name, rate in self.rtpmap:
            if number == pt:
                return name, rate
        return STATIC_PAYLOADS.get(pt)

    @property
    def on_hold(self) -> bool:
        """The remote side does not want to receive our audio (RFC 3264 hold, or the old c=0.0.0.0)."""
        return self.direction in ("sendonly", "inactive") or self.host == "0.0.0.0"


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What both sides agreed on for our RTP leg."""

    codec: str
    payload_type: int
    clock_rate_hz: int
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    direction: str  # our direction, as it appears in our SDP
    ptime_ms: int
    remote_rtcp: tuple[str, int] | None = None  # the far end's a=rtcp address; None: RTP port + 1

    @property
    def sample_rate_hz(self) -> int:
        return CODEC_SAMPLE_RATE_HZ[self.codec]

    @property
    def we_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


def parse_audio(text: str) -> AudioMedia:
    """Find and resolve the first usable audio stream of an SDP body."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError(400, "SDP must start with v=")
    session_host: str | None = None
    session_dir = "sendrecv"
    blocks: list[list[str]] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(400, f"malformed SDP line {line[:40]!r}")
        if line.startswith("m="):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        elif line.startswith("c="):
            session_host = _connection(line)
        elif line[2:] in DIRECTIONS:
            session_dir = line[2:]
    for block in blocks:
        media = _audio_block(block, session_host, session_dir)
        if media is not None:
            return media
    raise SdpError(488, "no audio stream with a non-zero port over RTP/AVP")


def _connection(line: str) -> str:
    parts = line[2:].split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(400, f"malformed c= line {line[:40]!r}")
    if parts[1] != "IP4":
        raise SdpError(488, f"only IPv4 media is supported, got {parts[1]}")
    host = parts[2].split("/")[0]
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise SdpError(488, f"c= address must be an IPv4 address, got {host!r}") from None
    return host


def _audio_block(block: list[str], session_host: str | None, session_dir: str) -> AudioMedia | None:
    parts = block[0][2:].split()
    if len(parts) < 4:
        raise SdpError(400, f"malformed m= line {block[0][:40]!r}")
    if parts[0] != "audio" or parts[2] != "RTP/AVP" or parts[1] == "0":
        return None
    try:
        port = int(parts[1].split("/")[0])
        pts = tuple(int(p) for p in parts[3:])
    except ValueError:
        raise SdpError(400, f"malformed m= line {block[0][:40]!r}") from None
    if not 0 < port < 65536 or any(not 0 <= pt < 128 for pt in pts):
        raise SdpError(400, f"port or payload type out of range in {block[0][:40]!r}")
    host, direction, ptime = session_host, session_dir, None
    rtcp: tuple[int, str | None] | None = None
    rtpmap: list[tuple[int, str, int]] = []
    for line in block[1:]:
        if line.startswith("c="):
            host = _connection(line)
        elif line[2:] in DIRECTIONS:
            direction = line[2:]
        elif line.startswith("a=rtpmap:"):
            rtpmap.append(_rtpmap(line))
        elif line.startswith("a=ptime:"):
            ptime = _int_attr(line, "a=ptime:")
        elif line.startswith("a=rtcp:") and rtcp is None:
            rtcp = _rtcp_attr(line)
    if host is None:
        raise SdpError(400, "no c= line for the audio stream")
    rtcp_port, rtcp_host = rtcp if rtcp is not None else (None, None)
    return AudioMedia(host, port, pts, tuple(rtpmap), direction, ptime, rtcp_port, rtcp_host)


def _rtcp_attr(line: str) -> tuple[int, str | None] | None:
    """`a=rtcp:<port> [IN IP4 <unicast address>]` (RFC 3605) as (port, address or None); None when
    malformed or not usable by us (IPv6, a name, multicast, 0.0.0.0, 240/4): the caller keeps the default."""
    parts = line[len("a=rtcp:") :].split()
    if not parts or not (parts[0].isascii() and parts[0].isdigit()) or not 0 < int(parts[0]) < 65536:
        return None
    if len(parts) == 1:
        return int(parts[0]), None
    if len(parts) != 4 or parts[1] != "IN" or parts[2] != "IP4":
        return None
    try:
        addr = ipaddress.IPv4Address(parts[3])
    except ValueError:
        return None
    if addr.is_multicast or addr.is_unspecified or addr.is_reserved:  # reserved: 240/4, broadcast
        return None
    return int(parts[0]), str(addr)


def _rtpmap(line: str) -> tuple[int, str, int]:
    try:
        pt_text, encoding = line[len("a=rtpmap:") :].split(None, 1)
        name, rate = encoding.split("/")[:2]
        return int(pt_text), name.upper(), int(rate)
    except ValueError:
        raise SdpError(400, f"malformed rtpmap {line[:40]!r}") from None


def _int_attr(line: str, prefix: str) -> int | None:
    try:
        return int(line[len(prefix) :].strip())
    except ValueError:
        return None


def negotiate(offer: AudioMedia, preference: tuple[str, ...], ptime_ms: int = 20) -> Negotiated:
    """Choose our codec from the offer by our preference order; raise NoCommonCodec (488) if none fits."""
    offered: dict[str, int] = {}
    dtmf_pt = None
    for pt in offer.payload_types:
        enc = offer.encoding(pt)
        if enc is None:
            continue
        name, rate = enc
        if name == "TELEPHONE-EVENT" and rate == 8000 and dtmf_pt is None:
            dtmf_pt = pt
        elif name in CODEC_PAYLOAD and rate == 8000:
            offered.setdefault(name, pt)
    for name in preference:
        if name in offered:
            return Negotiated(
                codec=name,
                payload_type=offered[name],
                clock_rate_hz=8000,
                dtmf_payload_type=dtmf_pt,
                remote_host=offer.host,
                remote_port=offer.port,
                direction=REVERSE_DIRECTION[offer.direction] if offer.host != "0.0.0.0" else "inactive",
                ptime_ms=offer.ptime_ms or ptime_ms,
                remote_rtcp=_remote_rtcp(offer),
            )
    names = tuple(e[0] for pt in offer.payload_types if (e := offer.encoding(pt)) is not None)
    raise NoCommonCodec(names)


def _remote_rtcp(media: AudioMedia) -> tuple[str, int] | None:
    """Where the far end's a=rtcp says its RTCP goes; None for the default, or when the address would be
    the old-style hold 0.0.0.0 (the leg then keeps its previous addresses)."""
    if media.rtcp_port is None:
        return None
    host = media.rtcp_host or media.host
    return None if host == "0.0.0.0" else (host, media.rtcp_port)


def negotiate_answer(answer: AudioMedia, offered: tuple[str, ...], ptime_ms: int = 20) -> Negotiated:
    """The answer to our offer of `offered` codecs: the answerer's choice is its first codec we offered
    (with its telephone-event payload type). Raises SdpError(488) when it chose none of ours."""
    chosen = tuple(
        enc[0]
        for pt in answer.payload_types
        if (enc := answer.encoding(pt)) is not None and enc[0] in offered and enc[1] == 8000
    )
    if not chosen:
        names = tuple(e[0] for pt in answer.payload_types if (e := answer.encoding(pt)) is not None)
        raise SdpError(488, f"answer chose no codec we offered (answered: {', '.join(names) or 'none'})")
    return negotiate(answer, chosen[:1], ptime_ms)


def renegotiate(current: Negotiated, offer: AudioMedia) -> Negotiated:
    """A re-INVITE (hold/unhold, new address): the leg's codec is fixed, so it must be offered (else 488)."""
    return negotiate(offer, (current.codec,), current.ptime_ms)


def build_answer(neg: Negotiated, host: str, port: int, session_id: int, version: int) -> str:
    """Our SDP answer for the negotiated leg."""
    pts = [neg.payload_type]
    maps = [f"a=rtpmap:{neg.payload_type} {neg.codec}/{neg.clock_rate_hz}"]
    if neg.dtmf_payload_type is not None:
        pts.append(neg.dtmf_payload_type)
        maps += [
            f"a=rtpmap:{neg.dtmf_payload_type} telephone-event/8000",
            f"a=fmtp:{neg.dtmf_payload_type} 0-15",
        ]
    return _sdp(host, port, session_id, version, pts, maps, neg.direction, neg.ptime_ms)


def build_offer(
    preference: tuple[str, ...], host: str, port: int, session_id: int, version: int, ptime_ms: int = 20
) -> str:
    """Our SDP offer (outbound calls, late-offer INVITEs): every codec we accept, in our preference order,
    plus telephone-event; `negotiate_answer` reads the codec the answer chose."""
    pts = [CODEC_PAYLOAD[name] for name in preference] + [DEFAULT_DTMF_PT]
    maps = [f"a=rtpmap:{CODEC_PAYLOAD[name]} {name}/8000" for name in preference]
    maps += [f"a=rtpmap:{DEFAULT_DTMF_PT} telephone-event/8000", f"a=fmtp:{DEFAULT_DTMF_PT} 0-15"]
    return _sdp(host, port, session_id, version, pts, maps, "sendrecv", ptime_ms)


def _sdp(
    host: str,
    port: int,
    session_id: int,
    version: int,
    pts: list[int],
    maps: list[str],
    direction: str,
    ptime: int,
) -> str:
    lines = [
        "v=0",
        f"o=trunkline {session_id} {version} IN IP4 {host}",
        "s=trunkline",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in pts)}",
        *maps,
        f"a=ptime:{ptime}",
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"
