"""Inbound side of the SIP thread: the request hook (validation, routing, rejections) and UAS call events.

A new INVITE is checked against the trunks' allowed sources, routed by DID (from `To`, then the R-URI),
its SDP negotiated, then handed to a sippy UA which answers 100 and 180; the asyncio side opens the media
leg and calls `answer()`, which sends the 200 with our SDP. Everything here runs on the SIP thread.
"""

from __future__ import annotations

from typing import Any

from sippy.CCEvents import (
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventInfo,
    CCEventPreConnect,
    CCEventRing,
    CCEventTry,
    CCEventUpdate,
)
from sippy.MsgBody import MsgBody

from trunkline.logs import get_logger
from trunkline.sip.calls import (
    END_CANCELLED,
    END_FAILED,
    END_REJECTED,
    END_REMOTE_BYE,
    Admitted,
    CallConnected,
    CallEnded,
    IncomingCall,
    InfoDtmf,
    MediaChanged,
    Rejected,
)
from trunkline.sip.sdp import (
    SdpError,
    build_answer,
    build_offer,
    negotiate,
    negotiate_answer,
    parse_audio,
    renegotiate,
)
from trunkline.sip.stack import ALLOW, CONTACT_USER, KNOWN_METHODS, Dialog, DialogUA

log = get_logger("trunkline.sip.inbound")


