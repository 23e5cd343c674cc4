"""The sippy stack for one SipService, living on the SIP thread: transactions, dialogs, registrations.

Import this module only from code running on the SIP thread (after `SipThread.get()`): importing sippy
anywhere else first would bind its dispatcher to the wrong thread. Every public method here runs on the
SIP thread; `SipService` reaches them through `SipThread.call/run`.
"""

from __future__ import annotations

import functools
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sippy.CCEvents import CCEventDisconnect
from sippy.SipAddress import SipAddress
from sippy.SipConf import SipConf
from sippy.SipContact import SipContact
from sippy.SipExpires import SipExpires
from sippy.SipFrom import SipFrom
from sippy.SipGenericHF import SipGenericHF
from sippy.SipHeader import SipHeader
from sippy.SipReason import SipReason
from sippy.SipRequest import SipRequest
from sippy.SipTo import SipTo
from sippy.SipTransactionManager import SipTransactionManager
from sippy.SipURL import SipURL
from sippy.Time.Timeout import Timeout
from sippy.UA import UA
from sippy.UaStateDead import UaStateDead
from sippy.UaStateDisconnected import UaStateDisconnected
from sippy.UaStateFailed import UaStateFailed
from sippy.Udp_server import Udp_server, Udp_server_opts

from trunkline.config.model import Config, TrunkConfig
from trunkline.logs import get_logger
from trunkline.sip.calls import END_LOCAL, Admission, CallEnded, RegistrationChanged
from trunkline.sip.registration import RegistrationAgent
from trunkline.sip.sdp import Negotiated

log = get_logger("trunkline.sip.stack")
_SIPFRAG_STATUS = re.compile(r"\s*SIP/2\.0 ([1-6]\d\d)\b")

ALLOW = "INVITE, ACK, CANCEL, BYE, INFO, REFER, NOTIFY, OPTIONS"
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "UPDATE", "PRACK", "NOTIFY", "INFO", "REFER", "BYE"}
)
CONTACT_USER = "trunkline"


class _NamedHF(SipGenericHF):
    """A generic header that keeps its canonical spelling ("Retry-After", not sippy's "Retry-after")."""

    def __init__(self, body: str, name: str) -> None:
        super().__init__(body, name)
        self._canonical = name

    def getCanName(self, name: str, compact: bool = False) -> str:
        return self._canonical

    def getCopy(self) -> _NamedHF:
        return _NamedHF(self.body, self._canonical)


class _NullSipLogger:
    """sippy's own message logger wants the main thread or a file; we log through structlog instead."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        pass


def _udp_server_class(advertised_host: str | None) -> type:
    """A Udp_server that advertises the public address in Via when one is configured (NAT)."""
    if advertised_host is None:
        return Udp_server

    class _AdvertisingUdpServer(Udp_server):
        def getSIPaddr(self) -> Any:
            return ((advertised_host, self.uopts.laddress[1]), self.transport)

    return _AdvertisingUdpServer


class _TransactionManager(SipTransactionManager):
    """Runs our pre-validator on raw datagrams and never lets one bad datagram raise into sippy."""

    def __init__(
        self, global_config: dict[str, Any], req_cb: Any, prefilter: Any, counters: Counter[str]
    ) -> None:
        self._prefilter = prefilter
        self._counters = counters
        super().__init__(global_config, req_cb)

    def handleIncoming(self, data_in: Any, ra: Any, server: Any, rtime: Any) -> None:
        try:
            data = self._prefilter(data_in, ra.address, server)
            if data is not None:
                super().handleIncoming(data, ra, server, rtime)
        except Exception:
            self._counters["sip.datagram_failed"] += 1
            log.debug("sip.datagram_failed", exc_info=True)


class DialogUA(UA):
    """sippy's UA, except that requests in a dialog that is over (a NOTIFY with a REFER's progress arriving
    after our BYE, say) get 481 instead of sippy's 500, and a NOTIFY gets 481 unless it reports the progress
    of our REFER while that still awaits its answer (`referring`): UDP may deliver the carrier's first
    NOTIFY before its 202 (RFC 3515), and that one gets 200. We hold no other subscriptions, and sippy would
    not answer a NOTIFY at all while connected."""

    referring = False  # our REFER awaits its final answer (set by sip/transfer.py)

    def recvRequest(self, req: Any, sip_t: Any) -> Any:
        method = req.getMethod()
        over = isinstance(self.state, UaStateDisconnected | UaStateFailed | UaStateDead)
        if method == "NOTIFY" and not over and self.referring and _refer_event(req):
            log.info("sip.refer_progress", status=_sipfrag_status(req))
            return (req.genResponse(200, "OK", server=self.local_ua), None, None)
        if method == "NOTIFY" or (over and method != "BYE"):
            log.info("sip.request_answered_481", method=method, state=str(self.state))
            resp = req.genResponse(481, "Call/Transaction Does Not Exist", server=self.local_ua)
            return (resp, None, None)
        return super().recvRequest(req, sip_t)


def _refer_event(req: Any) -> bool:
    """The request's Event package is `refer` (RFC 3515), parameters aside."""
    return any(str(body).split(";")[0].strip().lower() == "refer" for body in req.getHFBodys("event"))


