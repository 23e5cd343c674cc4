"""The SIP pre-validator against the RFC 4475/5118 torture corpus, targeted cases, and fuzzing.

EXPECTED is the "Us" column of /work/shared/corpus/sip-torture/README.md restricted to what a stateless
check decides: "pass" means the message goes on to the stack (which answers 481/200/404/488 with dialog
and routing state); a number is the status of our own stateless reply; "drop" means silence.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkline.sip.message import frame, parse_name_addr
from trunkline.sip.validate import Drop, Pass, Reply, ValidatorConfig, is_safe_destination, precheck

CORPUS = Path("/work/shared/corpus/sip-torture")
SOURCE = ("127.0.0.1", 5062)

EXPECTED: dict[str, str | int] = {
    # RFC 4475 §3.1.1 valid messages
    "wsinv.dat": "pass", "intmeth.dat": 501, "esc01.dat": "pass", "escnull.dat": 405, "esc02.dat": 501,
    "lwsdisp.dat": "pass", "longreq.dat": "pass", "dblreq.dat": 405, "semiuri.dat": "pass",
    "transports.dat": "pass", "mpart01.dat": 405, "unreason.dat": "pass", "noreason.dat": "pass",
    # §3.1.2 invalid messages
    "badinv01.dat": 400, "clerr.dat": 400, "ncl.dat": 400, "scalar02.dat": 400, "scalarlg.dat": "drop",
    "quotbal.dat": 400, "ltgtruri.dat": 400, "lwsruri.dat": 400, "lwsstart.dat": "pass", "trws.dat": "pass",
    "escruri.dat": 400, "baddate.dat": "pass", "regbadct.dat": 405, "badaspec.dat": 400, "baddn.dat": 400,
    "badvers.dat": 505, "mismatch01.dat": 400, "mismatch02.dat": 501, "bigcode.dat": "drop",
    # §3.2 transaction layer, §3.3 application layer, §3.4 backward compatibility
    "badbranch.dat": "pass", "insuf.dat": 400, "unkscm.dat": 416, "novelsc.dat": 416, "unksm2.dat": 405,
    "bext01.dat": 420, "invut.dat": 415, "regaut01.dat": 405, "multi01.dat": 400, "mcl01.dat": 400,
    "bcast.dat": "drop", "zeromf.dat": "pass", "cparam01.dat": 405, "cparam02.dat": 405, "regescrt.dat": 405,
    "sdp01.dat": 406, "inv2543.dat": 400,
    # RFC 5118
    "rfc5118/ipv6-good.dat": 405, "rfc5118/ipv6-bad.dat": 400, "rfc5118/port-ambiguous.dat": 405,
    "rfc5118/port-unambiguous.dat": 405, "rfc5118/via-received-param-with-delim.dat": "pass",
    "rfc5118/via-received-param-no-delim.dat": "pass", "rfc5118/ipv6-in-sdp.dat": "pass",
    "rfc5118/ipv6-in-sdp.cl-fixed.dat": "pass", "rfc5118/mult-ip-in-header.dat": "pass",
    "rfc5118/mult-ip-in-sdp.dat": "pass", "rfc5118/mult-ip-in-sdp.cl-fixed.dat": "pass",
    "rfc5118/ipv4-mapped-ipv6.dat": "pass", "rfc5118/ipv4-mapped-ipv6.cl-fixed.dat": "pass",
    "rfc5118/ipv6-bug-abnf-3-colons.dat": 400, "rfc5118/ipv6-correct-abnf-2-colons.dat": "pass",
}  # fmt: skip


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def corpus_names() -> list[str]:
    files = sorted(CORPUS.glob("*.dat")) + sorted((CORPUS / "rfc5118").glob("*.dat"))
    return [str(f.relative_to(CORPUS)) for f in files]


def _msg(*lines: str, body: str = "") -> bytes:
    head = "\r\n".join(lines)
    return f"{head}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}".encode()


_SDP = (
    "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\n"
)
_DIALOG = (
    "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKs1;rport", "From: <sip:+15550002@trunk.test>;tag=f1",
    "To: <sip:+15550001@127.0.0.1>;tag=t1", "Call-ID: seed@trunk", "Max-Forwards: 70",
)  # fmt: skip
# Traffic a trunk really sends, to seed the fuzzers next to the corpus: challenges, answers with route
# sets, transfers, DTMF, hang-ups with Reason, identity and diversion headers.
SEED_MESSAGES = [
    _msg(
        "SIP/2.0 407 Proxy Authentication Required",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKo1;rport=5060",
        "From: <sip:trunkline@trunk.test>;tag=a",
        "To: <sip:+15550003@trunk.test>;tag=k",
        "Call-ID: out1@tl",
        "CSeq: 1 INVITE",
        'Proxy-Authenticate: Digest realm="trunk.test", nonce="Zx1", qop="auth", algorithm=MD5',
        "Server: kamailio (5.6.4 (x86_64/linux))",
    ),
    _msg(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;branch=z9hG4bKo2;rport=5060",
        "Record-Route: <sip:127.0.0.1:5070;lr;ftag=a>",
        "Record-Route: <sip:127.0.0.1:5071;lr>",
        "From: <sip:trunkline@trunk.test>;tag=a",
        "To: <sip:+15550003@trunk.test>;tag=k2",
        "Call-ID: out1@tl",
        "CSeq: 2 INVITE",
        "Contact: <sip:+15550003@127.0.0.1:5090;transport=udp>",
        "Content-Type: application/sdp",
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS",
        "Supported: replaces, timer",
        body=_SDP,
    ),
    _msg(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr1;rport=5060",
        "From: <sip:trunkline@trunk.test>;tag=r",
        "To: <sip:trunkline@trunk.test>;tag=q",
        "Call-ID: reg1@tl",
        "CSeq: 3 REGISTER",
        'WWW-Authenticate: Digest realm="trunk.test", nonce="abc", opaque="", qop="auth"',
    ),
    _msg(
        "INVITE sip:+15550001@127.0.0.1:5060 SIP/2.0",
        _DIALOG[0],
        _DIALOG[1],
        "To: <sip:+15550001@trunk.test>",
        _DIALOG[3],
        "CSeq: 10 INVITE",
        _DIALOG[4],
        "Contact: <sip:+15550002@127.0.0.1:5080>",
        'P-Asserted-Identity: "Caller" <sip:+15550002@trunk.test>',
        "Diversion: <sip:+15550009@trunk.test>;reason=unconditional",
        'Authorization: Digest username="u", realm="r", nonce="n", uri="sip:x", response="0f"',
        "Record-Route: <sip:127.0.0.1:5070;lr>",
        "Supported: timer, replaces",
        "Content-Type: application/sdp",
        body=_SDP,
    ),
    _msg(
        "REFER sip:+15550001@127.0.0.1:5060 SIP/2.0",
        *_DIALOG,
        "CSeq: 11 REFER",
        "Refer-To: <sip:+15550005@trunk.test?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        "Referred-By: <sip:+15550002@trunk.test>",
        "Contact: <sip:+15550002@127.0.0.1:5080>",
    ),
    _msg(
        "INFO sip:+15550001@127.0.0.1:5060 SIP/2.0",
        *_DIALOG,
        "CSeq: 12 INFO",
        "Content-Type: application/dtmf-relay",
        body="Signal=5\r\nDuration=160\r\n",
    ),
    _msg(
        "BYE sip:+15550001@127.0.0.1:5060 SIP/2.0",
        *_DIALOG,
        "CSeq: 13 BYE",
        'Reason: Q.850;cause=16;text="Normal"',
    ),
]


def header(data: bytes, name: str) -> list[str]:
    return [h.value for h in frame(data).headers if h.name == name]


def status_of(verdict: Pass | Drop | Reply) -> int | None:
    return verdict.status if isinstance(verdict, Pass | Reply) else None


def destination_of(verdict: Pass | Drop | Reply) -> tuple[str, int] | None:
    assert isinstance(verdict, Reply), verdict
    return verdict.destination


def check_reply_shape(verdict: Reply, request: bytes) -> None:
    """A well-formed stateless response that echoes the request's transaction identifiers."""
    msg = frame(verdict.response_bytes)
    assert msg.start_line.startswith(f"SIP/2.0 {verdict.status} ")
    assert verdict.response_bytes.endswith(b"\r\n\r\n") and msg.body == b""
    assert header(verdict.response_bytes, "content-length") == ["0"]
    req = frame(request)
    assert header(verdict.response_bytes, "call-id") == req.values("call-id")[:1]
    assert header(verdict.response_bytes, "cseq") == req.values("cseq")[:1]
    assert len(header(verdict.response_bytes, "via")) == len(req.values("via"))
    assert verdict.destination is None or is_safe_destination(verdict.destination)
    for name, value in verdict.extra_headers:
        assert f"\r\n{name}: {value}\r\n".encode() in verdict.response_bytes


