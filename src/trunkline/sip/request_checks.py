"""Request checks that decide 420, 406, 415 and body-related 400s for the pre-validator (RFC 3261 §8.2.2-3).

Each check raises `Reject(status, problem, extra_headers)`; `problem` is always a static string.
"""

from __future__ import annotations

import re

from trunkline.sip.message import RawMessage, SipSyntaxError, is_token, split_unquoted
from trunkline.sip.sanitise import CANONICAL_NAMES, render_content_type

ACCEPT_SDP = (("Accept", "application/sdp"),)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_PART_SPLIT = re.compile(rb"\r?\n\r?\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MULTIPART = ("multipart/mixed", "multipart/alternative", "multipart/related")


class Reject(Exception):
    """The request gets a stateless error response."""

    def __init__(self, status: int, problem: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.extra = extra


def header_label(name: str) -> str:
    return CANONICAL_NAMES.get(name, name.title())


def check_require(msg: RawMessage, supported: frozenset[str]) -> None:
    """420 Bad Extension listing every option tag in Require we do not support (§8.2.2.3)."""
    unsupported = []
    for value in msg.values("require"):
        for tag in (t.strip(" \t") for t in value.split(",")):
            if not tag:
                continue
            if not is_token(tag):
                raise Reject(400, "malformed Require")
            if tag.lower() not in supported and tag not in unsupported:
                unsupported.append(tag)
    if unsupported:
        raise Reject(420, "unsupported extension", (("Unsupported", ", ".join(unsupported)),))


def check_accept(msg: RawMessage) -> None:
    """406 when an INVITE's Accept rules out application/sdp, which our answer must carry (§8.2.3)."""
    values = msg.values("accept")
    if not values:
        return
    try:
        entries = [e for v in values for e in split_unquoted(v, ",") if e.strip(" \t")]
    except SipSyntaxError:
        raise Reject(400, "malformed Accept") from None
    for entry in entries:
        mtype, *params = (p.strip(" \t") for p in entry.split(";"))
        kind, slash, sub = (x.strip(" \t").lower() for x in mtype.partition("/"))
        if not slash or not kind or not sub:
            raise Reject(400, "malformed Accept")
        q = next((p.partition("=")[2].strip(" \t") for p in params if p.lower().startswith("q")), "1")
        if _QVALUE.fullmatch(q) is None:
            raise Reject(400, "malformed Accept")
        if kind in ("application", "*") and sub in ("sdp", "*") and float(q) > 0:
            return
    raise Reject(406, "application/sdp not acceptable")


def check_body(msg: RawMessage, method: str, body: bytes) -> tuple[bytes, str | None]:
    """(body, Content-Type) to hand on: an INVITE's offer reduced to its SDP, checked to be text."""
    declared = msg.first("content-type")
    content_type = None
    if declared is not None:
        try:
            content_type = render_content_type(declared)
        except SipSyntaxError:
            raise Reject(400, "malformed Content-Type") from None
    if not body:
        return b"", None if content_type is None else content_type[0]
    if content_type is None:
        raise Reject(400, "body without Content-Type")
    if method != "INVITE":
        return body, content_type[0]
    encodings = [e.strip(" \t").lower() for v in msg.values("content-encoding") for e in v.split(",")]
    if any(e not in ("", "identity") for e in encodings):
        raise Reject(415, "unsupported Content-Encoding", (*ACCEPT_SDP, ("Accept-Encoding", "identity")))
    _, mtype, params = content_type
    if mtype == "application/sdp":
        sdp = body
    elif mtype in _MULTIPART:
        sdp = _sdp_part(body, params)
    else:
        raise Reject(415, "INVITE body is not SDP", ACCEPT_SDP)
    _check_text(sdp)
    return sdp, "application/sdp"


def _sdp_part(body: bytes, params: dict[str, str]) -> bytes:
    """The application/sdp part of a multipart body (RFC 2046 §5.1.1); 415 if there is none."""
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise Reject(400, "multipart body without boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        split = _PART_SPLIT.search(chunk)
        if split is None:
            continue
        for line in re.split(rb"\r?\n", chunk[: split.start()]):
            name, _, value = line.partition(b":")
            is_type = name.strip().lower() in (b"content-type", b"c")
            if is_type and value.split(b";")[0].strip().lower() == b"application/sdp":
                content = chunk[split.end() :]
                return content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
    raise Reject(415, "multipart body has no SDP part", ACCEPT_SDP)


def _check_text(sdp: bytes) -> None:
    """SDP semantics are the SDP module's business; here it only has to be UTF-8 text."""
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject(400, "SDP is not UTF-8 text") from None
    if _CONTROL.search(text):
        raise Reject(400, "control character in SDP")
