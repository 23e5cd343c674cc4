"""Outbound side of the SIP thread: dialling through a trunk (digest auth on 401/407).

`dial()` sends our offer to the trunk and reports progress (18x, early media), answer, or the outcome
(busy / no answer / failed). Everything here runs on the SIP thread; transfers are in transfer.py.
"""

from __future__ import annotations

from typing import Any

from sippy.CCEvents import (
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventInfo,
    CCEventRedirect,
    CCEventRing,
    CCEventTry,
    CCEventUpdate,
)
from sippy.MsgBody import MsgBody
from sippy.SipCallId import SipCallId

from trunkline.config.model import TrunkConfig
from trunkline.logs import get_logger
from trunkline.sip.calls import (
    END_FAILED,
    END_NO_ANSWER,
    END_REMOTE_BYE,
    CallConnected,
    CallEnded,
    OutboundAnswered,
    OutboundProgress,
    outcome_for_status,
)
from trunkline.sip.sdp import SdpError, build_offer, negotiate_answer, parse_audio
from trunkline.sip.stack import CONTACT_USER, Dialog, DialogUA

log = get_logger("trunkline.sip.outbound")


class _Try(CCEventTry):
    """CCEventTry that fixes the request URIs to the trunk's domain before the INVITE leaves."""

    domain: str = ""
    port: int | None = None

    def onUacSetupComplete(self, ua: Any) -> None:
        ua.rTarget.host, ua.rTarget.port = self.domain, self.port
        ua.rUri.getUrl().host = self.domain
        ua.lUri.getUrl().host = self.domain


class OutboundCalls:
    """Places calls through trunks."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def new_call_id(self) -> str:
        return str(SipCallId())

    def dial(self, call_id: str, trunk_name: str, number: str, host: str, port: int) -> None:
        """INVITE `number` through the trunk, offering our RTP leg at host:port."""
        trunk: TrunkConfig = self.stack.config.trunk(trunk_name)
        admission = self.stack.admission
        if trunk.host is None:
            self.stack.post(CallEnded(call_id, END_FAILED, None))
            return
        if admission.draining or not admission.has_room(trunk):  # the caps count calls both ways
            log.warning("sip.outbound_refused", trunk=trunk.name, draining=admission.draining)
            self.stack.post(CallEnded(call_id, END_FAILED, 503))
            return
        ua = DialogUA(
            self.stack.gc,
            username=trunk.username,
            password=trunk.password,
            nh_address=(trunk.host, trunk.port),
        )
        dialog = Dialog(call_id, ua, trunk.name, inbound=False, preference=trunk.codecs, local=(host, port))
        ua.event_cb = lambda event, _ua: self._on_event(dialog, event)
        ua.lContact = self.stack.contact(trunk.username or CONTACT_USER)
        self.stack.dialogs[call_id] = dialog
        admission.acquire(trunk.name)
        dialog.admitted = True
        dialog.timers.append(
            self.stack.timer(self.stack.config.sip.ring_timeout_s, self._ring_timeout, call_id)
        )
        try:
            ptime = self.stack.config.media.ptime_ms
            sdp = build_offer(dialog.preference, host, port, dialog.session_id, dialog.sdp_version, ptime)
            caller = trunk.caller_id or trunk.username or CONTACT_USER
            event = _Try((SipCallId(call_id), caller, number, MsgBody(sdp), None, None))
            event.domain = trunk.registrar_domain
            event.port = trunk.port if event.domain == trunk.host else None
            ua.recvEvent(event)
        except Exception:  # the INVITE could not be built or sent: free the slot and fail the dial
            log.exception("sip.dial_failed", trunk=trunk.name)
            self.stack.end(dialog, CallEnded(call_id, END_FAILED, None))

    def _ring_timeout(self, call_id: str) -> None:
        dialog = self.stack.dialogs.get(call_id)
        if dialog is not None and not dialog.answered:
            dialog.timers.clear()  # this timer has fired; nothing else to cancel
            dialog.ua.recvEvent(CCEventDisconnect())
            self.stack.end(dialog, CallEnded(call_id, END_NO_ANSWER, 408))

    def _on_event(self, dialog: Dialog, event: Any) -> None:
        if dialog.ended:
            return
        try:
            self._dispatch(dialog, event)
        except Exception:
            self.stack.counters["sip.event_failed"] += 1
            log.exception("sip.outbound_event_failed", event=type(event).__name__)

    def _dispatch(self, dialog: Dialog, event: Any) -> None:
        call_id = dialog.call_id
        if isinstance(event, CCEventRing):
            code, _reason, body = event.getData() or (180, "Ringing", None)
            self.stack.post(OutboundProgress(call_id, code, self._media(dialog, body)))
        elif isinstance(event, CCEventConnect):
            media = self._media(dialog, event.getData()[2])
            if media is None:
                self.stack.hangup(call_id, END_FAILED, 488, "No usable SDP answer")
                return
            dialog.answered = True
            for timer in dialog.timers:
                timer.cancel()
            dialog.timers.clear()
            dialog.media = media
            self.stack.post(OutboundAnswered(call_id, media))
            self.stack.post(CallConnected(call_id))
        elif isinstance(event, CCEventFail | CCEventRedirect):
            data = event.getData()
            status = int(data[0]) if data else 500
            self.stack.end(dialog, CallEnded(call_id, outcome_for_status(status), status))
        elif isinstance(event, CCEventUpdate):
            self.stack.inbound.reinvite(dialog, event)
        elif isinstance(event, CCEventInfo):
            self.stack.inbound.info(dialog, event)
        elif isinstance(event, CCEventDisconnect):
            reason = END_REMOTE_BYE if dialog.answered else END_FAILED
            self.stack.end(dialog, CallEnded(call_id, reason))

    def _media(self, dialog: Dialog, body: Any) -> Any:
        if body is None:
            return None
        try:
            return negotiate_answer(
                parse_audio(str(body)), dialog.preference, self.stack.config.media.ptime_ms
            )
        except SdpError as exc:
            log.info("sip.outbound_sdp_rejected", why=exc.why)
            return None