class InboundCalls:
    """The transaction manager's request callback plus the event handling of inbound dialogs."""

    def __init__(self, stack: Any, validator: Any = None) -> None:
        self.stack = stack
        self._validator = validator

    # --- raw datagrams and dialog-less requests ------------------------------------------------------

    def prefilter(self, data: bytes | str, address: tuple[str, int], server: Any) -> bytes | None:
        """Pre-validate a raw datagram: canonical bytes for sippy, or None once answered or dropped."""
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
        if self._validator is None:
            return raw
        verdict = self._validator(raw, address)
        kind = type(verdict).__name__
        if kind == "Pass":
            return bytes(verdict.data)
        self.stack.counters[f"sip.precheck_{kind.lower()}"] += 1
        if kind == "Reply" and verdict.destination is not None:
            server.send_to(verdict.response_bytes, verdict.destination)
        return None

    def on_request(self, req: Any, t: Any) -> Any:
        """sippy's req_cb: requests that match no existing dialog."""
        method = req.getMethod()
        if req.getHFBody("to").getTag() is not None:
            if method == "ACK":
                return None
            return (req.genResponse(481, "Call/Transaction Does Not Exist"), None, None)
        if method == "INVITE":
            return self._invite(req, t)
        if method == "ACK":
            return None
        if method == "OPTIONS":
            return (self._with_allow(req.genResponse(200, "OK")), None, None)
        if method in ("BYE", "INFO", "REFER", "NOTIFY", "UPDATE", "PRACK"):
            return (req.genResponse(481, "Call/Transaction Does Not Exist"), None, None)
        if method in KNOWN_METHODS:
            return (self._with_allow(req.genResponse(405, "Method Not Allowed")), None, None)
        return (self._with_allow(req.genResponse(501, "Not Implemented")), None, None)

    def _with_allow(self, resp: Any) -> Any:
        self.stack.add_header(resp, "Allow", ALLOW)
        return resp

    def _invite(self, req: Any, t: Any) -> Any:
        source_host = req.getSource()[0]
        to_user = req.getHFBody("to").getUrl().username
        decision = self.stack.admission.decide(source_host, to_user, req.getRURI().username)
        if isinstance(decision, Rejected):
            return self._reject(req, decision)
        media = None
        body = req.getBody()
        if body is not None:
            try:
                if body.getType() != "application/sdp":
                    raise SdpError(415, "only application/sdp bodies are accepted")
                offer = parse_audio(str(body))
                media = negotiate(offer, decision.trunk.codecs, self.stack.config.media.ptime_ms)
            except SdpError as exc:
                self.stack.counters[f"sip.invite_rejected.{exc.status}"] += 1
                log.info("sip.invite_sdp_rejected", status=exc.status, why=exc.why)
                resp = req.genResponse(
                    exc.status, "Not Acceptable Here" if exc.status == 488 else "Bad Request"
                )
                if exc.status == 415:
                    resp.setSCode(415, "Unsupported Media Type")
                    self.stack.add_header(resp, "Accept", "application/sdp")
                return (resp, None, None)
        return self._start_dialog(req, t, decision, media, source_host)

    def _reject(self, req: Any, decision: Rejected) -> Any:
        self.stack.counters[f"sip.invite_rejected.{decision.status}"] += 1
        log.info("sip.invite_rejected", status=decision.status, silent=decision.silent)
        if decision.silent:
            return None
        resp = req.genResponse(decision.status, decision.reason)
        if decision.retry_after_s is not None:
            self.stack.add_header(resp, "Retry-After", str(decision.retry_after_s))
        return (resp, None, None)

    def _start_dialog(self, req: Any, t: Any, admitted: Admitted, media: Any, source_host: str) -> Any:
        call_id = str(req.getHFBody("call-id"))
        trunk = admitted.trunk
        dialog = Dialog(call_id, None, trunk.name, inbound=True, preference=trunk.codecs, media=media)
        caller = req.getHFBody("from").getUrl().username or ""
        incoming = IncomingCall(
            call_id, trunk.name, admitted.tenant, admitted.did, caller, source_host, media
        )
        ua = DialogUA(self.stack.gc, event_cb=lambda event, ua: self._on_event(dialog, event, incoming))
        ua.lContact = self.stack.contact(trunk.username or CONTACT_USER)
        dialog.ua = ua
        dialog.admitted = True
        self.stack.admission.acquire(trunk.name)
        self.stack.dialogs[call_id] = dialog
        log.info("sip.call_admitted", call_id=call_id, trunk=trunk.name, tenant=admitted.tenant)
        return ua.recvRequest(req, t)

    # --- commands from asyncio ----------------------------------------------------------------------

    def answer(self, call_id: str, host: str, port: int) -> None:
        """Media is ready: send 200 with our SDP (an answer, or our offer for a late-offer INVITE)."""
        dialog = self.stack.dialogs.get(call_id)
        if dialog is None or dialog.answered:
            return
        dialog.local = (host, port)
        dialog.answered = True
        if dialog.media is not None:
            sdp = build_answer(dialog.media, host, port, dialog.session_id, dialog.sdp_version)
        else:
            ptime = self.stack.config.media.ptime_ms
            sdp = build_offer(dialog.preference, host, port, dialog.session_id, dialog.sdp_version, ptime)
        # PreConnect: sippy reports the ACK (and a late-offer answer in it) only in this mode.
        dialog.ua.recvEvent(CCEventPreConnect((200, "OK", MsgBody(sdp))))
        log.info("sip.call_answered", call_id=call_id)

    def reject(self, call_id: str, status: int, reason: str) -> None:
        dialog = self.stack.dialogs.get(call_id)
        if dialog is None or dialog.answered:
            return
        dialog.ua.recvEvent(CCEventFail((status, reason)))
        self.stack.end(dialog, CallEnded(call_id, END_REJECTED, status))

    # --- sippy UA events ----------------------------------------------------------------------------

    def _on_event(self, dialog: Dialog, event: Any, incoming: IncomingCall) -> None:
        try:
            self._dispatch(dialog, event, incoming)
        except Exception:
            self.stack.counters["sip.event_failed"] += 1
            log.exception("sip.inbound_event_failed", event=type(event).__name__)

    def _dispatch(self, dialog: Dialog, event: Any, incoming: IncomingCall) -> None:
        if isinstance(event, CCEventTry):
            self.stack.post(incoming)
            dialog.ua.recvEvent(CCEventRing((180, "Ringing", None)))
        elif isinstance(event, CCEventConnect):
            self._connected(dialog, event)
        elif isinstance(event, CCEventUpdate):
            self.reinvite(dialog, event)
        elif isinstance(event, CCEventInfo):
            self.info(dialog, event)
        elif isinstance(event, CCEventDisconnect):
            reason = END_REMOTE_BYE if dialog.answered else END_CANCELLED
            self.stack.end(dialog, CallEnded(dialog.call_id, reason, None if dialog.answered else 487))
        elif isinstance(event, CCEventFail):
            self.stack.end(dialog, CallEnded(dialog.call_id, END_FAILED, event.getData()[0]))

    def _connected(self, dialog: Dialog, event: Any) -> None:
        """The ACK. For a late offer it carries the caller's answer: its codec is posted before the call
        counts as connected, so the leg runs that codec before the handler starts."""
        if dialog.media is None:
            body = event.getData()[2]
            try:
                if body is None:
                    raise SdpError(488, "late-offer ACK without SDP answer")
                answer = parse_audio(str(body))
                dialog.media = negotiate_answer(answer, dialog.preference, self.stack.config.media.ptime_ms)
            except SdpError as exc:
                self.stack.counters["sip.late_answer_rejected"] += 1
                log.warning("sip.late_answer_rejected", call_id=dialog.call_id, why=exc.why)
                self.stack.hangup(dialog.call_id, END_FAILED, exc.status, exc.why)
                return
            self.stack.post(MediaChanged(dialog.call_id, dialog.media, on_hold=answer.on_hold))
        self.stack.post(CallConnected(dialog.call_id))

    def info(self, dialog: Dialog, event: Any) -> None:
        """INFO in any of our dialogs: its body goes to asyncio, where DTMF bodies become DtmfDigit."""
        body = event.getData()
        if body is not None:
            self.stack.post(InfoDtmf(dialog.call_id, str(body), body.getType()))

    def reinvite(self, dialog: Dialog, event: Any) -> None:
        """A re-INVITE in any of our dialogs (hold/unhold, new address): answer it and report the change."""
        body = event.getData()
        try:
            if body is None or dialog.media is None or dialog.local is None:
                raise SdpError(488, "re-INVITE without usable SDP")
            offer = parse_audio(str(body))
            media = renegotiate(dialog.media, offer)
        except SdpError as exc:
            dialog.ua.recvEvent(CCEventFail((488, "Not Acceptable Here")))
            log.info("sip.reinvite_rejected", why=exc.why)
            return
        dialog.media = media
        dialog.sdp_version += 1
        sdp = build_answer(media, dialog.local[0], dialog.local[1], dialog.session_id, dialog.sdp_version)
        dialog.ua.recvEvent(CCEventConnect((200, "OK", MsgBody(sdp))))
        self.stack.post(MediaChanged(dialog.call_id, media, on_hold=offer.on_hold))
