"""The asyncio side of transfers: one REFER per call awaiting its final answer, settled by that answer (not a
late one to an earlier REFER), by the call's end, or given up after a timeout (the SIP side is told, so a late
acceptance is logged as such)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from trunkline.logs import get_logger
from trunkline.sip.calls import TransferAnswered

log = get_logger("trunkline.sip.transfer")
TRANSFER_ANSWER_TIMEOUT_S = 8.0  # carriers answer REFER at once; sippy waits 32 s (dead air for the caller)


@dataclass(slots=True)
class _Pending:
    status: asyncio.Future[int]
    token: int

    def settle(self, status: int) -> None:
        if not self.status.done():
            self.status.set_result(status)


class TransferWaits:
    """Pending REFERs by call id; used on the event loop only."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._last_token = 0

    async def transfer(
        self, thread: Any, transfers: Any, call_id: str, target: str, timeout_s: float
    ) -> bool:
        """REFER on the SIP thread (`transfers.refer`), then wait for its answer: True for a 2xx."""
        if call_id in self._pending:  # one REFER at a time per call
            return False
        # the token is ours before the REFER leaves: its answer may reach the loop before thread.run returns
        self._last_token += 1
        pending = _Pending(asyncio.get_running_loop().create_future(), self._last_token)
        self._pending[call_id] = pending
        try:
            if not await thread.run(transfers.refer, call_id, target, pending.token):
                return False
            async with asyncio.timeout(timeout_s):
                status = await pending.status
        except TimeoutError:
            log.warning("sip.transfer_unanswered", timeout_s=timeout_s)
            thread.call(transfers.abandon, pending.token)
            return False
        except Exception:
            log.exception("sip.transfer_failed")
            return False
        finally:
            self._pending.pop(call_id, None)
        return 200 <= status < 300

    def answered(self, event: TransferAnswered) -> None:
        pending = self._pending.get(event.call_id)
        if pending is not None and pending.token == event.token:
            pending.settle(event.status)

    def call_ended(self, call_id: str, transferred: bool) -> None:
        """The call is gone: stop waiting for its REFER's answer."""
        pending = self._pending.get(call_id)
        if pending is not None:
            pending.settle(200 if transferred else 0)
