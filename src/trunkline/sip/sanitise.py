"""Rewrite a validated SIP message into the one canonical form sippy's parser accepts without raising.

sippy splits header lines with `str.splitlines()`, splits Via on every comma, guesses name-addr commas by
counting `<`, `>` and `"`, cannot read addr-specs without `<>` unless they start with `sip:`, loses a quoted
display name that ends in an escaped backslash, and compares Content-Length with the *decoded* body's
length. Each rendering below removes one of those traps; optional headers it cannot render safely are
left out (the caller keeps the original in `RawMessage`).
"""

from __future__ import annotations

from collections.abc import Callable

from trunkline.sip.message import (
    NameAddr,
    SipSyntaxError,
    is_token,
    parse_name_addr,
    parse_sip_uri,
    parse_uint,
    parse_via,
    quoted_end,
    split_unquoted,
    uri_scheme,
)

# Header names as sippy (and peers) expect to see them.
CANONICAL_NAMES = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq", "contact": "Contact",
    "max-forwards": "Max-Forwards", "content-type": "Content-Type", "content-length": "Content-Length",
    "route": "Route", "record-route": "Record-Route", "expires": "Expires", "refer-to": "Refer-To",
    "referred-by": "Referred-By", "www-authenticate": "WWW-Authenticate", "rack": "RAck", "rseq": "RSeq",
    "p-asserted-identity": "P-Asserted-Identity", "cisco-guid": "Cisco-GUID", "h323-conf-id": "h323-conf-id",
    "cc-diversion": "CC-Diversion", "mime-version": "MIME-Version",
}  # fmt: skip
# Characters `str.splitlines()` treats as line breaks; inside a header they would split it for sippy.
LINE_BREAKERS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # and "\n", which frame() already split on
_BREAKER_TABLE = {ord(c): " " for c in LINE_BREAKERS}
# Headers sippy parses as addresses but that a UAS can live without: dropped when not renderable.
OPTIONAL_ADDRESS = frozenset({"p-asserted-identity", "diversion", "cc-diversion", "also", "path"})
CORE_ADDRESS = frozenset({"from", "to", "contact", "route", "record-route", "refer-to", "referred-by"})
MULTI_ADDRESS = frozenset({"contact", "route", "record-route", "path", "diversion", "p-asserted-identity"})


class Unrenderable(ValueError):
    """An optional header sippy would choke on; it is left out of the canonical message."""


def header_name(name: str, raw_name: str) -> str:
    if name in CANONICAL_NAMES:
        return CANONICAL_NAMES[name]
    return name.title() if raw_name.lower() != name else raw_name


def sippy_csv_split(body: str) -> bool:
    """True when sippy's SipAddressHF comma heuristic would split `body` into several values."""
    onum = cnum = qnum = 0
    for ch in body:
        if ch == ",":
            if (onum == cnum == qnum == 0) or (onum > 0 and onum == cnum and qnum % 2 == 0):
                return True
        elif ch == "<":
            onum += 1
        elif ch == ">":
            cnum += 1
        elif ch == '"':
            qnum += 1
    return False


def sippy_display(display: str) -> str:
    """A display name sippy's quote finder reads back intact (it ignores a `"` after a backslash)."""
    if display.startswith('"') and display.endswith('\\"'):
        return display[:-1] + ' "'
    return display


def render_address(value: str, schemes: frozenset[str], *, need_brackets: bool = False) -> str:
    """One name-addr / addr-spec rendered as `display <uri>;params`; raises SipSyntaxError."""
    if need_brackets and not value.strip().startswith(("<", '"')) and "<" not in value:
        raise SipSyntaxError("Route needs <URI>")
    addr = parse_name_addr(value)
    scheme = uri_scheme(addr.uri)
    if scheme not in schemes:
        raise SipSyntaxError(f"unsupported URI scheme {scheme!r} in address")
    if scheme in ("sip", "sips"):
        parse_sip_uri(addr.uri)
    display = None if addr.display is None else sippy_display(addr.display)
    text = NameAddr(display, addr.uri, addr.params).render()
    if sippy_csv_split(text):
        raise SipSyntaxError("comma in address that sippy would split")
    return text


def address_values(name: str, value: str, schemes: frozenset[str]) -> list[str]:
    """The rendered values of one address header line (several for list-valued headers)."""
    parts = split_unquoted(value, ",") if name in MULTI_ADDRESS else [value]
    brackets = name in ("route", "record-route", "path")
    return [render_address(p, schemes, need_brackets=brackets) for p in parts]


