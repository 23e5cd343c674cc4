"""A small, tolerant SIP message reader (RFC 3261 §7, §20, §25) for validating datagrams before sippy.

It frames a datagram into start line, unfolded header fields and body without ever raising on framing;
the grammar helpers (`parse_via`, `parse_name_addr`, `parse_sip_uri`, ...) raise `SipSyntaxError` with a
static `problem` string. Text is decoded as latin-1 so every byte survives a round trip.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

COMPACT_NAMES = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
    "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via", "o": "event", "r": "refer-to",
    "b": "referred-by", "x": "session-expires", "u": "allow-events", "a": "accept-contact",
    "j": "reject-contact", "d": "request-disposition", "y": "identity", "n": "identity-info",
}  # fmt: skip
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LINE_END = re.compile(r"\r?\n")
_BLANK_LINE = re.compile(r"\r?\n\r?\n")
_WS = " \t"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_ABS_URI_REST = re.compile(r"(?:[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]]|%[0-9A-Fa-f]{2})+")
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAMCHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HNV = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.?"
)
_IPV4ISH = re.compile(r"[0-9.]+")
_GEN_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_SPECIAL = {",": re.compile(r'["<>,]'), ";": re.compile(r'["<>;]')}
_VERSION = re.compile(r"SIP/[0-9]{1,3}\.[0-9]{1,3}", re.IGNORECASE)


class SipSyntaxError(ValueError):
    """Some part of a SIP message breaks the RFC 3261 grammar; `problem` is a static description."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field value as received: `name` is lower-case with compact forms expanded."""

    name: str
    raw_name: str
    value: str


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A framed datagram: start line, unfolded headers, the octets after the blank line."""

    start_line: str
    headers: tuple[HeaderField, ...]
    body: bytes
    malformed_lines: int
    has_blank_line: bool

    def values(self, name: str) -> list[str]:
        return [h.value for h in self.headers if h.name == name]

    def first(self, name: str) -> str | None:
        for h in self.headers:
            if h.name == name:
                return h.value
        return None

    def count(self, name: str) -> int:
        return sum(1 for h in self.headers if h.name == name)


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm: `SIP/2.0/UDP host:port;params`."""

    protocol: str
    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k.lower() == name), None)

    def has_param(self, name: str) -> bool:
        return any(k.lower() == name for k, _ in self.params)

    def render(self, params: tuple[tuple[str, str | None], ...] | None = None) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{render_params(params or self.params)}"


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, the URI, header parameters."""

    display: str | None
    uri: str
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k.lower() == name), None)

    def render(self) -> str:
        display = "" if self.display is None else self.display + " "
        return f"{display}<{self.uri}>{render_params(self.params)}"


@dataclass(frozen=True, slots=True)
class SipUri:
    """The parts of a sip:/sips: URI that matter to us (RFC 3261 §19.1)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]
    headers: tuple[tuple[str, str], ...]


