"""SIPp 3.6 scenario XML for the calls our tests place and answer.

UAC scenarios call `sip:[service]@[remote_ip]:[remote_port]` (`-s` sets the user part) and follow the
dialog's route set (`rrs`, `[next_url]`, `[routes]`), so they work straight or through a Record-Routing
trunk. UAS scenarios copy `[last_Record-Route:]` into their answers for the same reason. Audio is PCMU with
telephone-event 101; `play_pcap_audio` sends a capture from `pcap_audio.write_rtp_pcap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

FROM = "From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
TO = "To: <sip:[service]@[remote_ip]:[remote_port]>"
VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
CONTACT = "Contact: <sip:sipp@[local_ip]:[local_port]>"
UAS_TAG = ";tag=[pid]SIPpTag01[call_number]"


def sdp(direction: str = "sendrecv", version: int = 1, media_port: int | None = None) -> str:
    port = "[media_port]" if media_port is None else str(media_port)
    return (
        f"v=0\no=sipp 1000 {version} IN IP[local_ip_type] [local_ip]\ns=-\n"
        f"c=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio {port} RTP/AVP 0 101\n"
        "a=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
        f"a=fmtp:101 0-15\na=ptime:20\na={direction}\n"
    )


def _send(message: str, retrans: bool = False) -> str:
    attr = ' retrans="500"' if retrans else ""
    return f"<send{attr}><![CDATA[\n{message.strip()}\n]]></send>\n"


def _with_body(headers: str, body: str, content_type: str = "application/sdp") -> str:
    return f"{headers.strip()}\nContent-Type: {content_type}\nContent-Length: [len]\n\n{body}"


def _no_body(headers: str) -> str:
    return f"{headers.strip()}\nContent-Length: 0\n"


def _scenario(name: str, body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8" ?>\n<scenario name={quoteattr(name)}>\n{body}</scenario>\n'


def _play(pcap: Path | None) -> str:
    if pcap is None:
        return ""
    return f"<nop><action><exec play_pcap_audio={quoteattr(str(pcap))}/></action></nop>\n"


def _pause(ms: int | None) -> str:
    return "<pause/>\n" if ms is None else f'<pause milliseconds="{ms}"/>\n'


def _invite(cseq: int, extra: str = "") -> str:
    headers = (
        f"INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{VIA}\n{FROM}\n{TO}\nCall-ID: [call_id]\n"
    )
    headers += f"CSeq: {cseq} INVITE\n{CONTACT}\nMax-Forwards: 70\n{extra}"
    return _send(_with_body(headers, sdp()), retrans=True)


def _in_dialog(method: str, cseq: int) -> str:
    """Start line and headers of a request inside the dialog set up by the last 2xx (rrs)."""
    return (
        f"{method} [next_url] SIP/2.0\n{VIA}\n[routes]\n{FROM}\n{TO}[peer_tag_param]\nCall-ID: [call_id]\n"
        f"CSeq: {cseq} {method}\n{CONTACT}\nMax-Forwards: 70\n"
    )


def _answered(invite_cseq: int) -> str:
    """Wait for the INVITE's final 2xx (provisionals optional) and ACK it."""
    return (
        '<recv response="100" optional="true"/>\n<recv response="180" optional="true"/>\n'
        '<recv response="183" optional="true"/>\n<recv response="200" rrs="true" rtd="true"/>\n'
        + _send(_no_body(_in_dialog("ACK", invite_cseq)))
    )


def _hangup(cseq: int) -> str:
    return _send(_no_body(_in_dialog("BYE", cseq)), retrans=True) + '<recv response="200" crlf="true"/>\n'


def uac_basic(pcap: Path | None = None, hold_ms: int | None = 2000, remote_hangup: bool = False) -> str:
    """INVITE with a PCMU offer, ACK the 200, play `pcap`, wait `hold_ms` (None: SIPp's -d), BYE; or, with
    `remote_hangup`, wait for the callee's BYE and answer it."""
    body = _invite(1) + _answered(1) + _play(pcap)
    if remote_hangup:
        body += '<recv request="BYE"/>\n' + _reply("200 OK", tag=False) + '<timewait milliseconds="500"/>\n'
    else:
        body += _pause(hold_ms) + _hangup(2)
    return _scenario("uac basic", body)