def render_vias(values: list[str], force_rport: bool, request: bool = True) -> list[str]:
    """Each via-parm on its own line; a request's top one loses `received` (sippy sets it from the source,
    so a forged one cannot redirect our answer) and gets a bare `rport` when asked."""
    out = []
    for index, value in enumerate(values):
        via = parse_via(value)
        params = via.params
        if index == 0 and request:
            params = tuple((k, v) for k, v in params if k.lower() not in ("received", "rport"))
            if force_rport or via.has_param("rport"):
                params += (("rport", None),)
        text = via.render(params)
        if "," in text:
            raise SipSyntaxError("comma inside a Via value")
        out.append(text)
    return out


def render_content_type(value: str) -> tuple[str, str, dict[str, str]]:
    """(rendered, lower-case type/subtype, params) of a media-type; every parameter needs a value."""
    parts = split_unquoted(value, ";")
    mtype, slash, subtype = parts[0].partition("/")
    mtype, subtype = mtype.strip(" \t"), subtype.strip(" \t")
    if not slash or not is_token(mtype) or not is_token(subtype):
        raise SipSyntaxError("malformed Content-Type")
    params: dict[str, str] = {}
    rendered = [f"{mtype}/{subtype}"]
    for part in parts[1:]:
        pname, eq, pvalue = (x.strip(" \t") for x in part.partition("="))
        if not eq or not is_token(pname) or not pvalue:
            raise SipSyntaxError("malformed Content-Type parameter")
        params[pname.lower()] = pvalue
        rendered.append(f"{pname}={pvalue}")
    return ";".join(rendered), f"{mtype}/{subtype}".lower(), params


def _digits(value: str) -> str:
    return str(parse_uint(value.strip(), 2**32 - 1, "numeric header"))


def _authorization(value: str) -> str:
    # sippy: body.split(' ', 1)[1].split(','), each piece .strip(', ').split('=', 1) must give two parts.
    scheme, sp, rest = value.partition(" ")
    if not sp or not is_token(scheme) or not all("=" in p.strip(", ") for p in rest.split(",")):
        raise Unrenderable("authorization")
    return value


def _reason(value: str) -> str:
    protocol, semi, params = value.partition(";")
    names = []
    for part in split_unquoted(params, ";"):
        pname, eq, pvalue = (x.strip(" \t") for x in part.partition("="))
        if pname not in ("cause", "text") or not eq:
            raise Unrenderable("reason")
        if pname == "cause" and not (pvalue.isdigit() and pvalue.isascii()):
            raise Unrenderable("reason")
        names.append(pname)
    if not semi or not is_token(protocol.strip()) or "cause" not in names:
        raise Unrenderable("reason")
    return value


def _warning(value: str) -> str:
    parts = value.split(None, 2)
    if len(parts) != 3 or not (parts[0].isdigit() and parts[0].isascii()):
        raise Unrenderable("warning")
    return value


def _guid(value: str) -> str:
    parts = value.split("-", 3)
    if len(parts) != 4 or not all(p.strip().isdigit() and p.strip().isascii() for p in parts):
        raise Unrenderable("guid")
    return value


def _rack(value: str) -> str:
    parts = value.split(None, 2)
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts[:2]):
        raise Unrenderable("rack")
    return value


def challenge(value: str) -> str:
    """A 401/407 challenge re-rendered as `Scheme name="v",name=v`: the only shape sippy splits correctly
    (it cuts on every `"`, so a quoted value may not contain one, escaped or not)."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    if not is_token(scheme) or not rest.strip(" \t"):
        raise Unrenderable("challenge")
    params = []
    for part in split_unquoted(rest, ","):
        name, eq, val = (x.strip(" \t") for x in part.partition("="))
        if not eq or not is_token(name):
            raise Unrenderable("challenge")
        if val.startswith('"'):
            if quoted_end(val, 0) != len(val) or '"' in val[1:-1]:
                raise Unrenderable("challenge")
        elif not val or any(c.isspace() or ord(c) < 0x20 or c in '",' for c in val):
            raise Unrenderable("challenge")
        params.append(f"{name}={val}")
    return f"{scheme} {','.join(params)}"


def _never(value: str) -> str:
    raise Unrenderable("challenge in a request")


# Optional headers sippy parses with something stricter than "keep the string".
OPTIONAL_RENDERERS: dict[str, Callable[[str], str]] = {
    "authorization": _authorization, "proxy-authorization": _authorization, "reason": _reason,
    "warning": _warning, "cisco-guid": _guid, "h323-conf-id": _guid, "rack": _rack, "rseq": _digits,
    "www-authenticate": _never, "proxy-authenticate": _never,
}  # fmt: skip
NUMERIC = frozenset({"max-forwards", "expires"})


def strip_breakers(text: str) -> str:
    """Replace every character sippy's `splitlines()` would break a header line on with a space."""
    return text.translate(_BREAKER_TABLE)
