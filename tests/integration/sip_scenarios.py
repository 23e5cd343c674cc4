"""SIPp scenario XML for the SIP integration tests, assembled from small message templates.

Each builder returns a whole scenario; `[branch-N]` offsets are computed so ACK/CANCEL reuse the INVITE's
branch. Caller SDP offers PCMU (or what `pts` says) plus telephone-event 101.
"""

from __future__ import annotations

HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
FROM = "From: sipp <sip:+15551234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
TO = "To: <sip:[service]@[remote_ip]:[remote_port]>"


def sdp(pts: str = "0 101", direction: str = "sendrecv", rtpmaps: str = "") -> str:
    maps = (
        rtpmaps
        or "a=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15"
    )
    return (
        "v=0\no=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]\ns=-\n"
        "c=IN IP[media_ip_type] [media_ip]\nt=0 0\n"
        f"m=audio [media_port] RTP/AVP {pts}\n{maps}\na={direction}\n"
    )


def invite(body: str | None, cseq: int = 1, in_dialog: bool = False) -> str:
    ruri = "[next_url]" if in_dialog else "sip:[service]@[remote_ip]:[remote_port]"
    to = TO + ("[peer_tag_param]" if in_dialog else "")
    routes = "[routes]\n" if in_dialog else ""
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        f'  <send retrans="500"><![CDATA[\nINVITE {ruri} SIP/2.0\n'
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"{FROM}\n{to}\nCall-ID: [call_id]\nCSeq: {cseq} INVITE\n{routes}"
        "Contact: <sip:sipp@[local_ip]:[local_port]>\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: [len]\n\n{body or ''}]]></send>\n"
    )


def in_dialog(method: str, cseq: int, extra: str = "", body: str = "") -> str:
    return (
        f'  <send retrans="500"><![CDATA[\n{method} [next_url] SIP/2.0\n'
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"{FROM}\n{TO}[peer_tag_param]\nCall-ID: [call_id]\nCSeq: {cseq} {method}\n[routes]\n"
        f"Contact: <sip:sipp@[local_ip]:[local_port]>\nMax-Forwards: 70\n{extra}"
        f"Content-Length: [len]\n\n{body}]]></send>\n"
    )


def ack_2xx(cseq: int = 1, body: str = "") -> str:
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        "  <send><![CDATA[\nACK [next_url] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"{FROM}\n{TO}[peer_tag_param]\nCall-ID: [call_id]\nCSeq: {cseq} ACK\n[routes]\n"
        "Contact: <sip:sipp@[local_ip]:[local_port]>\nMax-Forwards: 70\n"
        f"{ctype}Content-Length: [len]\n\n{body}]]></send>\n"
    )


def ack_error(offset: int) -> str:
    return (
        "  <send><![CDATA[\nACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-{offset}]\n"
        f"{FROM}\n{TO}[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 1 ACK\n"
        "Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
    )


def cancel(offset: int) -> str:
    return (
        "  <send><![CDATA[\nCANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-{offset}]\n"
        f"{FROM}\n{TO}\nCall-ID: [call_id]\nCSeq: 1 CANCEL\n"
        "Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
    )


def recv(code: int | str, optional: bool = False, rrs: bool = False, extra: str = "") -> str:
    attrs = f' response="{code}"' if isinstance(code, int) else f' request="{code}"'
    attrs += ' optional="true"' if optional else ""
    attrs += ' rrs="true"' if rrs else ""
    return f"  <recv{attrs}>{extra}</recv>\n" if extra else f"  <recv{attrs}/>\n"


def pause(ms: int) -> str:
    return f'  <pause milliseconds="{ms}"/>\n'


def play_pcap(path: str) -> str:
    return f'  <nop><action><exec play_pcap_audio="{path}"/></action></nop>\n'


def scenario(name: str, *parts: str) -> str:
    return HEAD.format(name=name) + "".join(parts) + "</scenario>\n"