def test_table_covers_the_whole_corpus() -> None:
    assert sorted(EXPECTED) == sorted(corpus_names())
    assert len(EXPECTED) == 49 + 12 + 3


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_verdict(name: str) -> None:
    data = corpus(name)
    verdict = precheck(data, SOURCE)
    expected = EXPECTED[name]
    if expected == "pass":
        assert isinstance(verdict, Pass), verdict
        again = precheck(verdict.data, SOURCE)  # the canonical form is a fixed point
        assert isinstance(again, Pass) and again.data == verdict.data
    elif expected == "drop":
        assert isinstance(verdict, Drop), verdict
    else:
        assert isinstance(verdict, Reply), verdict
        assert verdict.status == expected, verdict.reason
        assert verdict.destination == SOURCE
        check_reply_shape(verdict, data)


def test_reply_carries_allow_unsupported_accept() -> None:
    allow = "INVITE, ACK, CANCEL, BYE, INFO, REFER, NOTIFY, OPTIONS"
    for name in ("intmeth.dat", "escnull.dat", "mpart01.dat", "rfc5118/ipv6-good.dat"):
        verdict = precheck(corpus(name), SOURCE)
        assert isinstance(verdict, Reply) and ("Allow", allow) in verdict.extra_headers
    bext = precheck(corpus("bext01.dat"), SOURCE)
    assert isinstance(bext, Reply)
    assert bext.extra_headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)
    invut = precheck(corpus("invut.dat"), SOURCE)
    assert isinstance(invut, Reply) and invut.extra_headers == (("Accept", "application/sdp"),)


