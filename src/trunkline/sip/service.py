"""`SipService`: the asyncio face of signalling. It owns the sippy stack (on the SIP thread), one media leg
per call (from the media engine), and one supervising task per call that runs the `on_call` handler.

Wiring (composition root):
    service = SipService()
    await service.start(loop, config, media_engine, on_call)   # on_call(call: Call) -> Awaitable[None]
    ...                                                        # SIGTERM:
    await service.drain()                                      # 503 new calls, wait, unregister
    await service.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from trunkline.config.model import Config
from trunkline.logs import bind_call, get_logger
from trunkline.mediaserver.dtmf import DtmfInfoError, parse_dtmf_info
from trunkline.sip.call import Call, DialResult, HoldChanged
from trunkline.sip.calls import (
    END_DRAIN_TIMEOUT,
    END_FAILED,
    END_LOCAL,
    END_TRANSFERRED,
    CallConnected,
    CallEnded,
    CallTimers,
    IncomingCall,
    InfoDtmf,
    MediaChanged,
    OutboundAnswered,
    OutboundProgress,
    RegistrationChanged,
    TransferAnswered,
)
from trunkline.sip.medialeg import LegAdapter
from trunkline.sip.sdp import Negotiated
from trunkline.sip.sipthread import EventSink, SipThread
from trunkline.sip.status_file import status_path, write_status, write_status_forever
from trunkline.sip.transfer_waits import TRANSFER_ANSWER_TIMEOUT_S, TransferWaits
from trunkline.sip.watchdog import wait_event, watch_call

log = get_logger("trunkline.sip.service")
OnCall = Callable[[Call], Awaitable[None]]
# before answering: the call and how many of its tenant's calls are admitted → None, or (status, reason)
Admit = Callable[[Call, int], tuple[int, str] | None]
CONNECT_TIMEOUT_S = 32.0
LINGER_S = 4.0  # at shutdown, how long our last requests may take to be answered
LINGER_POLL_S = 0.02


class SipService:
    """Signalling for the whole process: inbound calls, outbound dialling, registrations, drain."""

    def __init__(self) -> None:
        self._thread: SipThread | None = None
        self._stack: Any = None
        self._sink: EventSink | None = None
        self._config: Config | None = None
        self._legs: LegAdapter | None = None
        self._on_call: OnCall | None = None
        self._admit: Admit | None = None
        self._calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dials: dict[str, asyncio.Future[DialResult]] = {}
        self._transfers = TransferWaits()
        self.registrations: dict[str, RegistrationChanged] = {}
        self._registration_changed = asyncio.Condition()
        self._status_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(
        self,
        loop: asyncio.AbstractEventLoop,
        config: Config,
        media_engine: Any,
        on_call: OnCall,
        validator: Any = None,
        admit: Admit | None = None,
    ) -> None:
        """Bind the SIP port, start registrations; calls are handed to `on_call` once answered. `admit`
        is asked before an inbound call is answered, with how many of its tenant's calls are admitted: a
        (status, reason) it returns refuses the call (480 when nobody serves the number, 486 over the
        tenant's limit) instead of answering and hanging up."""
        self._config, self._on_call, self._admit = config, on_call, admit
        self._legs = LegAdapter(media_engine, config)
        self._thread = SipThread.get()
        self._sink = EventSink(loop, self._on_event)
        if validator is None:
            validator = _default_validator()
        self._stack = await self._thread.run(_build_stack, config, self._sink.post, validator)
        await self._thread.run(self._stack.register_all)
        self._status_task = asyncio.create_task(write_status_forever(status_path(config), self.status))
        log.info("sip.started", host=config.sip.listen_host, port=config.sip.listen_port)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Refuse new calls (503 + Retry-After) now, let calls end (up to the drain timeout), unregister."""
        assert self._thread is not None and self._config is not None
        await self._thread.run(self._stack.set_draining)
        timeout = self._config.server.drain_timeout_s if timeout_s is None else timeout_s
        log.info("sip.draining", calls=len(self._calls), timeout_s=timeout)
        if self._calls:
            waits = [asyncio.ensure_future(c.ended.wait()) for c in self._calls.values()]
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for fut in pending:
                fut.cancel()
        if self._calls:
            await self._thread.run(self._stack.hangup_all, END_DRAIN_TIMEOUT)
            for call in list(self._calls.values()):
                self._finish(call, CallEnded(call.call_id, END_DRAIN_TIMEOUT))
        await self.unregister()

    async def unregister(self) -> None:
        assert self._thread is not None
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._thread.call(self._stack.unregister_all, lambda: loop.call_soon_threadsafe(_resolve, done))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 10)

    async def aclose(self) -> None:
        """Hang up whatever is left, close the SIP socket, wait for call tasks."""
        if self._thread is None:
            return
        if self._status_task is not None:
            self._status_task.cancel()
        await self._thread.run(self._stack.hangup_all, END_LOCAL)
        await self._linger()
        await self._thread.run(self._stack.shutdown)
        for call in list(self._calls.values()):
            self._finish(call, CallEnded(call.call_id, END_FAILED))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sink is not None:
            self._sink.close()
        if self._config is not None:  # the last word: no calls, registrations removed
            with contextlib.suppress(Exception):
                write_status(status_path(self._config), await self.status())
        self._thread = None

    async def _linger(self) -> None:
        """Keep the stack up until our last BYEs are answered (or LINGER_S): closing at once would stop
        their retransmissions, and a single lost BYE would leave the far end's dialog up."""
        assert self._thread is not None
        deadline = time.monotonic() + LINGER_S
        while time.monotonic() < deadline:
            if not await self._thread.run(self._stack.pending_client_transactions):
                return
            await asyncio.sleep(LINGER_POLL_S)

    # --- public API -----------------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def wait_registration(
        self, trunk: str, states: tuple[str, ...], timeout_s: float
    ) -> RegistrationChanged:
        """Wait until `trunk`'s registration reaches one of `states` (raises TimeoutError)."""
        async with self._registration_changed:
            await asyncio.wait_for(
                self._registration_changed.wait_for(
                    lambda: trunk in self.registrations and self.registrations[trunk].state in states
                ),
                timeout_s,
            )
        return self.registrations[trunk]

    async def dial(self, number: str, trunk: str, on_call: OnCall | None = None) -> DialResult:
        """Call `number` through `trunk`; returns once answered (the call then runs `on_call`) or failed."""
        assert self._thread is not None and self._legs is not None
        call_id = await self._thread.run(self._stack.outbound.new_call_id)
        assert self._config is not None
        leg = self._legs.open_for_offer(self._config.trunk(trunk).codecs)
        call = Call(call_id, "outbound", trunk, None, number, number, self, leg)
        call.on_call = on_call
        self._calls[call_id] = call
        future: asyncio.Future[DialResult] = asyncio.get_running_loop().create_future()
        self._dials[call_id] = future
        host, port = self._legs.local_address(leg)
        self._thread.call(self._stack.outbound.dial, call_id, trunk, number, host, port)
        return await future

    async def hangup(self, call_id: str) -> None:
        if self._thread is not None:
            await self._thread.run(self._stack.hangup, call_id)

    async def transfer(self, call_id: str, target: str, timeout_s: float = TRANSFER_ANSWER_TIMEOUT_S) -> bool:
        """Blind transfer (REFER) of an answered call to a number or SIP URI. True once the carrier accepted
        it (our leg then ends); False, with the call still up, when it refused or did not answer in time."""
        assert self._thread is not None
        return await self._transfers.transfer(self._thread, self._stack.transfers, call_id, target, timeout_s)

    async def status(self) -> dict[str, Any]:
        assert self._thread is not None
        snap: dict[str, Any] = await self._thread.run(self._stack.snapshot)
        snap["calls"] = [c.summary() for c in self._calls.values()]
        return snap

    # --- events from the SIP thread (on the loop) --------------------------------------------------

    def _on_event(self, event: Any) -> None:
        try:
            self._dispatch(event)
        except Exception:
            log.exception("sip.event_handling_failed", event=type(event).__name__)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, RegistrationChanged):
            self.registrations[event.trunk] = event
            asyncio.get_running_loop().create_task(self._notify_registration())
            return
        if isinstance(event, IncomingCall):
            self._incoming(event)
            return
        if isinstance(event, TransferAnswered):
            self._transfers.answered(event)
            return
        call = self._calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, CallConnected):
            call.connected.set()
        elif isinstance(event, MediaChanged):
            self._media_changed(call, event)
        elif isinstance(event, InfoDtmf):
            try:
                call.events.put_nowait(parse_dtmf_info(event.body, event.content_type))
            except DtmfInfoError:
                log.info("sip.info_not_dtmf")
        elif isinstance(event, OutboundProgress):
            if event.media is not None:  # early media: the first answer to our offer
                self._take_media(call, event.media)
        elif isinstance(event, OutboundAnswered):
            self._outbound_answered(call, event)
        elif isinstance(event, CallEnded):
            self._finish(call, event)

    async def _notify_registration(self) -> None:
        async with self._registration_changed:
            self._registration_changed.notify_all()

    def _incoming(self, event: IncomingCall) -> None:
        call = Call(event.call_id, "inbound", event.trunk, event.tenant, event.did, event.caller, self, None)
        call.media = event.media
        self._calls[event.call_id] = call
        self._spawn(self._run_inbound(call))

    def _media_changed(self, call: Call, event: MediaChanged) -> None:
        if not self._take_media(call, event.media):
            return
        if call.leg is not None and self._legs is not None and call.on_hold != event.on_hold:
            self._legs.set_hold(call.leg, event.on_hold)
        if call.on_hold != event.on_hold:
            call.on_hold = event.on_hold
            if call.timers is not None:
                call.timers.set_hold(event.on_hold, time.monotonic())
            call.events.put_nowait(HoldChanged(event.on_hold))

    def _take_media(self, call: Call, media: Negotiated) -> bool:
        """New session parameters for the leg: the first answer to our own offer (late-offer ACK, outbound
        18x/200) also sets its codec; later ones move the address. False when the leg cannot take the
        codec: the call is then ended (BYE or CANCEL with a Reason)."""
        if call.leg is not None and self._legs is not None:
            if call.media is None:
                try:
                    self._legs.set_codec(call.leg, media)
                except Exception as exc:
                    log.warning("sip.answer_codec_failed", codec=media.codec, error=str(exc))
                    assert self._thread is not None
                    self._thread.call(self._stack.hangup, call.call_id, END_FAILED, 488, "Codec not usable")
                    self._finish(call, CallEnded(call.call_id, END_FAILED, 488))
                    return False
            self._legs.update(call.leg, media)
        call.media = media
        return True

    def _outbound_answered(self, call: Call, event: OutboundAnswered) -> None:
        if not self._take_media(call, event.media):
            return
        future = self._dials.pop(call.call_id, None)
        if future is not None and not future.done():
            future.set_result(DialResult("answered", 200, call))
        call.connected.set()
        self._spawn(self._supervise(call, call.on_call))

    def _finish(self, call: Call, event: CallEnded) -> None:
        if call.ended.is_set():
            return
        call.end_reason, call.end_status = event.reason, event.status
        call.ended.set()
        self._calls.pop(call.call_id, None)
        self._transfers.call_ended(call.call_id, event.reason == END_TRANSFERRED)
        future = self._dials.pop(call.call_id, None)
        if future is not None and not future.done():
            future.set_result(DialResult(event.reason, event.status, call))
        if call.leg is not None and self._legs is not None and not call.supervised:
            self._legs.close(call.leg)
        log.info("sip.call_ended", call_id=call.call_id, reason=event.reason, status=event.status)

    # --- per-call supervision -----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_inbound(self, call: Call) -> None:
        """Open our leg, send 200, wait for the ACK, then supervise the call."""
        assert self._legs is not None and self._thread is not None
        bind_call(call_id=call.call_id, tenant_id=call.tenant)
        if self._admit is not None:
            # counted and marked in one step (no await between): of two INVITEs at once, one is admitted
            others = sum(1 for c in self._calls.values() if c.tenant == call.tenant and c.admitted)
            refusal = self._admit(call, others)
            if refusal is not None:
                self._thread.call(self._stack.inbound.reject, call.call_id, *refusal)
                return
        call.admitted = True
        try:
            if call.media is not None:
                call.leg = self._legs.open_for_answer(call.media)
            else:  # late offer: our 200 offers every codec of the trunk, the ACK's answer picks one
                assert self._config is not None
                call.leg = self._legs.open_for_offer(self._config.trunk(call.trunk).codecs)
        except Exception as exc:
            log.warning("sip.leg_open_failed", error=str(exc))
            self._thread.call(self._stack.inbound.reject, call.call_id, 503, "Service Unavailable")
            return
        if call.ended.is_set():
            self._legs.close(call.leg)
            return
        delay = self._config.sip.answer_delay_s if self._config else 0.0
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), delay)
        if call.ended.is_set():  # cancelled while ringing
            self._legs.close(call.leg)
            return
        host, port = self._legs.local_address(call.leg)
        self._thread.call(self._stack.inbound.answer, call.call_id, host, port)
        await self._supervise(call, self._on_call)

    async def _supervise(self, call: Call, on_call: OnCall | None) -> None:
        """Run the handler and the watchdog until the call ends; always close the leg."""
        assert self._config is not None and self._legs is not None
        call.supervised = True
        sip = self._config.sip
        try:
            if not await wait_event(call.connected, call.ended, CONNECT_TIMEOUT_S):
                await self.hangup(call.call_id)
                return
            call.timers = CallTimers(time.monotonic(), sip.rtp_timeout_s, sip.max_call_duration_s)
            async with asyncio.TaskGroup() as group:
                handler = group.create_task(self._handle(call, on_call))
                last_rtp = partial(self._legs.last_rtp_at, call.leg)
                watchdog = group.create_task(watch_call(call, last_rtp, partial(self._hang_up, call.call_id)))
                forward = group.create_task(self._legs.forward_dtmf(call.leg, call.events))
                await call.ended.wait()
                for task in (handler, watchdog, forward):
                    task.cancel()
        finally:
            if call.leg is not None:
                self._legs.close(call.leg)

    async def _hang_up(self, call_id: str, reason: str) -> None:
        assert self._thread is not None
        await self._thread.run(self._stack.hangup, call_id, reason)

    async def _handle(self, call: Call, on_call: OnCall | None) -> None:
        if on_call is None:
            await call.ended.wait()
            return
        try:
            await on_call(call)
        except Exception:
            log.exception("sip.on_call_failed", call_id=call.call_id)
        if not call.ended.is_set():
            await self.hangup(call.call_id)


def _build_stack(config: Config, post: Callable[[Any], None], validator: Any) -> Any:
    from trunkline.sip.stack import SipStack

    return SipStack(config, post, validator)


def _default_validator() -> Any:
    """The pre-validator for raw SIP datagrams, if that module is installed in this tree."""
    try:
        from trunkline.sip import validate
    except ImportError:
        return None
    return validate.precheck


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