def uac_auth(pcap: Path | None = None, hold_ms: int | None = 2000) -> str:
    """As uac_basic, but the first INVITE is challenged (401 or 407) and sent again with -au/-ap."""
    keep_branch = '<action><ereg regexp="branch=[^;]*" search_in="hdr" header="Via:" assign_to="1"/></action>'
    challenge = (
        '<recv response="100" optional="true"/>\n'
        f'<recv response="401" auth="true" optional="true" next="challenged">{keep_branch}</recv>\n'
        f'<recv response="407" auth="true">{keep_branch}</recv>\n<label id="challenged"/>\n'
    )
    ack = "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
    ack += f"Via: SIP/2.0/[transport] [local_ip]:[local_port];[$1]\n{FROM}\n{TO}[peer_tag_param]\n"
    ack += "Call-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\n"
    body = _invite(1) + challenge + _send(_no_body(ack)) + _invite(2, "[authentication]\n") + _answered(2)
    return _scenario("uac auth", body + _play(pcap) + _pause(hold_ms) + _hangup(3))


def uac_cancel(ring_ms: int = 300) -> str:
    """INVITE, wait for 180, CANCEL after `ring_ms`, expect 200 (CANCEL) and 487, ACK the 487."""
    keep_branch = '<action><ereg regexp="branch=[^;]*" search_in="hdr" header="Via:" assign_to="1"/></action>'
    via = "Via: SIP/2.0/[transport] [local_ip]:[local_port];[$1]"
    cancel = (
        f"CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{via}\n{FROM}\n{TO}\nCall-ID: [call_id]\n"
    )
    cancel += "CSeq: 1 CANCEL\nMax-Forwards: 70\n"
    ack = f"ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{via}\n{FROM}\n{TO}[peer_tag_param]\n"
    ack += "Call-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\n"
    body = _invite(1) + '<recv response="100" optional="true"/>\n'
    body += f'<recv response="180">{keep_branch}</recv>\n' + _pause(ring_ms) + _send(_no_body(cancel), True)
    body += '<recv response="200" optional="true"/>\n<recv response="487"/>\n' + _send(_no_body(ack))
    return _scenario("uac cancel", body)


def _reinvite(cseq: int, direction: str, version: int) -> str:
    message = _with_body(_in_dialog("INVITE", cseq), sdp(direction, version))
    return (
        _send(message, retrans=True)
        + '<recv response="100" optional="true"/>\n<recv response="200"/>\n'
        + _send(_no_body(_in_dialog("ACK", cseq)))
    )


def uac_hold_unhold(hold_ms: int = 500, pcap: Path | None = None) -> str:
    """A call that is put on hold (re-INVITE a=sendonly) and taken off hold (a=sendrecv), then BYE."""
    body = _invite(1) + _answered(1) + _play(pcap) + _pause(hold_ms)
    body += _reinvite(2, "sendonly", 2) + _pause(hold_ms) + _reinvite(3, "sendrecv", 3) + _pause(hold_ms)
    return _scenario("uac hold unhold", body + _hangup(4))


def uac_info_dtmf(digits: str, gap_ms: int = 200, duration_ms: int = 160) -> str:
    """A call that sends each digit as SIP INFO application/dtmf-relay, then BYE."""
    body = _invite(1) + _answered(1) + _pause(gap_ms)
    for index, digit in enumerate(digits):
        info = _with_body(
            _in_dialog("INFO", 2 + index),
            f"Signal={digit}\nDuration={duration_ms}\n",
            "application/dtmf-relay",
        )
        body += _send(info, retrans=True) + '<recv response="200"/>\n' + _pause(gap_ms)
    return _scenario("uac info dtmf", body + _hangup(2 + len(digits)))


# --- answering side -----------------------------------------------------------------------------------


def _reply(status: str, extra: str = "", body: str | None = None, tag: bool = True) -> str:
    to = "[last_To:]" + (UAS_TAG if tag else "")
    headers = f"SIP/2.0 {status}\n[last_Via:]\n[last_Record-Route:]\n[last_From:]\n{to}\n[last_Call-ID:]\n"
    headers += f"[last_CSeq:]\n{CONTACT}\n{extra}"
    return _send(_with_body(headers, body) if body is not None else _no_body(headers))


