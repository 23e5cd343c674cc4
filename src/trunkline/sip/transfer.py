"""Blind transfer on the SIP thread: a REFER inside the answered dialog, which stays up until it is answered.

A 2xx (the carrier takes the caller over) ends our leg with BYE. Anything else (a trunk that refuses or does
not support REFER: 403, 405, 501, ...; or sippy's 408 when nothing answers) leaves the call up, so the agent
can tell the caller and carry on. sippy's own transfer (a disconnect with a redirect) hangs up whatever the
answer, which would drop the caller whenever the trunk has REFER disabled. A 2xx that comes after the asyncio
side stopped waiting (`abandon`) still ends our leg, since the carrier is moving the caller anyway, and is
logged and counted as late. A trunk that challenges the REFER (401/407) gets it once more with the trunk's
credentials (sippy answers challenges only for INVITE).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from sippy.SipAddress import SipAddress
from sippy.SipHeader import SipHeader
from sippy.SipReferredBy import SipReferredBy
from sippy.SipReferTo import SipReferTo
from sippy.SipURL import SipURL

from trunkline.logs import get_logger
from trunkline.sip.calls import END_TRANSFERRED, TransferAnswered

if TYPE_CHECKING:
    from trunkline.sip.stack import Dialog, SipStack

log = get_logger("trunkline.sip.transfer")


class Transfers:
    """Sends REFERs for answered calls and acts on their answers (SIP thread only)."""

    def __init__(self, stack: SipStack) -> None:
        self.stack = stack
        self._abandoned: set[int] = set()

    def refer(self, call_id: str, target: str, token: int) -> bool:
        """REFER the caller of an answered call to a number or SIP URI; its `TransferAnswered` will carry
        `token`. False when there is no such call or a transfer of it is already waiting for its answer."""
        dialog = self.stack.dialogs.get(call_id)
        if dialog is None or dialog.ended or dialog.ua.referring or not dialog.ua.isConnected():
            return False
        self._send(dialog, self._address(dialog, target), token, None)
        dialog.ua.referring = True
        self.stack.counters["sip.refer_sent"] += 1
        return True

    def _send(self, dialog: Dialog, target: SipAddress, token: int, challenge: Any) -> None:
        """One REFER in the dialog; with `challenge` ((challenge, qop) of a 401/407), with credentials."""
        ua = dialog.ua
        request = ua.genRequest("REFER", cqop=challenge)
        request.appendHeader(SipHeader(name="refer-to", body=SipReferTo(address=target.getCopy())))
        referred_by = SipReferredBy(address=SipAddress(url=ua.lUri.getUrl()))
        request.appendHeader(SipHeader(name="referred-by", body=referred_by))
        answered = partial(self._answered, dialog.call_id, token, target, challenge is not None)
        ua.newTransaction(request, resp_cb=answered)

    def _authenticate(self, dialog: Dialog, target: SipAddress, token: int, response: Any) -> bool:
        """Answer a 401/407 to our REFER once, with the trunk's credentials; False when we cannot."""
        trunk = self.stack.config.trunk(dialog.trunk)
        if trunk.username is None or trunk.password is None:
            return False
        name = "www-authenticate" if response.getSCode()[0] == 401 else "proxy-authenticate"
        for challenge in response.getHFBodys(name):
            supported, qop = challenge.supportedAlgorithm()
            if supported:
                dialog.ua.username, dialog.ua.password = trunk.username, trunk.password
                self._send(dialog, target, token, (challenge, qop))
                return True
        return False

    def abandon(self, token: int) -> None:
        """The asyncio side stopped waiting for this REFER's answer (and told the caller it failed)."""
        self._abandoned.add(token)

    def _address(self, dialog: Dialog, target: str) -> SipAddress:
        if target.startswith(("sip:", "sips:")):
            return SipAddress(url=SipURL(url=target))
        trunk = self.stack.config.trunk(dialog.trunk)
        host = trunk.registrar_domain if trunk.host else dialog.ua.rTarget.host
        return SipAddress(url=SipURL(username=target, host=host))

    def _answered(
        self, call_id: str, token: int, target: SipAddress, authenticated: bool, response: Any
    ) -> None:
        """sippy's callback for each response to our REFER (provisional ones included)."""
        try:
            status = int(response.getSCode()[0])
            if status < 200:
                return
            dialog = self.stack.dialogs.get(call_id)
            if (
                status in (401, 407)
                and not authenticated
                and dialog is not None
                and self._authenticate(dialog, target, token, response)
            ):
                return
            late = token in self._abandoned
            self._abandoned.discard(token)
            self.stack.post(TransferAnswered(call_id, token, status))
            if dialog is None:
                return
            dialog.ua.referring = False
            if status < 300:
                if late:
                    self.stack.counters["sip.refer_accepted_late"] += 1
                    log.warning("sip.transfer_accepted_late", status=status)
                self.stack.hangup(call_id, END_TRANSFERRED)
            else:
                self.stack.counters["sip.refer_refused"] += 1
                log.warning("sip.transfer_refused", status=status)
        except Exception:
            self.stack.counters["sip.event_failed"] += 1
            log.exception("sip.transfer_answer_failed")