def _sipfrag_status(req: Any) -> int | None:
    """The status code of a refer NOTIFY's message/sipfrag body ("SIP/2.0 100 Trying" → 100), if any."""
    match = _SIPFRAG_STATUS.match(str(req.getBody() or ""))
    return int(match.group(1)) if match else None


@dataclass(slots=True)
class Dialog:
    """Our view of one call's sippy UA; touched only on the SIP thread."""

    call_id: str
    ua: Any
    trunk: str
    inbound: bool
    preference: tuple[str, ...]
    media: Negotiated | None = None
    local: tuple[str, int] | None = None
    sdp_version: int = 1
    session_id: int = field(default_factory=lambda: int(time.time() * 1000) & 0x7FFFFFFF)
    admitted: bool = False
    ended: bool = False
    answered: bool = False
    timers: list[Any] = field(default_factory=list)


class SipStack:
    """Owns sippy's transaction manager, our dialogs and registration agents (SIP thread only)."""

    def __init__(self, config: Config, post: Callable[[Any], None], validator: Any = None) -> None:
        from trunkline.sip.inbound import InboundCalls
        from trunkline.sip.outbound import OutboundCalls
        from trunkline.sip.transfer import Transfers

        self.config = config
        self.post = post
        self.counters: Counter[str] = Counter()
        sip = config.sip
        SipConf.my_uaname = sip.user_agent
        self.gc: dict[str, Any] = {
            "_sip_address": sip.listen_host,
            "_sip_port": sip.listen_port,
            "_sip_logger": _NullSipLogger(),
        }
        self.admission = Admission(
            config.trunks, sip.retry_after_s, sip.unknown_source == "drop", max_total=config.server.max_calls
        )
        self.dialogs: dict[str, Dialog] = {}
        self.agents: dict[str, RegistrationAgent] = {}
        self.registration: dict[str, RegistrationChanged] = {}
        self.inbound = InboundCalls(self, validator)
        self.outbound = OutboundCalls(self)
        self.transfers = Transfers(self)
        tm_class: Any = type("_TM", (_TransactionManager,), {})
        tm_class.model_udp_server = (_udp_server_class(sip.public_host), Udp_server_opts)
        self.tm = tm_class(self.gc, self.inbound.on_request, self.inbound.prefilter, self.counters)
        self.gc["_sip_tm"] = self.tm

    # --- helpers for the call and registration code -------------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def timer(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        return Timeout(fn, delay_s, 1, *args)

    def contact(self, user: str = CONTACT_USER) -> Any:
        sip = self.config.sip
        url = SipURL(username=user, host=sip.advertised_host, port=sip.listen_port)
        return SipContact(address=SipAddress(url=url))

    def add_header(self, msg: Any, name: str, body: Any) -> None:
        if isinstance(body, str):
            msg.appendHeader(SipHeader(name=name, body=_NamedHF(body, name)))
        else:
            msg.appendHeader(SipHeader(name=name, body=body))

    def send_request(self, req: Any, on_response: Callable[[Any], None]) -> None:
        self.tm.newTransaction(req, on_response)

    def build_register(self, trunk: TrunkConfig, user: str, expires: int, call_id: Any, cseq: int) -> Any:
        """A REGISTER for `trunk` binding our contact with `Expires` on the wire (0 removes the binding)."""
        assert trunk.host is not None and trunk.username is not None
        domain = trunk.registrar_domain
        aor = SipURL(username=trunk.username, host=domain)
        fr0m = SipFrom(address=SipAddress(url=aor.getCopy()))
        fr0m.genTag()
        contact = self.contact(user)
        contact.address.params["expires"] = str(expires)
        contact.address.params_order.append("expires")
        req = SipRequest(
            method="REGISTER",
            ruri=SipURL(host=domain, port=trunk.port if domain == trunk.host else None),
            fr0m=fr0m,
            to=SipTo(address=SipAddress(url=aor.getCopy())),
            contact=contact,
            callid=call_id,
            cseq=cseq,
            target=((trunk.host, trunk.port), "udp"),
            user_agent=self.config.sip.user_agent,
            expires=SipExpires(number=expires),
        )
        return req

    def end(self, dialog: Dialog, event: CallEnded) -> None:
        """Bookkeeping when a call ends, whoever ended it; posts `CallEnded` exactly once."""
        if dialog.ended:
            return
        dialog.ended = True
        for timer in dialog.timers:
            timer.cancel()
        dialog.timers.clear()
        if dialog.admitted:
            self.admission.release(dialog.trunk)
        self.dialogs.pop(dialog.call_id, None)
        self.post(event)

    # --- commands from asyncio ----------------------------------------------------------------------

    def register_all(self) -> None:
        for trunk in self.config.trunks:
            if trunk.register and trunk.name not in self.agents:
                user = trunk.username or CONTACT_USER
                agent = RegistrationAgent(self, trunk, user, self._registration_changed)
                self.agents[trunk.name] = agent
                agent.start()

    def _registration_changed(self, event: RegistrationChanged) -> None:
        self.registration[event.trunk] = event
        log.info("sip.registration", trunk=event.trunk, state=event.state, detail=event.detail)
        self.post(event)

    def unregister_all(self, done: Callable[[], None], timeout_s: float = 5.0) -> None:
        """Send Expires: 0 for every registered trunk; `done` runs once all answered or `timeout_s` passed."""
        pending = set(self.agents)
        finished = False

        def one_done(name: str) -> None:
            nonlocal finished
            pending.discard(name)
            if not pending and not finished:
                finished = True
                done()

        def give_up() -> None:
            nonlocal finished
            if not finished:
                finished = True
                done()

        if not pending:
            done()
            return
        self.timer(timeout_s, give_up)
        for name, agent in list(self.agents.items()):
            agent.unregister(functools.partial(one_done, name))
        self.agents.clear()

    def hangup(self, call_id: str, reason: str = END_LOCAL, cause: int | None = None, text: str = "") -> None:
        """BYE (CANCEL before the answer); with `cause`, an RFC 3326 `Reason: SIP;cause=...;text=...`."""
        dialog = self.dialogs.get(call_id)
        if dialog is None:
            return
        event = CCEventDisconnect()
        if cause is not None:
            text = text.replace('"', "'")
            event.reason_rfc3326 = SipReason(protocol="SIP", cause=cause, reason=text or None)
        dialog.ua.recvEvent(event)
        self.end(dialog, CallEnded(call_id, reason, cause))

    def hangup_all(self, reason: str) -> None:
        for call_id in list(self.dialogs):
            self.hangup(call_id, reason)

    def set_draining(self) -> None:
        self.admission.draining = True

    def snapshot(self) -> dict[str, Any]:
        """Status for `trunkline status`: registrations, calls per trunk, counters."""
        return {
            "draining": self.admission.draining,
            "active_calls": dict(self.admission.active),
            "max_calls": self.admission.max_total,
            "dialogs": len(self.dialogs),
            "registrations": {
                name: {"state": ev.state, "detail": ev.detail, "expires_s": ev.expires_s}
                for name, ev in self.registration.items()
            },
            "counters": dict(self.counters),
        }

    def pending_client_transactions(self) -> int:
        """Our requests (BYE, CANCEL, ...) still awaiting a final response: sippy drops each on its final."""
        return len(self.tm.tclient)

    def shutdown(self) -> None:
        self.hangup_all(END_LOCAL)
        self.tm.shutdown()
