"""Call-level decisions and events, free of sippy and asyncio.

`Admission` decides what a new INVITE deserves (which trunk and tenant, or which rejection); `CallTimers`
ends calls whose BYE was lost (RTP inactivity, maximum duration). The event dataclasses are what the SIP
thread posts to the asyncio loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trunkline.config.model import TrunkConfig, did_digits
from trunkline.sip.sdp import Negotiated

# --- events posted from the SIP thread to asyncio -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """An admitted INVITE; `media` is None for a late offer (INVITE without SDP)."""

    call_id: str
    trunk: str
    tenant: str
    did: str
    caller: str
    source_host: str
    media: Negotiated | None


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """The remote side changed the session (re-INVITE hold/unhold, late-offer answer in the ACK)."""

    call_id: str
    media: Negotiated
    on_hold: bool


@dataclass(frozen=True, slots=True)
class CallConnected:
    """The dialog is confirmed (ACK received for our 200, or 200 received for our INVITE)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class OutboundProgress:
    """A provisional response to our INVITE (180/183); `media` set when it carried early-media SDP."""

    call_id: str
    status: int
    media: Negotiated | None


@dataclass(frozen=True, slots=True)
class OutboundAnswered:
    call_id: str
    media: Negotiated


@dataclass(frozen=True, slots=True)
class InfoDtmf:
    """A DTMF digit received by SIP INFO (application/dtmf-relay or application/dtmf)."""

    call_id: str
    body: str
    content_type: str


@dataclass(frozen=True, slots=True)
class TransferAnswered:
    """The final answer to our REFER: 2xx means the carrier took the caller (our leg then ends)."""

    call_id: str
    token: int  # which REFER (see Transfers.refer)
    status: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over; `reason` is one of the END_* strings, `status` the SIP code when one applies."""

    call_id: str
    reason: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    trunk: str
    state: str  # "registering" | "registered" | "failed" | "forbidden" | "unregistered"
    detail: str = ""
    expires_s: int | None = None


END_REMOTE_BYE = "remote_hangup"
END_LOCAL = "local_hangup"
END_CANCELLED = "cancelled"
END_REJECTED = "rejected"
END_TRANSFERRED = "transferred"
END_RTP_TIMEOUT = "rtp_timeout"
END_MAX_DURATION = "max_duration"
END_DRAIN_TIMEOUT = "drain_timeout"
END_BUSY = "busy"
END_NO_ANSWER = "no_answer"
END_FAILED = "failed"

BUSY_CODES = frozenset({486, 600})
NO_ANSWER_CODES = frozenset({408, 480, 487})


def outcome_for_status(status: int) -> str:
    """Map a final failure response to our outbound outcome: busy, no answer, or failed."""
    if status in BUSY_CODES:
        return END_BUSY
    if status in NO_ANSWER_CODES:
        return END_NO_ANSWER
    return END_FAILED


# --- admission -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    trunk: TrunkConfig
    did: str
    tenant: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """How to refuse an INVITE; `silent` means send nothing at all."""

    status: int
    reason: str
    retry_after_s: int | None = None
    silent: bool = False


@dataclass(slots=True)
class Admission:
    """Routes new INVITEs to trunks/tenants and enforces source ACLs, the per-trunk and process-wide call
    caps (`max_total`: what the box can serve well; None, no cap) and draining."""

    trunks: tuple[TrunkConfig, ...]
    retry_after_s: int = 30
    drop_unknown_sources: bool = False
    draining: bool = False
    max_total: int | None = None
    active: dict[str, int] = field(default_factory=dict)

    def decide(self, source_host: str, to_user: str | None, ruri_user: str | None) -> Admitted | Rejected:
        """Decide for one INVITE from `source_host` dialling `to_user` (or the R-URI user)."""
        trunks = [t for t in self.trunks if t.allows(source_host)]
        if not trunks:
            return Rejected(403, "Forbidden", silent=self.drop_unknown_sources)
        if self.draining:
            return Rejected(503, "Service Unavailable", self.retry_after_s)
        for user in (to_user, ruri_user):
            if not user or not did_digits(user):
                continue
            for trunk in trunks:
                tenant = trunk.tenant_for(user)
                if tenant is None:
                    continue
                if not self.has_room(trunk):
                    return Rejected(503, "Service Unavailable", self.retry_after_s)
                return Admitted(trunk, _e164(user), tenant)
        return Rejected(404, "Not Found")

    def has_room(self, trunk: TrunkConfig) -> bool:
        """One more call fits both the trunk's cap and the process-wide one."""
        if self.max_total is not None and self.total() >= self.max_total:
            return False
        return self.active.get(trunk.name, 0) < trunk.max_calls

    def acquire(self, trunk: str) -> None:
        self.active[trunk] = self.active.get(trunk, 0) + 1

    def release(self, trunk: str) -> None:
        self.active[trunk] = max(0, self.active.get(trunk, 0) - 1)

    def total(self) -> int:
        return sum(self.active.values())


def _e164(user: str) -> str:
    return "+" + did_digits(user)


# --- timers ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CallTimers:
    """Ends a call whose BYE was lost: no RTP for `rtp_timeout_s` (unless held) or `max_duration_s` in all."""

    started_at: float
    rtp_timeout_s: float
    max_duration_s: float
    last_rtp_at: float | None = None
    on_hold: bool = False

    def rtp_seen(self, now: float) -> None:
        self.last_rtp_at = now

    def set_hold(self, on_hold: bool, now: float) -> None:
        self.on_hold = on_hold
        self.last_rtp_at = now  # restart the inactivity clock on every hold change

    def next_deadline(self) -> float:
        deadline = self.started_at + self.max_duration_s
        if not self.on_hold:
            deadline = min(deadline, (self.last_rtp_at or self.started_at) + self.rtp_timeout_s)
        return deadline

    def expired(self, now: float) -> str | None:
        """The END_* reason if the call must end now, else None."""
        if now >= self.started_at + self.max_duration_s:
            return END_MAX_DURATION
        if not self.on_hold and now >= (self.last_rtp_at or self.started_at) + self.rtp_timeout_s:
            return END_RTP_TIMEOUT
        return None
