"""Where RTCP reports go and who may steer them (rtcp_legs.may_latch / report_target), hosts as data: the
cases that need a second host (a=rtcp elsewhere, a stranger, a far end that moved) are decided here, so the
socket tests stay on 127.0.0.1. Addresses are documentation ranges (RFC 5737); nothing is sent.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.rtcp_legs import may_latch, report_target

FAR_RTP = ("192.0.2.10", 40000)
DECLARED = ("198.51.100.20", 50001)  # the far end's a=rtcp on another host
STRANGER = "203.0.113.66"


def test_before_the_far_end_is_known_nobody_latches_and_nothing_is_sent() -> None:
    assert not may_latch(FAR_RTP[0], None, None)
    assert not may_latch(DECLARED[0], None, DECLARED)
    assert report_target(None, None, None) is None


def test_default_is_rtp_port_plus_one() -> None:
    assert report_target(None, FAR_RTP, None) == ("192.0.2.10", 40001)


def test_a_rtcp_beats_the_default_even_on_another_host() -> None:
    assert report_target(None, FAR_RTP, DECLARED) == DECLARED


def test_only_the_rtp_host_or_the_a_rtcp_host_may_latch() -> None:
    assert may_latch(FAR_RTP[0], FAR_RTP, None)
    assert may_latch(DECLARED[0], FAR_RTP, DECLARED)
    assert not may_latch(DECLARED[0], FAR_RTP, None)  # no a=rtcp declared: that host is a stranger
    assert not may_latch(STRANGER, FAR_RTP, DECLARED)


def test_a_latch_on_the_a_rtcp_host_wins_over_the_declared_port() -> None:
    nat_mapped = (DECLARED[0], 61000)
    assert report_target(nat_mapped, FAR_RTP, DECLARED) == nat_mapped


def test_a_latch_is_dropped_once_a_reinvite_moves_the_far_end() -> None:
    latched = ("192.0.2.10", 40001)
    moved = ("192.0.2.99", 42000)
    assert report_target(latched, FAR_RTP, None) == latched
    assert report_target(latched, moved, None) == ("192.0.2.99", 42001)
    assert report_target(latched, moved, ("192.0.2.10", 40001)) == latched  # still declared: still valid


hosts = st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.9"])
addresses = st.tuples(hosts, st.integers(1, 65534))


@given(st.none() | addresses, st.none() | addresses, st.none() | addresses)
def test_reports_never_go_to_a_host_the_signalling_did_not_name(
    latched: tuple[str, int] | None, remote: tuple[str, int] | None, declared: tuple[str, int] | None
) -> None:
    target = report_target(latched, remote, declared)
    named = {a[0] for a in (remote, declared) if a is not None}
    assert (target is None) == (not named)
    if target is not None:
        assert target[0] in named
