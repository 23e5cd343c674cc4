"""The asyncio face of one RTP leg: bounded async streams of inbound frames and events, playout control.

A `Leg` is created by `MediaEngine.open_leg()`; the engine's single pacer reads its socket and drives its pure
`RtpSession` every 20 ms. Nothing here touches the hot path except `Stream.wake()`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from trunkline.codecs.resample import Resampler
from trunkline.mediaserver.dtmf import DtmfDigit
from trunkline.mediaserver.jitterbuffer import JitterStats
from trunkline.mediaserver.outbound import PlayoutPosition
from trunkline.mediaserver.ports import PortLease
from trunkline.mediaserver.rtcp_report import RtcpReporter, RtcpView
from trunkline.mediaserver.session import Address, RtpSession, SessionCounters

T = TypeVar("T")


class LegClosed(Exception):
    """The leg was closed; no more audio can be played on it."""


class Stream(Generic[T]):
    """A bounded async stream over a deque the pacer appends to (oldest dropped when full; the producer
    counts). `async for item in stream` ends when the leg closes; `drain()` takes everything at once."""

    __slots__ = ("_closed", "_items", "_waiter", "_waiting")

    def __init__(self, items: deque[T], waiting: set[Stream[Any]] | None = None) -> None:
        self._items = items
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._waiting = waiting  # the engine's set of streams with a blocked consumer (woken after a tick)

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            if self._waiting is not None:
                self._waiting.add(self)
            try:
                await waiter
            finally:
                self._waiter = None
                if self._waiting is not None:
                    self._waiting.discard(self)
        return self._items.popleft()

    async def get(self, timeout_s: float | None = None) -> T:
        """The next item; raises StopAsyncIteration if closed, TimeoutError after `timeout_s`."""
        return await asyncio.wait_for(self.__anext__(), timeout_s)

    def drain(self) -> list[T]:
        """Everything queued now, oldest first (never waits)."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, items: list[T]) -> None:
        """Append items (the engine, for events) and wake a waiting consumer."""
        self._items.extend(items)
        self.wake()

    def wake(self) -> None:
        """Called by the engine after it appended items (or closed): resume a waiting consumer."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """No more items will come; a waiting consumer ends after the queued ones."""
        self._closed = True
        self.wake()


@dataclass(frozen=True, slots=True)
class LegStats:
    """A snapshot of one leg: datagram/frame counters, RTP receive statistics, jitter buffer, outbound."""

    counters: SessionCounters
    rtp_received: int  # distinct packets, duplicates excluded (RFC 3550 A.1 validation)
    rtp_lost: int  # expected minus received (cumulative, RFC 3550 A.3)
    rtp_duplicates: int
    interarrival_jitter_ms: float
    jitter_buffer: JitterStats
    outbound_queued_s: float
    remote: Address | None
    rtcp: RtcpView | None = None  # None: no RTCP socket


class Leg:
    """One call leg's media: open with `MediaEngine.open_leg()`, close with `close()` (idempotent)."""

    def __init__(
        self,
        session: RtpSession,
        lease: PortLease,
        on_close: Callable[[Leg], None],
        waiting: set[Stream[Any]] | None = None,
    ) -> None:
        self.session = session
        self._lease = lease
        self._on_close = on_close
        self._resamplers: dict[int, Resampler] = {}
        self.closed = False
        self.frames: Stream[np.ndarray] = Stream(session.inbound, waiting)
        self.dtmf: Stream[DtmfDigit] = Stream(deque(maxlen=256))
        self.playout: Stream[PlayoutPosition] = Stream(deque(maxlen=256))
        self.rtcp: RtcpReporter | None = None  # set by the engine when the leg has an RTCP socket
        self.remote_rtcp: Address | None = None  # the far end's SDP a=rtcp (RFC 3605); None: RTP port + 1

    # ------------------------------------------------------------------ identity

    @property
    def local_port(self) -> int:
        """Our RTP port (for the SDP); RTCP is local_port + 1."""
        return self._lease.port

    @property
    def sample_rate_hz(self) -> int:
        """PCM rate of inbound frames and of PlayoutPosition sample counts."""
        return self.session.sample_rate_hz

    @property
    def frame_samples(self) -> int:
        """Samples per 20 ms frame at `sample_rate_hz`."""
        return self.session.frame_samples

    @property
    def remote(self) -> Address | None:
        """Where we send (and whom we accept from)."""
        return self.session.remote

    @property
    def last_rtp_received_at(self) -> float | None:
        """Monotonic time of the last valid RTP packet from the remote (for an inactivity watchdog)."""
        return self.session.last_received_at

    @property
    def held(self) -> bool:
        """True while our RTP is stopped by hold()."""
        return self.session.held

    # ------------------------------------------------------------------ control

    def play(self, utterance_id: str, pcm: np.ndarray, sample_rate_hz: int, final: bool = False) -> None:
        """Queue a chunk of an utterance (int16 mono at `sample_rate_hz`, resampled to the leg's rate).
        Raises OutboundQueueFull (nothing queued) when the bound would be exceeded, LegClosed after close."""
        if self.closed:
            raise LegClosed("leg is closed")
        resampler = self._resampler(sample_rate_hz)
        pcm = resampler.process(np.asarray(pcm, dtype=np.int16))
        if final:
            pcm = np.concatenate((pcm, resampler.flush()))
        self.session.outbound.enqueue(utterance_id, pcm, final=final)

    def end_utterance(self, utterance_id: str) -> None:
        """No more chunks for this utterance: queue the resampler's tail and let it complete."""
        for resampler in self._resamplers.values():
            tail = resampler.flush()
            if tail.size:
                self.session.outbound.enqueue(utterance_id, tail)
        self.session.outbound.end_utterance(utterance_id)

    def _resampler(self, rate_hz: int) -> Resampler:
        resampler = self._resamplers.get(rate_hz)
        if resampler is None:
            resampler = self._resamplers[rate_hz] = Resampler(rate_hz, self.sample_rate_hz)
        return resampler

    def flush(self) -> list[PlayoutPosition]:
        """Barge-in: drop all queued audio now (the next tick sends silence) and report what was heard."""
        for resampler in self._resamplers.values():
            resampler.reset()
        return self.session.outbound.flush()

    def played(self, utterance_id: str) -> PlayoutPosition | None:
        """How far an open utterance has been sent; None once it completed (see `playout`) or if unknown."""
        return self.session.outbound.played(utterance_id)

    def hold(self) -> None:
        """Stop sending RTP (queued audio keeps its position); inbound continues."""
        self.session.hold()

    def unhold(self) -> None:
        """Resume sending where hold() stopped."""
        self.session.unhold()

    def set_remote(self, remote: Address | None, learn: bool = False, rtcp: Address | None = None) -> None:
        """New remote media address (re-INVITE); with `learn`, the first valid packet's source wins (NAT).
        `rtcp` is the SDP's a=rtcp address for our reports (None: the RTP port + 1)."""
        self.session.set_remote(remote, learn)
        self.remote_rtcp = rtcp

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send one RFC 4733 key press (needs the telephone-event payload type)."""
        self.session.send_dtmf(digit, duration_ms)

    def stats(self) -> LegStats:
        """Counters and statistics snapshot."""
        s = self.session
        rx = s.rx_stats
        return LegStats(
            counters=s.counters(),
            rtp_received=rx.received,
            rtp_lost=rx.cumulative_lost,
            rtp_duplicates=rx.duplicates,
            interarrival_jitter_ms=rx.jitter_s * 1000.0,
            jitter_buffer=s.jitter_stats(),
            outbound_queued_s=s.outbound.queued_s,
            remote=s.remote,
            rtcp=None if self.rtcp is None else RtcpView.of(self.rtcp),
        )

    def close(self) -> None:
        """Stop media, release the ports, end the streams; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._on_close(self)
        self._lease.release()
        for stream in (self.frames, self.dtmf, self.playout):
            stream.close()