def render_params(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def frame(data: bytes) -> RawMessage:
    """Split a datagram into start line, unfolded headers and body; never raises."""
    text = data.decode("latin-1")
    start = len(text) - len(text.lstrip("\r\n"))
    blank = _BLANK_LINE.search(text, start)
    head_end, body_start = (blank.start(), blank.end()) if blank else (len(text), len(text))
    lines = _LINE_END.split(text[start:head_end])
    while len(lines) > 1 and not lines[-1]:  # a datagram may end after the last header's CRLF
        lines.pop()
    start_line, malformed = lines[0], 0
    folded: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # RFC 3261 §7.3.1 line folding: the CRLF and indent mean one space
            if folded:
                folded[-1].append(line.strip(_WS))
            else:
                malformed += 1
            continue
        folded.append([line])
    headers = []
    for pieces in folded:
        line = " ".join([pieces[0].rstrip(_WS), *pieces[1:]]) if len(pieces) > 1 else pieces[0]
        name, sep, value = line.partition(":")
        name = name.rstrip(_WS)
        if not sep or not is_token(name):
            malformed += 1
            continue
        lname = name.lower()
        headers.append(HeaderField(COMPACT_NAMES.get(lname, lname), name, value.strip(_WS)))
    return RawMessage(start_line, tuple(headers), data[body_start:], malformed, blank is not None)


def parse_request_line(line: str) -> tuple[str, str, str]:
    """(method, request-uri, version) from a request line; tolerates runs of SP and trailing SP."""
    parts = [p for p in line.strip(" ").split(" ") if p]
    if len(parts) != 3 or _VERSION.fullmatch(parts[2]) is None:
        raise SipSyntaxError("malformed Request-Line")
    return parts[0], parts[1], parts[2].upper()


def looks_like_request_line(line: str) -> bool:
    """A start line that ends in a SIP version: worth answering even if the middle is malformed."""
    parts = line.strip(" ").split(" ")
    return len(parts) >= 3 and _VERSION.fullmatch(parts[-1]) is not None and is_token(parts[0])


def split_unquoted(value: str, sep: str) -> list[str]:
    """Split on `sep` (`,` or `;`) outside quoted strings and <...>; raises on an unterminated quote."""
    if '"' not in value and "<" not in value:
        return value.split(sep)
    out, start, pos, angle = [], 0, 0, False
    special = _SPECIAL[sep]
    while (match := special.search(value, pos)) is not None:
        ch, index = match.group(), match.start()
        pos = index + 1
        if ch == '"' and not angle:
            pos = quoted_end(value, index)
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            out.append(value[start:index])
            start = pos
    out.append(value[start:])
    return out


def quoted_end(text: str, start: int) -> int:
    """Index just past the quoted-string opening at `start` (RFC 3261 §25.1 quoted-pair rules)."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] in "\r\n":
                raise SipSyntaxError("bad escape in quoted string")
            i += 2
            continue
        if ch == '"':
            return i + 1
        if ch in "\r\n" or (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f":
            raise SipSyntaxError("control character in quoted string")
        i += 1
    raise SipSyntaxError("unterminated quoted string")


def parse_params(text: str, *, allow_empty_value: bool = False) -> tuple[tuple[str, str | None], ...]:
    """`;name[=value]...` (generic-param, SWS allowed around `;` and `=`) into (name, value) pairs."""
    text = text.strip(_WS)
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipSyntaxError("junk before parameters")
    out: list[tuple[str, str | None]] = []
    for part in split_unquoted(text[1:], ";"):
        name, eq, value = part.partition("=")
        name, value = name.strip(_WS), value.strip(_WS)
        if not is_token(name):
            raise SipSyntaxError("malformed parameter")
        if not eq:
            out.append((name, None))
            continue
        if value.startswith('"'):
            if quoted_end(value, 0) != len(value):
                raise SipSyntaxError("junk after quoted parameter value")
        elif not (_GEN_VALUE.fullmatch(value) or (allow_empty_value and not value)):
            raise SipSyntaxError("malformed parameter value")
        out.append((name, value))
    return tuple(out)


def check_host(host: str) -> None:
    """hostname / IPv4address / IPv6reference (RFC 3261 §25.1, IPv6 per RFC 5954)."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipSyntaxError("malformed IPv6 reference")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipSyntaxError("invalid IPv6 address") from None
        if "%" in host:
            raise SipSyntaxError("invalid IPv6 address")
        return
    if _IPV4ISH.fullmatch(host) and host.count(".") == 3:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise SipSyntaxError("invalid IPv4 address") from None
        return
    if len(host) > 255 or _HOSTNAME.fullmatch(host) is None:
        raise SipSyntaxError("invalid host")


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host[:port]` (COLON may carry SWS in Via) into a checked host and port."""
    text = text.strip(_WS)
    if text.startswith("["):
        close = text.find("]")
        host, rest = (text[: close + 1], text[close + 1 :]) if close > 0 else (text, "")
    else:
        host, _, port_text = text.partition(":")
        rest = ":" + port_text if _ else ""
    host = host.strip(_WS)
    check_host(host)
    rest = rest.strip(_WS)
    if not rest:
        return host, None
    port_text = rest[1:].strip(_WS) if rest.startswith(":") else "x"
    if not (port_text.isdigit() and port_text.isascii() and len(port_text) <= 5 and int(port_text) <= 65535):
        raise SipSyntaxError("invalid port")
    return host, int(port_text)


def uri_scheme(uri: str) -> str:
    """The lower-cased scheme of an absoluteURI; raises if `uri` is not one."""
    scheme, colon, rest = uri.partition(":")
    if not colon or _SCHEME.fullmatch(scheme) is None or _ABS_URI_REST.fullmatch(rest) is None:
        raise SipSyntaxError("malformed URI")
    return scheme.lower()


def parse_sip_uri(uri: str) -> SipUri:
    """A sip:/sips: URI (RFC 3261 §19.1.1) with its user, host, port, parameters and headers."""
    scheme = uri_scheme(uri)
    if scheme not in ("sip", "sips"):
        raise SipSyntaxError("not a SIP URI")
    rest = uri.partition(":")[2]
    if rest.count("@") > 1:
        raise SipSyntaxError("unescaped @ in SIP URI")
    userinfo, at, hostpart = rest.rpartition("@")
    user = None
    if at:
        user, _, password = userinfo.partition(":")
        if _USER.fullmatch(user) is None or _PASSWORD.fullmatch(password) is None:
            raise SipSyntaxError("malformed userinfo")
    hostpart, _, header_text = hostpart.partition("?")
    hostport, *param_parts = hostpart.split(";")
    host, port = split_hostport(hostport)
    if any(c in _WS for c in hostport):
        raise SipSyntaxError("whitespace in URI")
    params = tuple(_uri_param(p) for p in param_parts)
    headers = tuple(_uri_header(h) for h in header_text.split("&")) if _ else ()
    return SipUri(scheme, user, host, port, params, headers)


def _uri_param(part: str) -> tuple[str, str | None]:
    name, eq, value = part.partition("=")
    if _PARAMCHARS.fullmatch(name) is None or (eq and _PARAMCHARS.fullmatch(value) is None):
        raise SipSyntaxError("malformed URI parameter")
    if name.lower() == "ttl" and not (value.isdigit() and len(value) <= 3):
        raise SipSyntaxError("malformed ttl parameter")
    return name, value if eq else None


def _uri_header(part: str) -> tuple[str, str]:
    name, eq, value = part.partition("=")
    if not eq or not name or _HNV.fullmatch(name) is None or _HNV.fullmatch(value) is None:
        raise SipSyntaxError("malformed URI header")
    return name, value


def parse_via(value: str) -> Via:
    """One via-parm with LWS tolerated where RFC 3261 allows it (around `/`, `:`, `;`, `=`)."""
    parts = split_unquoted(value, ";")
    head = parts[0].strip(_WS)
    proto = [p.strip(_WS) for p in head.split("/", 2)]
    if len(proto) != 3:
        raise SipSyntaxError("malformed Via sent-protocol")
    name, version = proto[0], proto[1]
    transport, _, sent_by = proto[2].partition(" ")
    if not sent_by and "\t" in transport:
        transport, _, sent_by = transport.partition("\t")
    if not (is_token(name) and is_token(version) and is_token(transport)) or not sent_by.strip(_WS):
        raise SipSyntaxError("malformed Via sent-protocol")
    host, port = split_hostport(sent_by)
    params = parse_params(";" + ";".join(parts[1:])) if len(parts) > 1 else ()
    return Via(f"{name}/{version}", transport, host, port, params)


def parse_name_addr(value: str) -> NameAddr:
    """name-addr or addr-spec plus header parameters (RFC 3261 §20.10, §20.20, §20.39)."""
    text = value.strip(_WS)
    display: str | None = None
    if text.startswith('"'):
        end = quoted_end(text, 0)
        display, text = text[:end], text[end:].lstrip(_WS)
        if not text.startswith("<"):
            raise SipSyntaxError("display name without <URI>")
    elif "<" in text:
        lead, _, rest = text.partition("<")
        words = lead.split()
        if not all(is_token(w) for w in words):
            raise SipSyntaxError("unquoted display name is not a token list")
        display, text = (" ".join(words) or None), "<" + rest
    if text.startswith("<"):
        uri, close, rest = text[1:].partition(">")
        if not close:
            raise SipSyntaxError("unterminated <URI>")
    else:
        uri, _, params = text.partition(";")
        uri, rest = uri.rstrip(_WS), ";" + params if _ else ""
        if "?" in uri or "," in uri:
            raise SipSyntaxError("URI with ? or , needs <>")
    if not uri or any(c in uri for c in ' \t<>"'):
        raise SipSyntaxError("malformed URI in address")
    uri_scheme(uri)
    return NameAddr(display, uri, parse_params(rest))


def parse_cseq(value: str) -> tuple[int, str]:
    """`1*DIGIT LWS Method`; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    parts = value.split()
    if len(parts) != 2 or not (parts[0].isdigit() and parts[0].isascii()) or not is_token(parts[1]):
        raise SipSyntaxError("malformed CSeq")
    if len(parts[0]) > 12 or int(parts[0]) >= 2**31:
        raise SipSyntaxError("CSeq number out of range")
    return int(parts[0]), parts[1]


def parse_uint(value: str, limit: int, what: str) -> int:
    """A non-negative decimal no larger than `limit`."""
    if not (value.isdigit() and value.isascii()) or len(value) > 12 or int(value) > limit:
        raise SipSyntaxError(f"malformed {what}")
    return int(value)