def test_reply_to_tag_and_via_received() -> None:
    verdict = precheck(corpus("escnull.dat"), SOURCE)
    assert isinstance(verdict, Reply)
    to = parse_name_addr(header(verdict.response_bytes, "to")[0])
    assert to.param("tag") and precheck(corpus("escnull.dat"), SOURCE) == verdict  # a stable tag
    assert header(verdict.response_bytes, "via")[0].endswith(";received=127.0.0.1")
    # A To tag already there is kept as it is (wsinv-like in-dialog request rejected for its version).
    bad = corpus("zeromf.dat").replace(b"OPTIONS sip:user@example.com SIP/2.0", b"OPTIONS sip:u@h SIP/3.0")
    bad = bad.replace(b"To: sip:user@example.com", b"To: <sip:user@example.com>;tag=abc")
    reply = precheck(bad, SOURCE)
    assert isinstance(reply, Reply) and reply.status == 505
    assert header(reply.response_bytes, "to") == ["<sip:user@example.com>;tag=abc"]


def test_dblreq_answers_only_the_register() -> None:
    verdict = precheck(corpus("dblreq.dat"), SOURCE)
    assert isinstance(verdict, Reply) and verdict.status == 405
    assert header(verdict.response_bytes, "call-id") == ["dblreq.0ha0isndaksdj99sdfafnl3lk233412"]
    assert verdict.response_bytes.count(b"SIP/2.0 ") == 1 and b"977644900765" not in verdict.response_bytes


def test_trailing_octets_after_content_length_are_cut() -> None:
    data = corpus("zeromf.dat") + b"INVITE sip:joe@example.com SIP/2.0\r\n\r\n"
    verdict = precheck(data, SOURCE)
    assert isinstance(verdict, Pass)
    assert b"INVITE" not in verdict.data and verdict.data.endswith(b"Content-Length: 0\r\n\r\n")
    short = precheck(corpus("rfc5118/ipv6-in-sdp.dat"), SOURCE)
    assert isinstance(short, Pass)
    assert (
        short.data.split(b"\r\n\r\n", 1)[1]
        == corpus("rfc5118/ipv6-in-sdp.dat").split(b"\r\n\r\n", 1)[1][:241]
    )


