"""Pure SIP decisions: admission (ACL, DID routing, caps, draining), call timers, registration policy."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given
from hypothesis import strategies as st

from trunkline.config.model import TrunkConfig
from trunkline.sip.calls import (
    END_BUSY,
    END_FAILED,
    END_MAX_DURATION,
    END_NO_ANSWER,
    END_RTP_TIMEOUT,
    Admission,
    Admitted,
    CallTimers,
    Rejected,
    outcome_for_status,
)
from trunkline.sip.registration import RegistrationPolicy

CARRIER = TrunkConfig(
    name="carrier",
    host="192.0.2.1",
    dids=(("+15550100", "acme"), ("+15550101", "globex")),
    allowed_sources=(ipaddress.ip_network("192.0.2.0/24"),),
    max_calls=2,
)
LOCAL = TrunkConfig(
    name="local", dids=(("+15550199", "demo"),), allowed_sources=(ipaddress.ip_network("127.0.0.1"),)
)


def admission(drop: bool = False) -> Admission:
    return Admission((CARRIER, LOCAL), retry_after_s=17, drop_unknown_sources=drop)


def test_routes_did_from_to_then_ruri() -> None:
    adm = admission()
    got = adm.decide("192.0.2.9", "+15550101", "alice")
    assert isinstance(got, Admitted) and (got.trunk.name, got.tenant, got.did) == (
        "carrier",
        "globex",
        "+15550101",
    )
    got = adm.decide("192.0.2.9", "anonymous", "15550100")
    assert isinstance(got, Admitted) and got.tenant == "acme"


def test_did_of_another_trunk_is_not_routed_from_this_source() -> None:
    assert admission().decide("192.0.2.9", "+15550199", None) == Rejected(404, "Not Found")


def test_unknown_source_is_403_or_silently_dropped() -> None:
    assert admission().decide("203.0.113.5", "+15550100", None) == Rejected(403, "Forbidden")
    assert admission(drop=True).decide("203.0.113.5", "+15550100", None).silent  # type: ignore[union-attr]


def test_cap_and_draining_give_503_with_retry_after() -> None:
    adm = admission()
    adm.acquire("carrier")
    adm.acquire("carrier")
    assert adm.decide("192.0.2.9", "+15550100", None) == Rejected(503, "Service Unavailable", 17)
    assert isinstance(adm.decide("127.0.0.1", "+15550199", None), Admitted)  # other trunk unaffected
    adm.release("carrier")
    assert isinstance(adm.decide("192.0.2.9", "+15550100", None), Admitted)
    adm.draining = True
    assert adm.decide("127.0.0.1", "+15550199", None) == Rejected(503, "Service Unavailable", 17)


def test_process_cap_counts_every_trunk() -> None:
    adm = Admission((CARRIER, LOCAL), retry_after_s=17, max_total=2)
    adm.acquire("carrier")
    assert isinstance(adm.decide("127.0.0.1", "+15550199", None), Admitted)
    adm.acquire("local")
    assert adm.decide("127.0.0.1", "+15550199", None) == Rejected(503, "Service Unavailable", 17)
    assert not adm.has_room(CARRIER) and not adm.has_room(LOCAL)
    adm.release("carrier")
    assert adm.has_room(LOCAL) and isinstance(adm.decide("192.0.2.9", "+15550100", None), Admitted)


def test_outcomes() -> None:
    assert outcome_for_status(486) == END_BUSY
    assert outcome_for_status(480) == END_NO_ANSWER
    assert outcome_for_status(403) == END_FAILED


def test_timers_rtp_inactivity_and_hold() -> None:
    timers = CallTimers(started_at=100.0, rtp_timeout_s=10.0, max_duration_s=60.0)
    assert timers.next_deadline() == 110.0
    timers.rtp_seen(105.0)
    assert timers.expired(114.9) is None
    assert timers.expired(115.0) == END_RTP_TIMEOUT
    timers.set_hold(True, 115.0)
    assert timers.expired(150.0) is None  # no RTP expected while held
    assert timers.next_deadline() == 160.0
    assert timers.expired(160.0) == END_MAX_DURATION


def test_registration_refreshes_at_80_percent_and_stops_on_403() -> None:
    policy = RegistrationPolicy(expires_s=600, rng=random.Random(1))
    policy.start(0.0)
    assert policy.next_deadline() == 0.0
    policy.sent()
    policy.succeeded(10.0, 300)
    assert policy.state == "registered" and policy.next_deadline() == 10.0 + 240.0
    policy.failed(20.0, 403)
    assert policy.state == "forbidden" and policy.next_deadline() is None


@given(st.integers(0, 2**32 - 1), st.lists(st.sampled_from([408, 500, 503, 480]), min_size=1, max_size=12))
def test_backoff_grows_with_jitter_and_is_bounded(seed: int, statuses: list[int]) -> None:
    policy = RegistrationPolicy(
        expires_s=600, backoff_base_s=2.0, backoff_max_s=300.0, rng=random.Random(seed)
    )
    now = 0.0
    for n, status in enumerate(statuses, start=1):
        policy.failed(now, status)
        deadline = policy.next_deadline()
        assert deadline is not None
        delay = deadline - now
        ceiling = min(300.0, 2.0 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling  # jitter in [50%, 100%] of the exponential step
        now = deadline
    policy.succeeded(now, 100)
    assert policy.failures == 0
