"""MediaEngine: the media core of one process: port allocation, one socket per leg, and one drift-free 20 ms
pacer that, for every leg at once, reads the socket, plays out a frame and sends a packet.

Why the pacer reads the sockets instead of a DatagramProtocol per leg: waking the event loop for every packet
(10,000/s with 200 legs) costs more than all the media work. Each tick drains every readable socket through
one epoll set (a bounded number of rounds, so a flood cannot starve the loop), and the kernel's receive
timestamps (SO_TIMESTAMPNS) keep arrival times exact for the jitter buffer and RTP statistics. Packets are
sent with the socket's own sendto (no transport layer). Once a second the legs fold their deferred per-packet
statistics in, and a fiftieth of them send the RTCP reports that are due (rtcp_legs.py). Run the loop on
uvloop for cheaper timers.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import time
from typing import Any

from trunkline.codecs.registry import create_codec
from trunkline.logs import get_logger
from trunkline.mediaserver.jitterbuffer import JitterBuffer
from trunkline.mediaserver.leg import Leg, Stream
from trunkline.mediaserver.pacing import Ticker, TickerStats
from trunkline.mediaserver.ports import PortAllocator
from trunkline.mediaserver.rtcp_legs import RtcpLegs
from trunkline.mediaserver.rtcp_report import REPORT_INTERVAL_S
from trunkline.mediaserver.session import FRAME_MS, Address, RtpSession
from trunkline.mediaserver.tick import outbound_packets, play_inbound

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export the constant
_TIMESPEC = struct.Struct("@qq")
_RECV_BYTES = 4096  # larger than any 20 ms payload we negotiate (L16/48k is 1,932 octets)
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: `flags & IntFlag` goes through enum code (~4 µs a packet)
_MAX_READ_ROUNDS = 8  # datagrams read per socket per tick at most; the kernel drops beyond its buffer
_FOLD_EVERY_TICKS = 50  # fold the legs' deferred per-packet statistics once a second

log = get_logger("trunkline.media")


class MediaEngine:
    """Owns the legs of one process. `await start()`, `open_leg(...)`, `await aclose()`."""

    def __init__(
        self,
        host: str,
        port_min: int,
        port_max: int,
        *,
        period_s: float = FRAME_MS / 1000,
        max_catch_up: int = 3,
        inbound_max_frames: int = 50,
        outbound_max_s: float = 120.0,
        jitter_min_delay_ms: float = 0.0,
        jitter_max_delay_ms: float = 400.0,
        kernel_timestamps: bool = True,
        rtcp_interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        self.ports = PortAllocator(host, port_min, port_max)
        self._period_s = period_s
        self._max_catch_up = max_catch_up
        self._inbound_max_frames = inbound_max_frames
        self._outbound_max_s = outbound_max_s
        self._jitter_delay_ms = (jitter_min_delay_ms, jitter_max_delay_ms)
        self._kernel_timestamps = kernel_timestamps
        self._legs: list[Leg] = []
        self._sessions: list[RtpSession] = []
        self._socks: list[socket.socket] = []  # each leg's RTP socket, aligned with _legs and _sessions
        # fd -> (socket.recvmsg, session.receive, session, is-RTCP): methods bound once, not per packet
        self._by_fd: dict[int, tuple[Any, Any, RtpSession, bool]] = {}
        self._waiting: set[Stream[Any]] = set()  # streams with a consumer blocked on them
        self.rtcp = RtcpLegs(rtcp_interval_s)
        self._epoll: select.epoll | None = None
        self._ticker: Ticker | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.tick_errors = 0
        self.tick_cpu_s = 0.0  # process CPU spent inside ticks (for the benchmark)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the pacer on the running loop."""
        if self._loop is not None:
            raise RuntimeError("MediaEngine already started")
        self._loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._ticker = Ticker(time.monotonic(), self._period_s, self._max_catch_up)
        self._schedule()

    async def aclose(self) -> None:
        """Close every leg and stop the pacer."""
        for leg in list(self._legs):
            leg.close()
        for _, future in self._tick_waiters:
            future.cancel()
        self._tick_waiters = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._loop = None

    @property
    def legs(self) -> list[Leg]:
        """The open legs (a copy)."""
        return list(self._legs)

    async def wait_ticks(self, count: int = 1) -> None:
        """Resume after `count` more pacer ticks have run (tests, watchdogs: a clock in media time)."""
        if self._loop is None or self._ticker is None:
            raise RuntimeError("MediaEngine.start() has not been awaited")
        future = self._loop.create_future()
        self._tick_waiters.append((self._ticker.ticks + count, future))
        await future

    def ticker_stats(self) -> TickerStats:
        """Pacer counters: ticks run, skipped (loop too late), worst lateness."""
        if self._ticker is None:
            return TickerStats(0, 0, 0, 0.0)
        return self._ticker.stats()

    # ------------------------------------------------------------------ legs

    def open_leg(
        self,
        codec_name: str,
        clock_rate_hz: int,
        payload_type: int,
        remote: Address | None = None,
        *,
        dtmf_payload_type: int | None = None,
        learn_remote: bool = False,
        remote_rtcp: Address | None = None,
    ) -> Leg:
        """Bind a port pair and start media for one leg. `remote` is the SDP's address; with `learn_remote`
        (NAT) the first valid packet's source replaces it once. `remote_rtcp` is the SDP's a=rtcp address
        (None: our reports go to the RTP port + 1). Raises PortsExhausted, UnsupportedCodecError."""
        if self._epoll is None:
            raise RuntimeError("MediaEngine.start() has not been awaited")
        codec = create_codec(codec_name, clock_rate_hz)
        session = RtpSession(
            codec,
            payload_type,
            remote=remote,
            learn_remote=learn_remote,
            dtmf_payload_type=dtmf_payload_type,
            jitter=self._jitter_buffer(codec.rtp_clock_rate_hz),
            inbound_max_frames=self._inbound_max_frames,
            outbound_max_s=self._outbound_max_s,
        )
        lease = self.ports.allocate()
        leg = Leg(session, lease, self._detach, self._waiting)
        leg.remote_rtcp = remote_rtcp
        for sock, is_rtcp in ((lease.rtp_socket, False), (lease.rtcp_socket, True)):
            if sock is None:
                continue
            if self._kernel_timestamps and not is_rtcp:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._by_fd[sock.fileno()] = (sock.recvmsg, session.receive, session, is_rtcp)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._legs.append(leg)
        self._sessions.append(session)
        self._socks.append(lease.rtp_socket)
        self.rtcp.add(leg, lease.rtcp_socket, time.monotonic())
        return leg

    def set_codec(
        self,
        leg: Leg,
        codec_name: str,
        clock_rate_hz: int,
        payload_type: int,
        *,
        dtmf_payload_type: int | None = None,
    ) -> None:
        """Run a leg opened for our multi-codec offer with the codec the answer chose; only before media
        flows (same port, so the SDP we sent stays true). Raises UnsupportedCodecError, RuntimeError."""
        codec = create_codec(codec_name, clock_rate_hz)
        jitter = self._jitter_buffer(codec.rtp_clock_rate_hz)
        leg.session.set_codec(codec, payload_type, dtmf_payload_type, jitter)

    def _jitter_buffer(self, clock_rate_hz: int) -> JitterBuffer:
        low, high = self._jitter_delay_ms
        return JitterBuffer(clock_rate_hz, FRAME_MS, min_delay_ms=low, max_delay_ms=high)

    def _detach(self, leg: Leg) -> None:
        """Leg.close() calls this before the sockets are closed."""
        tick_index = self._ticker.tick_index if self._ticker is not None else 0
        try:
            self.rtcp.remove(leg.session, tick_index, time.monotonic())
        except Exception:  # the leg must close whatever its last report does
            log.exception("media.rtcp_bye_failed")
        if leg in self._legs:
            index = self._legs.index(leg)
            del self._legs[index], self._sessions[index], self._socks[index]
        for fd, (_, _, session, _) in list(self._by_fd.items()):
            if session is leg.session:
                del self._by_fd[fd]
                if self._epoll is not None:
                    self._epoll.unregister(fd)

    # ------------------------------------------------------------------ pacer

    def _schedule(self) -> None:
        assert self._loop is not None and self._ticker is not None
        delay = self._ticker.next_deadline() - time.monotonic()
        self._timer = self._loop.call_later(max(0.0, delay), self._on_timer)

    def _on_timer(self) -> None:
        cpu0 = time.process_time()
        ticker = self._ticker
        if ticker is None:
            return
        try:
            now = time.monotonic()
            due = ticker.advance(now)
            if due:
                # send first: each leg's packet leaves at the same offset into every tick, however long
                # reading and playout take (they vary with what arrived)
                first = ticker.tick_index - due
                for k in range(due):
                    self._send(outbound_packets(self._sessions, first + k))
                self._read_sockets(now)
                for _ in range(due):
                    play_inbound(self._sessions, now)
                self._notify()
                self._fold_stats(ticker.tick_index, due)
                self.rtcp.send_due(self._sessions, ticker.tick_index, now)
                if self._tick_waiters:
                    self._wake_tick_waiters(ticker.ticks)
        except Exception:  # a bug in one tick must not stop media for every call
            self.tick_errors += 1
            log.exception("media.tick_failed")
        self._schedule()
        self.tick_cpu_s += time.process_time() - cpu0

    def _fold_stats(self, tick_index: int, due: int) -> None:
        """Each leg folds its deferred statistics once a second, 1/50 of the legs per tick: folding every
        leg in one tick stalled that tick by 15-25 ms at a few hundred legs."""
        for index in range(tick_index - min(due, _FOLD_EVERY_TICKS), tick_index):
            for session in self._sessions[index % _FOLD_EVERY_TICKS :: _FOLD_EVERY_TICKS]:
                session.fold_stats()

    def _read_sockets(self, now: float) -> None:
        """Read up to _MAX_READ_ROUNDS datagrams from every readable socket and hand them to the sessions."""
        epoll = self._epoll
        assert epoll is not None
        by_fd = self._by_fd
        unpack = _TIMESPEC.unpack_from
        offset = time.time() - now  # kernel timestamps are wall clock; sessions use the monotonic clock
        for _ in range(_MAX_READ_ROUNDS):
            ready = epoll.poll(0)
            if not ready:
                return
            for fd, _ in ready:
                recvmsg, receive, session, is_rtcp = by_fd[fd]
                try:
                    data, anc, flags, addr = recvmsg(_RECV_BYTES, _ANC_BYTES)
                except OSError:  # EAGAIN, or an ICMP error queued on the socket
                    continue
                if is_rtcp:
                    session.rtcp_received += 1
                    try:
                        self.rtcp.received(session, data, addr, now)
                    except Exception:
                        session.errors += 1
                elif flags & _MSG_TRUNC:
                    session.malformed += 1
                else:
                    try:
                        if anc:
                            sec, nsec = unpack(anc[0][2])
                            receive(data, addr, sec + nsec * 1e-9 - offset)
                        else:
                            receive(data, addr, now)
                    except Exception:  # a bug on odd input: count it, keep the leg and the tick going
                        session.errors += 1
                        if session.errors == 1:
                            log.exception("media.receive_failed", port=self._port_of(session))

    def _port_of(self, session: RtpSession) -> int | None:
        for leg in self._legs:
            if leg.session is session:
                return leg.local_port
        return None

    def _send(self, packets: list[bytes | None]) -> None:
        for sock, session, packet in zip(self._socks, self._sessions, packets, strict=True):
            if packet is None:
                continue
            try:
                sock.sendto(packet, session.remote)  # type: ignore[arg-type]
                session.sent += 1
            except OSError:  # EAGAIN (socket buffer full) or an ICMP error: count, never stop the pacer
                session.send_errors += 1

    def _wake_tick_waiters(self, ticks: int) -> None:
        waiting = []
        for target, future in self._tick_waiters:
            if future.done():
                continue
            if ticks >= target:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._tick_waiters = waiting

    def _notify(self) -> None:
        """Move DTMF digits and playout completions to the legs' streams and wake waiting consumers."""
        for leg, session in zip(self._legs, self._sessions, strict=True):
            if session.dtmf_in or session.outbound.finished:
                if session.dtmf_in:
                    leg.dtmf.extend(session.dtmf_in)
                    session.dtmf_in.clear()
                if session.outbound.finished:
                    leg.playout.extend(session.outbound.take_finished())
        if self._waiting:
            for stream in list(self._waiting):
                if len(stream):
                    stream.wake()
