"""Stateless pre-validation of every SIP datagram before sippy sees it (RFC 3261 §8.2, §18; RFC 4475, 5118).

`precheck(datagram, source)` is pure and never raises. It returns one of:
- `Pass`: hand `data` to sippy. `data` is a canonical rewrite of the message that sippy's parser reads
  without raising (unfolded, one value per line, octets past Content-Length cut, our `rport` on the top
  Via so replies are symmetric); `message` is the message as received.
- `Drop`: say nothing (responses we cannot use, keepalives, garbage, no usable Via, bad ACKs).
- `Reply`: a complete stateless response (RFC 3261 §8.2.6) and the address to send it to, never a
  broadcast, multicast or unspecified one.
What needs dialog state (481, OPTIONS 200, SDP negotiation) is left to the stack: those messages pass.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trunkline.sip.message import (
    RawMessage,
    SipSyntaxError,
    frame,
    looks_like_request_line,
    parse_cseq,
    parse_name_addr,
    parse_request_line,
    parse_sip_uri,
    parse_uint,
    split_unquoted,
    uri_scheme,
)
from trunkline.sip.request_checks import Reject, check_accept, check_body, check_require, header_label
from trunkline.sip.sanitise import (
    CORE_ADDRESS,
    NUMERIC,
    OPTIONAL_ADDRESS,
    OPTIONAL_RENDERERS,
    Unrenderable,
    address_values,
    challenge,
    header_name,
    render_content_type,
    render_vias,
    strip_breakers,
)
from trunkline.sip.stateless import Drop, Reply, build_reply, is_safe_destination

# Every method RFC 3261 and its common extensions define: one of these we do not serve gets 405, else 501.
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH"}
    | {"INFO", "REFER", "MESSAGE", "UPDATE"}
)
SINGLE_VALUED = (
    "from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type", "expires",
    "refer-to", "referred-by", "replaces", "rack", "rseq", "mime-version", "session-expires", "event",
)  # fmt: skip
MANDATORY = ("from", "to", "call-id", "cseq", "max-forwards")
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "INFO", "REFER", "NOTIFY", "OPTIONS")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")


@dataclass(frozen=True, slots=True)
class ValidatorConfig:
    """What we serve; `address_schemes` may hold "tel" only if sippy's SipConf.autoconvert_tel_url is on."""

    allowed_methods: tuple[str, ...] = ALLOW
    supported_extensions: frozenset[str] = frozenset()
    request_uri_schemes: frozenset[str] = frozenset({"sip", "sips"})
    address_schemes: frozenset[str] = frozenset({"sip", "sips"})
    force_rport: bool = True
    server: str | None = "Trunkline"
    max_datagram_octets: int = 65535


DEFAULT_CONFIG = ValidatorConfig()


@dataclass(frozen=True, slots=True)
class Pass:
    """Hand `data` to sippy (its Content-Length counts decoded characters, as sippy measures bodies);
    `message` is the datagram as received, e.g. to read the dialled number from `To`."""

    data: bytes
    method: str | None
    status: int | None
    message: RawMessage


Verdict = Pass | Drop | Reply


def precheck(
    datagram: bytes, source: tuple[str, int] | None = None, config: ValidatorConfig = DEFAULT_CONFIG
) -> Verdict:
    """Decide what to do with one datagram received from `source` (ip, port); never raises. Replies go
    to `source` (forced rport) unless `config.force_rport` is off and the top Via asks for none."""
    try:
        return _precheck(datagram, source, config)
    except Exception:  # the contract is "never raise"; the tests assert this path is never taken
        return Drop("internal_error")


