"""RFC 3605 a=rtcp in the far end's SDP: parsed from the audio block into AudioMedia, carried into Negotiated
as the address our RTCP reports go to; a malformed or unusable one is ignored (RTP port + 1 then applies)
and a re-INVITE without it returns to that default."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.sip.sdp import (
    AudioMedia,
    Negotiated,
    build_answer,
    build_offer,
    negotiate,
    negotiate_answer,
    parse_audio,
    renegotiate,
)

PREF = ("PCMU", "PCMA")


def sdp(
    *media_attrs: str, host: str = "10.0.0.5", port: int = 40000, session_attrs: tuple[str, ...] = ()
) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 10.0.0.5", "s=-", f"c=IN IP4 {host}", "t=0 0", *session_attrs]
    lines += [f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000", *media_attrs]
    return "\r\n".join(lines) + "\r\n"


def test_port_only_uses_the_media_host() -> None:
    media = parse_audio(sdp("a=rtcp:53020"))
    assert (media.rtcp_port, media.rtcp_host) == (53020, None)
    neg = negotiate(media, PREF)
    assert neg.remote_rtcp == ("10.0.0.5", 53020)
    assert (neg.remote_host, neg.remote_port) == ("10.0.0.5", 40000)  # RTP untouched


def test_port_and_address() -> None:
    media = parse_audio(sdp("a=rtcp:53020 IN IP4 192.0.2.7"))
    assert (media.rtcp_port, media.rtcp_host) == (53020, "192.0.2.7")
    assert negotiate(media, PREF).remote_rtcp == ("192.0.2.7", 53020)


def test_media_level_connection_line_is_the_default_host() -> None:
    media = parse_audio(sdp("c=IN IP4 198.51.100.9", "a=rtcp:7001"))
    assert negotiate(media, PREF).remote_rtcp == ("198.51.100.9", 7001)


def test_without_a_rtcp_there_is_no_declared_address() -> None:
    media = parse_audio(sdp())
    assert (media.rtcp_port, media.rtcp_host) == (None, None)
    assert negotiate(media, PREF).remote_rtcp is None


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_edges_are_accepted(port: int) -> None:
    assert parse_audio(sdp(f"a=rtcp:{port}")).rtcp_port == port


@pytest.mark.parametrize(
    "attr",
    [
        "a=rtcp:",
        "a=rtcp:abc",
        "a=rtcp:0",
        "a=rtcp:65536",
        "a=rtcp:-5",
        "a=rtcp:+5000",
        "a=rtcp:5000.5",
        "a=rtcp:\u00b2",  # a Unicode digit int() would refuse
        "a=rtcp:5000 IN",
        "a=rtcp:5000 IN IP4",
        "a=rtcp:5000 XX IP4 192.0.2.7",
        "a=rtcp:5000 IN IP4 192.0.2.7 extra",
        "a=rtcp:5000 IN IP4 192.0.2.300",
        "a=rtcp:5000 IN IP4 carrier.example.com",  # we resolve no names
        "a=rtcp:5000 IN IP4 192.0.2.7/127",
        "a=rtcp:5000 IN IP4 224.0.0.9",  # multicast
        "a=rtcp:5000 IN IP4 0.0.0.0",
        "a=rtcp:5000 IN IP4 255.255.255.255",
        "a=rtcp:5000 IN IP6 2001:db8::7",
        "a=rtcp:5000 IN IP6 ::1",
    ],
)
def test_malformed_or_unusable_a_rtcp_is_ignored_and_the_sdp_still_works(attr: str) -> None:
    media = parse_audio(sdp(attr))
    assert (media.rtcp_port, media.rtcp_host) == (None, None)
    neg = negotiate(media, PREF)
    assert neg.remote_rtcp is None  # RTP port + 1 applies
    assert (neg.codec, neg.remote_host, neg.remote_port) == ("PCMU", "10.0.0.5", 40000)


def test_first_usable_a_rtcp_wins() -> None:
    media = parse_audio(sdp("a=rtcp:junk", "a=rtcp:6001 IN IP4 192.0.2.1", "a=rtcp:6002"))
    assert (media.rtcp_port, media.rtcp_host) == (6001, "192.0.2.1")


def test_similar_attributes_are_not_a_rtcp() -> None:
    media = parse_audio(sdp("a=rtcp-mux", "a=rtcp-fb:0 nack", "a=rtcpx:5000"))
    assert media.rtcp_port is None


def test_session_level_a_rtcp_is_ignored() -> None:
    """RFC 3605 defines a=rtcp at media level only."""
    assert parse_audio(sdp(session_attrs=("a=rtcp:5000",))).rtcp_port is None


def test_a_rtcp_of_another_media_block_does_not_leak_into_audio() -> None:
    text = sdp("a=rtcp:7002").replace(
        "m=audio", "m=video 41000 RTP/AVP 96\r\na=rtcp:9999 IN IP4 192.0.2.99\r\nm=audio"
    )
    media = parse_audio(text)
    assert (media.port, media.rtcp_port, media.rtcp_host) == (40000, 7002, None)


def test_old_style_hold_keeps_no_port_only_rtcp_address() -> None:
    """c=0.0.0.0: the leg keeps its previous addresses, so a=rtcp on that host means nothing."""
    assert negotiate(parse_audio(sdp("a=rtcp:5001", host="0.0.0.0")), PREF).remote_rtcp is None
    held = negotiate(parse_audio(sdp("a=rtcp:5001 IN IP4 192.0.2.7", host="0.0.0.0")), PREF)
    assert held.remote_rtcp == ("192.0.2.7", 5001)


def test_reinvite_without_a_rtcp_returns_to_the_default() -> None:
    first = negotiate(parse_audio(sdp("a=rtcp:53020 IN IP4 192.0.2.7")), PREF)
    assert first.remote_rtcp == ("192.0.2.7", 53020)
    moved = renegotiate(first, parse_audio(sdp("a=rtcp:6000", host="10.0.0.6")))
    assert moved.remote_rtcp == ("10.0.0.6", 6000)
    plain = renegotiate(moved, parse_audio(sdp(host="10.0.0.6")))
    assert plain.remote_rtcp is None
    assert (plain.codec, plain.remote_host) == ("PCMU", "10.0.0.6")


def test_answer_to_our_offer_carries_a_rtcp() -> None:
    neg = negotiate_answer(parse_audio(sdp("a=rtcp:40011")), ("PCMA", "PCMU"))
    assert (neg.codec, neg.remote_rtcp) == ("PCMU", ("10.0.0.5", 40011))


def test_our_own_sdp_has_no_a_rtcp() -> None:
    """Our RTCP is on RTP port + 1, the RFC 3550 default, so we do not declare it."""
    neg = negotiate(parse_audio(sdp("a=rtcp:53020 IN IP4 192.0.2.7")), PREF)
    for text in (build_answer(neg, "127.0.0.1", 20000, 1, 1), build_offer(PREF, "127.0.0.1", 20000, 1, 1)):
        assert "a=rtcp" not in text
        assert parse_audio(text).rtcp_port is None


def test_existing_constructor_calls_still_work() -> None:
    media = AudioMedia("10.0.0.5", 40000, (0,), (), "sendrecv", None)
    assert (media.rtcp_port, media.rtcp_host) == (None, None)
    neg = Negotiated("PCMU", 0, 8000, None, "10.0.0.5", 40000, "sendrecv", 20)
    assert neg.remote_rtcp is None


def usable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A unicast IPv4 address we may send reports to."""
    return addr.version == 4 and not (addr.is_multicast or addr.is_unspecified or addr.is_reserved)


unicast = st.ip_addresses(v=4).filter(usable)


@given(st.integers(1, 65535), unicast)
def test_any_port_and_unicast_address_round_trip(port: int, addr: ipaddress.IPv4Address) -> None:
    neg = negotiate(parse_audio(sdp(f"a=rtcp:{port} IN IP4 {addr}")), PREF)
    assert neg.remote_rtcp == (str(addr), port)


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60))
def test_any_a_rtcp_value_never_fails_the_sdp(value: str) -> None:
    media = parse_audio(sdp(f"a=rtcp:{value}"))  # an SdpError here fails the test
    assert media.port == 40000
    if media.rtcp_port is not None:
        assert 0 < media.rtcp_port < 65536
        assert media.rtcp_host is None or usable(ipaddress.ip_address(media.rtcp_host))
