"""Blind transfer on the SIP thread: a REFER inside the answered dialog, which stays up until it is answered.

A 2xx (the carrier takes the caller over) ends our leg with BYE. Anything else (a trunk that refuses or does
not support REFER: 403, 405, 501, ...; or sippy's 408 when nothing answers) leaves the call up, so the agent
can tell the caller and carry on. sippy's own transfer (a disconnect with a redirect) hangs up whatever the
answer, which would drop the caller whenever the trunk has REFER disabled.
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

    def refer(self, call_id: str, target: str) -> bool:
        """REFER the caller of an answered call to a number or SIP URI; False when there is no such call or
        a transfer of it is already waiting for its answer. The outcome is posted as `TransferAnswered`."""
        dialog = self.stack.dialogs.get(call_id)
        if dialog is None or dialog.ended or dialog.referring or not dialog.ua.isConnected():
            return False
        ua = dialog.ua
        request = ua.genRequest("REFER")
        refer_to = SipReferTo(address=self._address(dialog, target))
        request.appendHeader(SipHeader(name="refer-to", body=refer_to))
        referred_by = SipReferredBy(address=SipAddress(url=ua.lUri.getUrl()))
        request.appendHeader(SipHeader(name="referred-by", body=referred_by))
        ua.newTransaction(request, resp_cb=partial(self._answered, call_id))
        dialog.referring = True
        self.stack.counters["sip.refer_sent"] += 1
        return True

    def _address(self, dialog: Dialog, target: str) -> SipAddress:
        if target.startswith(("sip:", "sips:")):
            return SipAddress(url=SipURL(url=target))
        trunk = self.stack.config.trunk(dialog.trunk)
        host = trunk.registrar_domain if trunk.host else dialog.ua.rTarget.host
        return SipAddress(url=SipURL(username=target, host=host))

    def _answered(self, call_id: str, response: Any) -> None:
        """sippy's callback for each response to our REFER (provisional ones included)."""
        try:
            status = int(response.getSCode()[0])
            if status < 200:
                return
            self.stack.post(TransferAnswered(call_id, status))
            dialog = self.stack.dialogs.get(call_id)
            if dialog is None:
                return
            dialog.referring = False
            if status < 300:
                self.stack.hangup(call_id, END_TRANSFERRED)
            else:
                self.stack.counters["sip.refer_refused"] += 1
                log.warning("sip.transfer_refused", status=status)
        except Exception:
            self.stack.counters["sip.event_failed"] += 1
            log.exception("sip.transfer_answer_failed")
