"""SDP parse / negotiate / build: codec preference, telephone-event, directions, hold, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.sip.sdp import (
    NoCommonCodec,
    SdpError,
    build_answer,
    build_offer,
    negotiate,
    parse_audio,
    renegotiate,
)

PREF = ("PCMU", "PCMA", "G722")


def offer(pts: str = "0 8 9 101", extra: str = "", host: str = "10.0.0.5", port: int = 40000) -> str:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.5",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {pts}",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
    ]
    if extra:
        lines += extra.split("|")
    return "\r\n".join(lines) + "\r\n"


def test_prefers_our_order_and_keeps_telephone_event() -> None:
    neg = negotiate(parse_audio(offer("8 0 101")), PREF)
    assert (neg.codec, neg.payload_type, neg.dtmf_payload_type) == ("PCMU", 0, 101)
    assert (neg.remote_host, neg.remote_port, neg.direction) == ("10.0.0.5", 40000, "sendrecv")


def test_trunk_preference_changes_choice() -> None:
    neg = negotiate(parse_audio(offer("0 8 9 101")), ("G722", "PCMA"))
    assert (neg.codec, neg.payload_type, neg.sample_rate_hz, neg.clock_rate_hz) == ("G722", 9, 16000, 8000)


def test_dynamic_rtpmap_names_are_honoured() -> None:
    sdp = offer("96 101", "a=rtpmap:96 PCMA/8000")
    neg = negotiate(parse_audio(sdp), PREF)
    assert (neg.codec, neg.payload_type) == ("PCMA", 96)


def test_no_common_codec_is_488() -> None:
    with pytest.raises(NoCommonCodec) as info:
        negotiate(parse_audio(offer("18 101", "a=rtpmap:18 G729/8000")), PREF)
    assert info.value.status == 488
    assert "G729" in info.value.why


def test_ipv6_connection_is_488() -> None:
    sdp = offer().replace("c=IN IP4 10.0.0.5", "c=IN IP6 ::1")
    with pytest.raises(SdpError) as info:
        parse_audio(sdp)
    assert info.value.status == 488


@pytest.mark.parametrize(
    "bad",
    ["", "hello", "v=0\r\nm=audio x RTP/AVP 0\r\n", "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 300\r\n"],
)
def test_garbage_is_400(bad: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_audio(bad)
    assert info.value.status == 400


def test_no_audio_stream_is_488() -> None:
    sdp = offer().replace("m=audio 40000", "m=video 40000")
    with pytest.raises(SdpError) as info:
        parse_audio(sdp)
    assert info.value.status == 488


@pytest.mark.parametrize(
    ("attr", "ours", "hold"),
    [
        ("a=sendrecv", "sendrecv", False),
        ("a=sendonly", "recvonly", True),
        ("a=inactive", "inactive", True),
        ("a=recvonly", "sendonly", False),
    ],
)
def test_direction_and_hold(attr: str, ours: str, hold: bool) -> None:
    media = parse_audio(offer(extra=attr))
    assert media.on_hold is hold
    assert negotiate(media, PREF).direction == ours


def test_old_style_hold_with_zero_address() -> None:
    media = parse_audio(offer(host="0.0.0.0"))
    assert media.on_hold
    assert negotiate(media, PREF).direction == "inactive"


def test_session_level_direction_applies_to_media() -> None:
    sdp = offer().replace("t=0 0", "t=0 0\r\na=sendonly")
    assert parse_audio(sdp).direction == "sendonly"


def test_renegotiate_keeps_codec_on_unhold() -> None:
    first = negotiate(parse_audio(offer("8 0 101")), ("PCMA", "PCMU"))
    held = renegotiate(first, parse_audio(offer("0 8 101", "a=sendonly")))
    assert (held.codec, held.direction) == ("PCMA", "recvonly")
    resumed = renegotiate(held, parse_audio(offer("0 8 101")))
    assert (resumed.codec, resumed.direction) == ("PCMA", "sendrecv")


def test_answer_round_trips_through_parser() -> None:
    neg = negotiate(parse_audio(offer("0 101", "a=ptime:30")), PREF)
    text = build_answer(neg, "127.0.0.1", 20000, 42, 2)
    back = parse_audio(text)
    assert (back.host, back.port, back.payload_types, back.ptime_ms) == ("127.0.0.1", 20000, (0, 101), 30)
    assert negotiate(back, PREF).dtmf_payload_type == 101
    assert "o=trunkline 42 2 IN IP4 127.0.0.1" in text


def test_offer_lists_preference_then_telephone_event() -> None:
    text = build_offer(("PCMA", "PCMU"), "127.0.0.1", 20002, 1, 1)
    media = parse_audio(text)
    assert media.payload_types == (8, 0, 101)
    assert negotiate(media, ("PCMU",)).codec == "PCMU"


@given(st.text(max_size=300))
def test_parser_never_raises_anything_but_sdp_error(text: str) -> None:
    try:
        media = parse_audio(text)
    except SdpError as exc:
        assert exc.status in (400, 488)
    else:
        assert 0 < media.port < 65536


@given(st.lists(st.sampled_from([0, 8, 9, 18, 3, 101]), min_size=1, max_size=6, unique=True))
def test_negotiation_picks_first_preferred_offered(pts: list[int]) -> None:
    media = parse_audio(offer(" ".join(map(str, pts))))
    names = {0: "PCMU", 8: "PCMA", 9: "G722"}
    offered = [names[p] for p in pts if p in names]
    if not offered:
        with pytest.raises(NoCommonCodec):
            negotiate(media, PREF)
        return
    expected = next(n for n in PREF if n in offered)
    assert negotiate(media, PREF).codec == expected