def _precheck(datagram: bytes, source: tuple[str, int] | None, config: ValidatorConfig) -> Verdict:
    if source is not None and not is_safe_destination(source):
        return Drop("unsafe_source")
    if len(datagram) > config.max_datagram_octets:
        return Drop("oversize")
    if not datagram.strip(b"\r\n"):
        return Drop("keepalive")
    msg = frame(datagram)
    if msg.start_line.startswith("SIP/"):
        return _check_response(msg, config)
    if not looks_like_request_line(msg.start_line):
        return Drop("garbage")
    if not via_values(msg):
        return Drop("no_via")
    method = msg.start_line.strip(" ").split(" ")[0]
    try:
        data = _check_request(msg, config)
    except Reject as rej:
        if method == "ACK":
            return Drop("bad_ack")
        return build_reply(msg, rej.status, rej.problem, rej.extra, source, config.force_rport, config.server)
    return Pass(data, method, None, msg)


def via_values(msg: RawMessage) -> list[str]:
    """All via-parms in order (comma-separated values split), empty ones left out."""
    out: list[str] = []
    for value in msg.values("via"):
        try:
            parts = split_unquoted(value, ",")
        except SipSyntaxError:
            parts = [value]
        out.extend(p.strip(" \t") for p in parts if p.strip(" \t"))
    return out