def test_pass_unfolds_and_makes_replies_symmetric() -> None:
    verdict = precheck(corpus("wsinv.dat"), SOURCE)
    assert isinstance(verdict, Pass)
    text = verdict.data.decode()
    head = text.split("\r\n\r\n")[0]
    assert all(not line.startswith((" ", "\t")) for line in head.split("\r\n"))
    assert header(verdict.data, "via")[0] == "SIP/2.0/UDP 192.0.2.2;branch=390skdjuw;rport"
    assert header(verdict.data, "cseq") == ["9 INVITE"]
    forged = corpus("zeromf.dat").replace(
        b"branch=z9hG4bKkdjuw2349i", b"branch=z9hG4bKx;received=255.255.255.255"
    )
    passed = precheck(forged, SOURCE)
    assert isinstance(passed, Pass)
    assert header(passed.data, "via") == ["SIP/2.0/UDP host1.example.com;branch=z9hG4bKx;rport"]


def test_destination_rules() -> None:
    data = corpus("mismatch01.dat")  # Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
    plain = ValidatorConfig(force_rport=False)
    assert destination_of(precheck(data, SOURCE, plain)) == ("127.0.0.1", 5060)
    with_rport = data.replace(b"z9hG4bKkdjuw", b"z9hG4bKkdjuw;rport")
    reply = precheck(with_rport, SOURCE, plain)
    assert isinstance(reply, Reply) and reply.destination == SOURCE
    assert header(reply.response_bytes, "via")[0].endswith(";received=127.0.0.1;rport=5062")
    # Without a source address, an IP literal in Via (or received/rport) is used; names cannot be.
    literal = data.replace(b"host.example.com", b"192.0.2.7:5080")
    assert destination_of(precheck(literal)) == ("192.0.2.7", 5080)
    assert destination_of(precheck(data)) is None


def test_never_answers_to_broadcast_multicast_or_unspecified() -> None:
    data = corpus("mismatch01.dat")
    for host in (
        b"255.255.255.255",
        b"224.0.0.1",
        b"0.0.0.0",
        b"[ff02::1]",
        b"[::]",
        b"[::ffff:255.255.255.255]",
    ):
        verdict = precheck(data.replace(b"host.example.com", host))
        assert verdict == Drop("unsafe_destination"), host
    forged = data.replace(b"z9hG4bKkdjuw", b"z9hG4bKkdjuw;received=255.255.255.255")
    assert precheck(forged) == Drop("unsafe_destination")
    assert precheck(data, ("255.255.255.255", 5060)) == Drop("unsafe_source")
    assert precheck(data, ("127.0.0.1", 0)) == Drop("unsafe_source")
    assert precheck(corpus("bcast.dat"), SOURCE) == Drop("response_with_several_vias")


def test_ack_is_never_answered() -> None:
    ack = (
        corpus("mismatch01.dat")
        .replace(b"OPTIONS sip:", b"ACK sip:")
        .replace(b"CSeq: 8 INVITE", b"CSeq: 8 ACK")
    )
    assert isinstance(precheck(ack, SOURCE), Pass)
    assert precheck(ack.replace(b"CSeq: 8 ACK", b"CSeq: 8 INVITE"), SOURCE) == Drop("bad_ack")
    assert precheck(ack.replace(b"Max-Forwards: 6\r\n", b""), SOURCE) == Drop("bad_ack")


def test_configured_extensions_and_methods() -> None:
    opts = corpus("zeromf.dat").replace(b"Max-Forwards: 0", b"Require: timer\r\nMax-Forwards: 0")
    reply = precheck(opts, SOURCE)
    assert isinstance(reply, Reply) and reply.extra_headers == (("Unsupported", "timer"),)
    assert isinstance(
        precheck(opts, SOURCE, ValidatorConfig(supported_extensions=frozenset({"timer"}))), Pass
    )
    update = corpus("zeromf.dat").replace(b"OPTIONS", b"UPDATE")
    assert status_of(precheck(update, SOURCE)) == 405
    config = ValidatorConfig(allowed_methods=("INVITE", "ACK", "BYE", "CANCEL", "UPDATE"))
    assert isinstance(precheck(update, SOURCE, config), Pass)