# SIPp options for calls through a multi-process proxy: a message the scenario does not expect (a 180 that
# the proxy's workers delivered after the 200) is logged and skipped instead of aborting the call; a missing
# expected message still fails the call.
LATE_PROVISIONAL_OK = ["-default_behaviors", "all,-abortunexp"]


def answered(body: str | None = None, ack_body: str = "", ringing_optional: bool = False) -> tuple[str, ...]:
    """The caller's steps up to an answered call: INVITE, (100), 180, 200, ACK."""
    return (
        invite(sdp() if body is None else body),
        recv(100, optional=True),
        recv(180, optional=ringing_optional),
        recv(200, rrs=True),
        ack_2xx(body=ack_body),
    )


def reply(code: int, reason: str) -> str:
    """A bodiless response to the request just received."""
    return (
        f"  <send><![CDATA[\nSIP/2.0 {code} {reason}\n[last_Via:]\n[last_From:]\n[last_To:]\n"
        "[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n"
    )


def answered_call(
    *middle: str,
    name: str = "call",
    body: str | None = None,
    ack_body: str = "",
    hold_ms: int = 500,
    ringing_optional: bool = False,
) -> str:
    """INVITE, 180, 200, ACK, `middle` steps, pause, BYE, 200.

    `ringing_optional`: through a multi-process proxy under load the 180 may be overtaken by the 200 (the
    proxy's workers race): it may be dropped, so it is not required, or arrive after the ACK, so run SIPp
    with LATE_PROVISIONAL_OK.
    """
    return scenario(
        name,
        *answered(body, ack_body, ringing_optional),
        *middle,
        pause(hold_ms),
        in_dialog("BYE", 9),
        recv(200),
    )


def rejected_call(
    code: int, body: str | None = None, name: str = "rejected", check: tuple[str, str] | None = None
) -> str:
    """INVITE answered with `code` (optionally checking a header's value against a regexp), then ACK."""
    extra = ""
    if check:
        header, regexp = check
        extra = (
            f'<action><ereg regexp="{regexp}" search_in="hdr" header="{header}" check_it="true" '
            'assign_to="1"/>'
            "</action>"
        )
    return scenario(
        name,
        invite(sdp() if body is None else body),
        recv(100, optional=True),
        recv(180, optional=True),
        recv(code, extra=extra),
        ack_error(4),
        '  <Reference variables="1"/>\n' if check else "",
    )


def cancelled_call(ring_ms: int = 0) -> str:
    """INVITE, 180, (ring), CANCEL (same branch), 200 for CANCEL, 487, ACK."""
    ring = [pause(ring_ms)] if ring_ms else []
    n = len(ring)
    return scenario(
        "cancel",
        invite(sdp()),
        recv(100, optional=True),
        recv(180),
        *ring,
        cancel(3 + n),
        recv(200),
        recv(487),
        ack_error(6 + n),
    )


def uas_answer(hold_ms: int = 0, expect_bye: bool = True) -> str:
    """A UAS (the PSTN answerer behind the trunk): 180, 200 with SDP (copying Record-Route), ACK, BYE."""
    reply = (
        "  <send><![CDATA[\nSIP/2.0 {code} {reason}\n[last_Via:]\n[last_From:]\n"
        "[last_To:];tag=[pid]SIPpTag01[call_number]\n"
        "[last_Call-ID:]\n[last_CSeq:]\n[last_Record-Route:]\n"
        "Contact: <sip:uas@[local_ip]:[local_port]>\n{extra}"
        "Content-Length: [len]\n\n{body}]]></send>\n"
    )
    parts = [
        '  <recv request="INVITE" crlf="true"/>\n',
        reply.format(code=180, reason="Ringing", extra="", body=""),
        reply.format(code=200, reason="OK", extra="Content-Type: application/sdp\n", body=sdp()),
        '  <recv request="ACK" crlf="true"/>\n',
    ]
    if expect_bye:
        parts += ['  <recv request="BYE"/>\n', reply.format(code=200, reason="OK", extra="", body="")]
    return scenario("uas", *parts)