def _syntax(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except SipSyntaxError as exc:
        raise Reject(400, exc.problem) from None


def _check_request(msg: RawMessage, config: ValidatorConfig) -> bytes:
    if msg.start_line.strip(" ").split(" ")[-1].upper() != "SIP/2.0":
        raise Reject(505, "unsupported SIP version")
    method, ruri, _ = _syntax(parse_request_line, msg.start_line)
    if msg.malformed_lines:
        raise Reject(400, "malformed header line")
    _check_counts(msg)
    body = _framed_body(msg)
    _check_ruri(ruri, config)
    _, cseq_method = _syntax(parse_cseq, msg.first("cseq"))
    _syntax(parse_uint, (msg.first("max-forwards") or "").strip(), 255, "Max-Forwards")
    from_addr = _syntax(parse_name_addr, msg.first("from"))
    _syntax(parse_name_addr, msg.first("to"))
    if method not in config.allowed_methods:
        allow = (("Allow", ", ".join(config.allowed_methods)),)
        raise Reject(405 if method in KNOWN_METHODS else 501, "method not served", allow)
    if cseq_method != method:
        raise Reject(400, "CSeq method does not match the request")
    if not from_addr.param("tag"):
        raise Reject(400, "missing From tag")
    if method not in ("ACK", "CANCEL"):
        check_require(msg, config.supported_extensions)
    if method == "INVITE":
        check_accept(msg)
        if sum(len(_syntax(split_unquoted, v, ",")) for v in msg.values("contact")) != 1:
            raise Reject(400, "INVITE needs exactly one Contact")
    body, content_type = check_body(msg, method, body)
    return _render(msg, f"{method} {ruri} SIP/2.0", body, content_type, config, request=True)


def _check_counts(msg: RawMessage) -> None:
    counts = Counter(h.name for h in msg.headers)
    for name in MANDATORY:
        if counts[name] == 0:
            raise Reject(400, f"missing {header_label(name)}")
    for name in SINGLE_VALUED:
        if counts[name] > 1:
            raise Reject(400, f"duplicate {header_label(name)}")


def _framed_body(msg: RawMessage) -> bytes:
    """The body as Content-Length frames it (RFC 3261 §18.3: octets past it are discarded over UDP)."""
    declared = msg.first("content-length")
    if declared is None:
        return msg.body
    length = _syntax(parse_uint, declared.strip(), 2**31, "Content-Length")
    if length > len(msg.body):
        raise Reject(400, "Content-Length exceeds the datagram")
    return msg.body[:length]


def _check_ruri(ruri: str, config: ValidatorConfig) -> None:
    scheme = _syntax(uri_scheme, ruri)
    if scheme not in config.request_uri_schemes:
        raise Reject(416, "unsupported Request-URI scheme")
    if scheme in ("sip", "sips") and _syntax(parse_sip_uri, ruri).headers:
        raise Reject(400, "headers in Request-URI")


def _render(
    msg: RawMessage,
    start_line: str,
    body: bytes,
    content_type: str | None,
    config: ValidatorConfig,
    request: bool,
) -> bytes:
    """The canonical message for sippy; raises Reject(400) when a header it needs cannot be rendered."""
    lines = [start_line]
    vias = via_values(msg)
    for header in msg.headers:
        if header.name in ("content-length", "content-type"):
            continue
        if header.name == "via":
            if vias:
                rendered = _syntax(render_vias, vias, config.force_rport and request, request)
                lines.extend(f"Via: {v}" for v in rendered)
                vias = []
            continue
        label = header_name(header.name, header.raw_name)
        lines.extend(f"{label}: {v}" for v in _render_value(header.name, header.value, config, request))
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    try:  # header values hold no "\n" (frame split on it), so it can delimit lines here
        head = "\n".join(lines).encode("latin-1").decode("utf-8")
        body_text = body.decode("utf-8")
    except UnicodeError:
        raise Reject(400, "message is not UTF-8 text") from None
    text_lines = [_trim(line) for line in strip_breakers(head).split("\n")]
    text_lines.append(f"Content-Length: {len(body_text)}")
    return ("\r\n".join(text_lines) + "\r\n\r\n" + body_text).encode("utf-8")


def _trim(line: str) -> str:
    """A header line whose value is trimmed again (blanked line breakers may have left spaces at its ends)."""
    name, sep, value = line.partition(": ")
    return f"{name}{sep}{value.strip(' ')}" if sep else name


def _render_value(name: str, value: str, config: ValidatorConfig, request: bool) -> list[str]:
    try:
        if name in CORE_ADDRESS or name in OPTIONAL_ADDRESS:
            if name == "contact" and value.strip() == "*":
                raise SipSyntaxError("Contact * outside REGISTER")
            return address_values(name, value, config.address_schemes)
        if name == "cseq":
            number, method = parse_cseq(value)
            return [f"{number} {method}"]
        if name in NUMERIC:
            return [str(parse_uint(value.strip(), 2**32 - 1, "number"))]
        if name == "call-id":
            if not value or not all(0x21 <= ord(c) <= 0x7E for c in value):
                raise SipSyntaxError("malformed Call-ID")
            return [value]
        if name.endswith("-authenticate") and not request:
            return [challenge(value)]
        if name in OPTIONAL_RENDERERS:
            return [OPTIONAL_RENDERERS[name](value)]
        return [value]
    except (SipSyntaxError, Unrenderable):
        if name in OPTIONAL_ADDRESS or name in OPTIONAL_RENDERERS:
            return []
        raise Reject(400, f"malformed {header_label(name)}") from None


def _check_response(msg: RawMessage, config: ValidatorConfig) -> Verdict:
    """Responses pass only when sippy can match them to a transaction of ours; anything odd is dropped."""
    match = _STATUS_LINE.fullmatch(msg.start_line)
    if match is None or msg.malformed_lines:
        return Drop("malformed_response")
    if len(via_values(msg)) != 1:  # RFC 3261 §8.1.3.3: a UAC discards responses with several Vias
        return Drop("response_with_several_vias")
    try:
        _check_counts_response(msg)
        body = _framed_body(msg)
        parse_cseq(msg.first("cseq") or "")
        content_type = msg.first("content-type")
        rendered_type = render_content_type(content_type)[0] if content_type is not None else None
        start = f"SIP/2.0 {match.group(1)} {match.group(2) or ''}"
        data = _render(msg, start, body, rendered_type, config, request=False)
    except (Reject, SipSyntaxError):
        return Drop("malformed_response")
    return Pass(data, None, int(match.group(1)), msg)


def _check_counts_response(msg: RawMessage) -> None:
    for name in ("from", "to", "call-id", "cseq"):
        if msg.count(name) != 1:
            raise Reject(400, "bad response headers")
    if msg.count("content-length") > 1:
        raise Reject(400, "duplicate Content-Length")