def uas_answer(
    *,
    ring_ms: int = 0,
    pcap: Path | None = None,
    media_port: int | None = None,
    infos: int = 0,
    reinvite_answers: Sequence[str] = (),
    hangup_after_ms: int | None = None,
) -> str:
    """Answer one INVITE (100, 180, 200 with PCMU), play `pcap`, answer `infos` INFOs and one re-INVITE per
    entry of `reinvite_answers` (the a= direction to answer with), then wait for BYE or, with
    `hangup_after_ms`, send it. `media_port` advertises a fixed RTP port (e.g. a test's own socket)."""
    body = '<recv request="INVITE" rrs="true" crlf="true"/>\n' + _reply("100 Trying", tag=False)
    body += _reply("180 Ringing") + (_pause(ring_ms) if ring_ms else "")
    body += _reply("200 OK", body=sdp(media_port=media_port)).replace("<send>", '<send retrans="500">', 1)
    body += '<recv request="ACK" rtd="true" crlf="true"/>\n' + _play(pcap)
    for _ in range(infos):
        body += '<recv request="INFO"/>\n' + _reply("200 OK")
    for version, direction in enumerate(reinvite_answers, start=2):
        body += '<recv request="INVITE"/>\n'
        body += _reply("200 OK", body=sdp(direction, version, media_port)).replace(
            "<send>", '<send retrans="500">'
        )
        body += '<recv request="ACK"/>\n'
    if hangup_after_ms is None:
        body += '<recv request="BYE"/>\n' + _reply("200 OK") + '<timewait milliseconds="500"/>\n'
    else:
        bye = f"BYE [next_url] SIP/2.0\n{VIA}\n[routes]\nFrom: <sip:sipp@[local_ip]:[local_port]>{UAS_TAG}\n"
        bye += "To: <sip:caller@[remote_ip]>[peer_tag_param]\nCall-ID: [call_id]\nCSeq: 1 BYE\n"
        bye += "Max-Forwards: 70\n"
        body += _pause(hangup_after_ms) + _send(_no_body(bye), retrans=True) + '<recv response="200"/>\n'
    return _scenario("uas answer", body)


def uas_challenge(
    username: str, password: str, realm: str = "trunk.test", status: int = 407, pcap: Path | None = None
) -> str:
    """Challenge the INVITE (407 Proxy-Authenticate like a trunk, or 401), then answer the repeated INVITE
    like uas_answer. With 401 SIPp checks the digest (`verifyauth`); it cannot check Proxy-Authorization,
    so with 407 it only requires one for `username` (check the digest from the message trace)."""
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    reason = "Proxy Authentication Required" if status == 407 else "Unauthorized"
    challenge = f'{name}: Digest realm="{realm}", nonce="[pid]n[call_number]", algorithm=MD5\n'
    if status == 401:
        check = (
            f'<verifyauth assign_to="authok" username={quoteattr(username)} password={quoteattr(password)}/>'
        )
    else:
        pattern = quoteattr(f'username="{username}"')
        check = f'<ereg regexp={pattern} search_in="hdr" header="Proxy-Authorization:" assign_to="authok"/>'
    body = '<recv request="INVITE" crlf="true"/>\n' + _reply(f"{status} {reason}", challenge)
    body += '<recv request="ACK"/>\n'
    body += f'<recv request="INVITE" rrs="true"><action>{check}</action></recv>\n'
    body += (
        '<nop test="authok" next="good"/>\n' + _reply("403 Forbidden") + '<recv request="ACK" next="end"/>\n'
    )
    body += '<label id="good"/>\n' + _reply("100 Trying", tag=False)
    body += _reply("200 OK", body=sdp()).replace("<send>", '<send retrans="500">', 1)
    body += '<recv request="ACK"/>\n' + _play(pcap) + '<recv request="BYE"/>\n' + _reply("200 OK")
    return _scenario("uas challenge", body + '<label id="end"/>\n')


def uas_ring_until_cancel() -> str:
    """Ring (100, 180) until the caller cancels; answer CANCEL 200 and the INVITE 487, take the ACK."""
    cseq = '<action><ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="2"/></action>'
    body = f'<recv request="INVITE" crlf="true">{cseq}</recv>\n' + _reply("100 Trying", tag=False)
    body += _reply("180 Ringing") + '<recv request="CANCEL"/>\n' + _reply("200 OK")
    terminated = _reply("487 Request Terminated").replace("[last_CSeq:]", "CSeq: [$2] INVITE")
    return _scenario("uas ring until cancel", body + terminated + '<recv request="ACK"/>\n')
