"""Stateless SIP responses (RFC 3261 §8.2.6) and where they may go (§18.2.2, RFC 3581).

The pre-validator answers bad requests itself with these; the destination is always checked: nothing is
ever sent to a broadcast, multicast, unspecified or reserved address, or to port 0.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from trunkline.sip.message import RawMessage, SipSyntaxError, Via, parse_name_addr, parse_via, split_unquoted

REASONS = {
    400: "Bad Request", 405: "Method Not Allowed", 406: "Not Acceptable", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 501: "Not Implemented", 505: "Version Not Supported",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing; `reason` is a static counter key."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `response_bytes` to `destination` (None only when no source was given and Via names a host)."""

    status: int
    reason: str
    extra_headers: tuple[tuple[str, str], ...]
    response_bytes: bytes
    destination: tuple[str, int] | None
    problem: str


def is_safe_destination(address: tuple[str, int]) -> bool:
    """A unicast IP literal and a real port: never broadcast, multicast, unspecified or reserved."""
    host, port = address
    try:
        ip: Any = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bad = ip.is_multicast or ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved)
    return not bad and 0 < port <= 65535


def response_destination(
    top: Via | None, source: tuple[str, int] | None, force_rport: bool
) -> tuple[str, int] | None:
    """Where a response goes (RFC 3261 §18.2.2 with RFC 3581 rport, or always the source if forced)."""
    if source is not None:
        if top is None or force_rport or top.has_param("rport"):
            return source
        return (source[0], top.port or 5060)
    if top is None:
        return None
    host = (top.param("received") or top.host).strip("[]")
    rport = top.param("rport")
    port = int(rport) if rport and rport.isdigit() and len(rport) <= 5 else (top.port or 5060)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, port)


def build_reply(
    msg: RawMessage,
    status: int,
    problem: str,
    extra: tuple[tuple[str, str], ...],
    source: tuple[str, int] | None,
    force_rport: bool = True,
    server: str | None = None,
) -> Reply | Drop:
    """A stateless response copying Via, From, To (+ a To tag), Call-ID and CSeq (RFC 3261 §8.2.6)."""
    vias = msg.values("via")
    try:
        top: Via | None = parse_via(split_unquoted(vias[0], ",")[0])
    except SipSyntaxError:
        top = None
    destination = response_destination(top, source, force_rport)
    if destination is not None and not is_safe_destination(destination):
        return Drop("unsafe_destination")
    reason = REASONS[status] + (f" ({problem})" if status == 400 else "")
    lines = [f"SIP/2.0 {status} {reason}"]
    lines.extend(f"Via: {v}" for v in _response_vias(vias, top, source))
    for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        value = msg.first(name)
        if value is not None:
            lines.append(f"{label}: {_with_to_tag(msg, value) if name == 'to' else value}")
    lines.extend(f"{k}: {v}" for k, v in extra)
    if server:
        lines.append(f"Server: {server}")
    lines.append("Content-Length: 0")
    text = "\r\n".join(line.replace("\r", " ").replace("\n", " ") for line in lines) + "\r\n\r\n"
    return Reply(status, reason, extra, text.encode("latin-1", "replace"), destination, problem)


def _response_vias(vias: list[str], top: Via | None, source: tuple[str, int] | None) -> list[str]:
    """The request's Via lines, the top one with `received`/`rport` filled in (RFC 3261 §18.2.1, RFC 3581)."""
    if top is None or source is None:
        return vias
    params = tuple((k, v) for k, v in top.params if k.lower() not in ("received", "rport"))
    if top.host.strip("[]") != source[0]:
        params += (("received", source[0]),)
    if top.has_param("rport"):
        params += (("rport", str(source[1])),)
    rest = split_unquoted(vias[0], ",")[1:]
    return [",".join([top.render(params), *rest]), *vias[1:]]


def _with_to_tag(msg: RawMessage, to_value: str) -> str:
    """The To value with a tag added if it has none; the tag is derived from the request, so stable."""
    try:
        if parse_name_addr(to_value).param("tag"):
            return to_value
    except SipSyntaxError:
        return to_value
    key = "|".join(msg.first(n) or "" for n in ("call-id", "from", "cseq", "via"))
    return f"{to_value};tag={hashlib.sha256(key.encode('latin-1')).hexdigest()[:16]}"