INVITE_HEAD = (
    b"INVITE sip:+15550001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:+15550001@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\nContact: <sip:a@127.0.0.1:5070>\r\n"
)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Café\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_BYTES = SDP.encode()


def invite(body: bytes, content_type: bytes, extra: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n".encode()
    return INVITE_HEAD + extra + b"Content-Type: " + content_type + b"\r\n" + length + b"\r\n" + body


def test_invite_bodies() -> None:
    plain = precheck(invite(SDP_BYTES, b"application/sdp"), SOURCE)
    assert isinstance(plain, Pass)
    body = plain.data.split(b"\r\n\r\n", 1)[1]
    assert body == SDP_BYTES  # sippy measures the decoded body: its Content-Length counts characters
    assert header(plain.data, "content-length") == [str(len(SDP))]
    binary = b"\x00\x82\xff\r\n\x01binary ISUP"
    multipart = (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n"
        + SDP_BYTES
        + b"\r\n--b1\r\nContent-Type: application/isup\r\n"
        b"\r\n" + binary + b"\r\n--b1--\r\n"
    )
    mixed = precheck(invite(multipart, b'multipart/mixed; boundary="b1"'), SOURCE)
    assert isinstance(mixed, Pass) and mixed.data.split(b"\r\n\r\n", 1)[1] == SDP_BYTES
    assert header(mixed.data, "content-type") == ["application/sdp"]
    no_sdp = multipart.replace(b"application/sdp", b"text/plain")
    assert status_of(precheck(invite(no_sdp, b"multipart/mixed;boundary=b1"), SOURCE)) == 415
    assert (
        status_of(precheck(invite(SDP_BYTES, b"application/sdp", b"Content-Encoding: gzip\r\n"), SOURCE))
        == 415
    )
    assert status_of(precheck(invite(SDP_BYTES + b"\x00", b"application/sdp"), SOURCE)) == 400
    assert status_of(precheck(invite(b"\xff\xfe", b"application/sdp"), SOURCE)) == 400
    accept_any = precheck(invite(SDP_BYTES, b"application/sdp", b"Accept: text/html, */*;q=0.1\r\n"), SOURCE)
    assert isinstance(accept_any, Pass)
    refused = precheck(invite(SDP_BYTES, b"application/sdp", b"Accept: application/sdp;q=0\r\n"), SOURCE)
    assert status_of(refused) == 406


def test_headers_sippy_cannot_read_are_fixed_or_refused() -> None:
    data = invite(SDP_BYTES, b"application/sdp", b"P-Asserted-Identity: <tel:+15550002>\r\nReason: Q.850\r\n")
    verdict = precheck(data, SOURCE)
    assert isinstance(verdict, Pass)  # optional headers sippy would choke on are left out...
    assert b"P-Asserted-Identity" not in verdict.data and b"Reason" not in verdict.data
    assert verdict.message.values("p-asserted-identity") == ["<tel:+15550002>"]  # ...but still readable here
    tel_from = data.replace(b"From: <sip:a@127.0.0.1>", b"From: <tel:+15550003>")
    assert status_of(precheck(tel_from, SOURCE)) == 400
    odd = data.replace(b"From: <sip:a@127.0.0.1>", b'From: "a\\\\" <sip:a@127.0.0.1>')
    fixed = precheck(odd, SOURCE)
    assert isinstance(fixed, Pass) and header(fixed.data, "from")[0].startswith('"a\\\\ " <sip:')
    breaker = data.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\r\nSubject: a\xe2\x80\xa8b\x0bc\r\n")
    cleaned = precheck(breaker, SOURCE)
    assert isinstance(cleaned, Pass) and header(cleaned.data, "subject") == ["a b c"]


def test_keepalives_garbage_and_responses() -> None:
    assert precheck(b"\r\n\r\n", SOURCE) == Drop("keepalive")
    assert precheck(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", SOURCE) == Drop("garbage")
    assert precheck(b"\x00\x01\x02", SOURCE) == Drop("garbage")
    no_via = re.sub(rb"Via:[^\r]*\r\n", b"", corpus("zeromf.dat"))
    assert precheck(no_via, SOURCE) == Drop("no_via")
    ok = precheck(corpus("noreason.dat"), SOURCE)
    assert isinstance(ok, Pass) and ok.status == 100 and ok.method is None


# --- fuzzing -------------------------------------------------------------------------------------------

MUTATION_TOKENS = [
    b",", b";", b"<", b">", b'"', b"\\", b" ", b"\r\n", b"\r\n ", b":", b"=", b"@", b"[", b"]", b"?",
    b"%", b"\t", b'"a\\\\" ', b'"a,b" ', b'"<a>\\",b" ', b"<sip:x@y>", b"tel:+1", b"%00", b"\x00", b"\x0b",
    b"\x1c", b"\xc2\x85", b"\xe2\x80\xa8", b"\xff", b";rport=1", b";received=255.255.255.255", b"[::1]",
    b"sips:", b"*", b";x", b' "q"', b";tag=", b" ;",
]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random edit of a message: byte flips, inserted separators, duplicated or dropped lines."""
    choice = rng.randrange(6)
    pos = rng.randrange(len(data) + 1)
    if choice == 0:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    if choice == 1:
        return data[:pos] + rng.choice(MUTATION_TOKENS) + data[pos:]
    lines = data.split(b"\r\n")
    index = rng.randrange(len(lines))
    if choice == 2:
        lines.insert(index, lines[index])
    elif choice == 3:
        del lines[index]
    elif choice == 4:
        lines[index] = lines[index].replace(b" ", b"", 1)
    else:
        lines[index] = lines[index] + rng.choice(MUTATION_TOKENS)
    return b"\r\n".join(lines)


def check_invariants(data: bytes) -> None:
    verdict = precheck(data, SOURCE)
    assert isinstance(verdict, Pass | Drop | Reply)
    assert verdict != Drop("internal_error")
    if isinstance(verdict, Reply):
        assert verdict.destination == SOURCE
        assert frame(verdict.response_bytes).start_line.startswith(f"SIP/2.0 {verdict.status} ")
        assert verdict.response_bytes.endswith(b"Content-Length: 0\r\n\r\n")
    if isinstance(verdict, Pass):
        head, _, body = verdict.data.decode("utf-8").partition("\r\n\r\n")
        assert head.endswith(f"\r\nContent-Length: {len(body)}")  # characters, as sippy counts them
        if body.isascii():  # then octets and characters agree and the canonical form is a fixed point
            again = precheck(verdict.data, SOURCE)
            assert isinstance(again, Pass) and again.data == verdict.data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data: bytes) -> None:
    check_invariants(data)


def test_seed_messages_pass() -> None:
    for data in SEED_MESSAGES:
        verdict = precheck(data, SOURCE)
        assert isinstance(verdict, Pass), (verdict, data)


def fuzz_originals() -> list[bytes]:
    return [corpus(name) for name in sorted(EXPECTED)] + SEED_MESSAGES


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(fuzz_originals()), st.randoms(use_true_random=False), st.integers(1, 4))
def test_mutated_corpus(data: bytes, rng: random.Random, edits: int) -> None:
    for _ in range(edits):
        data = mutate(rng, data)
    check_invariants(data)


@pytest.mark.parametrize(
    "data",
    [
        corpus("zeromf.dat").replace(b"Max-Forwards: 0", b"Contact: " + b'"a,' * 20000 + b'"'),
        corpus("zeromf.dat").replace(b"Max-Forwards: 0", b"Max-Forwards: 0" + b"\r\n x" * 15000),
        corpus("zeromf.dat").replace(b"Max-Forwards: 0", b"Route: " + b"<sip:a>," * 7000 + b"<sip:b>"),
        corpus("zeromf.dat").replace(b"Max-Forwards: 0", b"Max-Forwards: 0\r\nX: " + b"<" * 60000),
        corpus("zeromf.dat").replace(b"user@example.com SIP", b"user@" + b"a-" * 30000 + b"a SIP"),
        b"INVITE sip:a@b SIP/2.0\r\n" + b"Via: SIP/2.0/UDP h\r\n" * 3000 + b"\r\n",
    ],
    ids=["quoted-commas", "folded-lines", "many-routes", "angles", "long-host", "many-vias"],
)
def test_pathological_inputs_return(data: bytes) -> None:
    check_invariants(data)
