"""`Call`: what an `on_call` handler gets — identity, the media leg, call events, hang-up and transfer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trunkline.sip.sdp import Negotiated
from trunkline.sip.transfer_waits import TRANSFER_ANSWER_TIMEOUT_S

if TYPE_CHECKING:
    from trunkline.sip.calls import CallTimers


@dataclass(frozen=True, slots=True)
class HoldChanged:
    """The remote side put the call on hold (True) or resumed it (False); our audio stops meanwhile."""

    on_hold: bool


@dataclass(frozen=True, slots=True)
class DialResult:
    """Outcome of `SipService.dial`: "answered", "busy", "no_answer" or "failed" (+ SIP status)."""

    outcome: str
    status: int | None
    call: Call


class Call:
    """One call as the asyncio side sees it. `events` carries DtmfDigit and HoldChanged, in order."""

    def __init__(
        self,
        call_id: str,
        direction: str,
        trunk: str,
        tenant: str | None,
        did: str,
        remote_number: str,
        service: Any,
        leg: Any,
    ) -> None:
        self.call_id = call_id
        self.direction = direction  # "inbound" | "outbound"
        self.trunk = trunk
        self.tenant = tenant
        self.did = did
        self.remote_number = remote_number
        self.leg = leg
        self.media: Negotiated | None = None
        self.on_hold = False
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.end_status: int | None = None
        self.timers: CallTimers | None = None
        self.supervised = False
        self.admitted = False  # passed the admission hook: counts against its tenant's cap
        self.on_call: Any = None
        self._service = service

    async def hangup(self) -> None:
        """Send BYE (or CANCEL/error before answer); `ended` is set once done."""
        await self._service.hangup(self.call_id)

    async def transfer(self, target: str, timeout_s: float = TRANSFER_ANSWER_TIMEOUT_S) -> bool:
        """Blind transfer to a number or SIP URI (REFER): True once the carrier accepted it (our leg then
        ends); False when it refused or did not answer within `timeout_s`, and the call goes on."""
        result: bool = await self._service.transfer(self.call_id, target, timeout_s)
        return result

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "direction": self.direction,
            "trunk": self.trunk,
            "tenant": self.tenant,
            "codec": self.media.codec if self.media else None,
            "on_hold": self.on_hold,
            "connected": self.connected.is_set(),
        }
