"""Our own offers (late-offer 200, outbound INVITE) and reading the answer to them: every trunk codec is
offered, and the answer's first codec we offered is what the leg runs, with the answer's telephone-event."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.sip.sdp import SdpError, build_offer, negotiate_answer, parse_audio

NAMES = {0: "PCMU", 8: "PCMA", 9: "G722", 18: "G729"}


def answer(pts: str, extra: tuple[str, ...] = (), direction: str = "sendrecv") -> str:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.9",
        "s=-",
        "c=IN IP4 10.0.0.9",
        "t=0 0",
        f"m=audio 42000 RTP/AVP {pts}",
    ]
    lines += [
        "a=rtpmap:18 G729/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:96 telephone-event/8000",
    ]
    lines += [*extra, f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def test_offer_lists_every_trunk_codec_in_order_then_telephone_event() -> None:
    media = parse_audio(build_offer(("PCMU", "PCMA", "G722"), "127.0.0.1", 20000, 1, 1))
    assert media.payload_types == (0, 8, 9, 101)
    assert [media.encoding(pt) for pt in media.payload_types] == [
        ("PCMU", 8000),
        ("PCMA", 8000),
        ("G722", 8000),
        ("TELEPHONE-EVENT", 8000),
    ]


def test_the_answer_choosing_our_second_codec_runs_it() -> None:
    neg = negotiate_answer(parse_audio(answer("8 101")), ("PCMU", "PCMA"))
    assert (neg.codec, neg.payload_type, neg.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (neg.remote_host, neg.remote_port, neg.direction) == ("10.0.0.9", 42000, "sendrecv")


def test_the_answerers_order_wins_over_ours() -> None:
    neg = negotiate_answer(parse_audio(answer("8 0 101")), ("PCMU", "PCMA"))
    assert neg.codec == "PCMA"


def test_the_answers_telephone_event_payload_type_is_used() -> None:
    neg = negotiate_answer(parse_audio(answer("9 96")), ("PCMU", "G722"))
    assert (neg.codec, neg.sample_rate_hz, neg.dtmf_payload_type) == ("G722", 16000, 96)
    assert negotiate_answer(parse_audio(answer("0")), ("PCMU",)).dtmf_payload_type is None


def test_a_recvonly_answer_makes_us_sendonly() -> None:
    neg = negotiate_answer(parse_audio(answer("0 101", direction="recvonly")), ("PCMU",))
    assert neg.direction == "sendonly" and neg.we_send


@pytest.mark.parametrize("pts", ["9 101", "18", "101"])
def test_an_answer_without_a_codec_we_offered_is_488(pts: str) -> None:
    with pytest.raises(SdpError) as info:
        negotiate_answer(parse_audio(answer(pts)), ("PCMU", "PCMA"))
    assert info.value.status == 488 and "answered" in info.value.why


@given(
    st.lists(st.sampled_from([0, 8, 9, 18, 101]), min_size=1, max_size=5, unique=True),
    st.permutations(["PCMU", "PCMA", "G722"]).flatmap(
        lambda p: st.integers(1, 3).map(lambda n: tuple(p[:n]))
    ),
)
def test_the_choice_is_the_answers_first_codec_we_offered(pts: list[int], offered: tuple[str, ...]) -> None:
    media = parse_audio(answer(" ".join(map(str, pts))))
    ours = [NAMES[pt] for pt in pts if NAMES.get(pt) in offered]
    if not ours:
        with pytest.raises(SdpError):
            negotiate_answer(media, offered)
        return
    neg = negotiate_answer(media, offered)
    assert neg.codec == ours[0]
    assert neg.dtmf_payload_type == (101 if 101 in pts else None)
