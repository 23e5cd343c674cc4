"""An impairing UDP relay for RTP tests and benchmarks (127.0.0.1 only).

Two sockets: side A faces peer A, side B faces peer B. What arrives on one side leaves from the other, so each
peer sees a single remote address (symmetric RTP works through it). Packets travelling A→B (and, if given,
B→A) are impaired by a seeded plan: dropped, delayed by jitter, held long enough to arrive late, or
duplicated. The first `clean_head` packets are left alone (stream validation) and `stop_impairing()` ends
the impaired stretch, so end-of-window accounting stays exact. Every decision is recorded (`RelayRecord`),
so a test can compare the receiver's counters with exactly what the network did.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass, field

_SEQ = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Impairment:
    """Per-packet probabilities and delays for one direction."""

    loss: float = 0.0  # probability a packet is dropped
    late: float = 0.0  # probability a packet is held for `late_delay_s` (arrives after its playout time)
    duplicate: float = 0.0  # probability a second copy follows `duplicate_gap_s` later
    jitter_s: float = 0.0  # every forwarded packet is delayed by uniform(0, jitter_s)
    late_delay_s: float = 0.6
    duplicate_gap_s: float = 0.005
    max_consecutive_missing: int = 2  # keeps losses short enough to be concealed, not silenced
    clean_head: int = 10
    seed: int = 1


@dataclass(frozen=True, slots=True)
class RelayRecord:
    """What the relay did with one datagram."""

    index: int  # arrival order in this direction
    seq: int | None  # RTP sequence number, None if too short to be RTP
    action: str  # "forward", "drop", "late", "duplicate" (forwarded twice)
    delay_s: float  # delay of the (first) forwarded copy
    arrived_at: float  # loop time
    data: bytes = field(repr=False, default=b"")


@dataclass(slots=True)
class _Direction:
    impairment: Impairment | None
    rng: random.Random
    records: list[RelayRecord] = field(default_factory=list)
    missing_run: int = 0
    forwarded: int = 0  # datagrams actually sent on (duplicates count twice)
    impairing: bool = True


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: ImpairRelay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._on_datagram(self.name, data, addr)


class ImpairRelay:
    """`await start()`, point peer A at `a_address` and peer B at `b_address`, `set_peers(a, b)`."""

    def __init__(self, a_to_b: Impairment | None = None, b_to_a: Impairment | None = None) -> None:
        self._dirs = {
            "a": _Direction(a_to_b, random.Random(a_to_b.seed if a_to_b else 0)),
            "b": _Direction(b_to_a, random.Random(b_to_a.seed if b_to_a else 0)),
        }
        self._sides: dict[str, _Side] = {}
        self._socks: dict[str, socket.socket] = {}
        self._peers: dict[str, tuple[str, int] | None] = {"a": None, "b": None}
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.strangers = 0  # datagrams from neither peer (dropped)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name in ("a", "b"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            side = _Side(self, name)
            await self._loop.create_datagram_endpoint(lambda side=side: side, sock=sock)  # type: ignore[misc]
            self._sides[name] = side
            self._socks[name] = sock

    def _address(self, name: str) -> tuple[str, int]:
        transport = self._sides[name].transport
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        return (host, port)

    @property
    def a_address(self) -> tuple[str, int]:
        """Where peer A sends (and what A must accept packets from)."""
        return self._address("a")

    @property
    def b_address(self) -> tuple[str, int]:
        """Where peer B sends (and what B must accept packets from)."""
        return self._address("b")

    def set_peers(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        """The peers' real addresses (their RTP ports)."""
        if a[0] != "127.0.0.1" or b[0] != "127.0.0.1":
            raise ValueError("the relay only talks to 127.0.0.1")
        self._peers = {"a": a, "b": b}

    def records(self, direction: str = "a") -> list[RelayRecord]:
        """Decisions for datagrams that arrived from peer `direction` ("a": A→B), in arrival order."""
        return list(self._dirs[direction].records)

    def stop_impairing(self, direction: str = "a") -> None:
        """Forward everything from now on untouched (so the end of a test's window is exact)."""
        self._dirs[direction].impairing = False

    @property
    def pending(self) -> int:
        """Delayed datagrams not yet sent on."""
        return len(self._pending)

    def forwarded(self, direction: str = "a") -> int:
        """Datagrams from peer `direction` actually delivered to the other peer so far."""
        return self._dirs[direction].forwarded

    def inject(self, direction: str, data: bytes) -> None:
        """Send raw bytes to the peer opposite `direction` from the relay's address (e.g. garbage to B)."""
        out = "b" if direction == "a" else "a"
        target = self._peers[out]
        assert target is not None
        self._socks[out].sendto(data, target)  # the raw socket: asyncio's transport skips empty datagrams

    def _on_datagram(self, name: str, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self._peers[name]:
            self.strangers += 1
            return
        d = self._dirs[name]
        out = "b" if name == "a" else "a"
        assert self._loop is not None
        seq = _SEQ.unpack_from(data, 2)[0] if len(data) >= 12 else None
        action, delay = self._decide(d, len(d.records))
        d.records.append(RelayRecord(len(d.records), seq, action, delay, self._loop.time(), bytes(data)))
        if action != "drop":
            self._forward(d, out, data, delay)
        if action == "duplicate":
            assert d.impairment is not None
            self._forward(d, out, data, delay + d.impairment.duplicate_gap_s)

    def _decide(self, d: _Direction, index: int) -> tuple[str, float]:
        imp = d.impairment
        if imp is None or not d.impairing or index < imp.clean_head:
            return "forward", 0.0
        r = d.rng.random()
        jitter = d.rng.uniform(0.0, imp.jitter_s) if imp.jitter_s else 0.0
        may_miss = d.missing_run < imp.max_consecutive_missing
        if may_miss and r < imp.loss:
            d.missing_run += 1
            return "drop", 0.0
        if may_miss and r < imp.loss + imp.late:
            d.missing_run += 1
            return "late", imp.late_delay_s + jitter
        d.missing_run = 0
        if r < imp.loss + imp.late + imp.duplicate:
            return "duplicate", jitter
        return "forward", jitter

    def _forward(self, d: _Direction, out: str, data: bytes, delay: float) -> None:
        transport = self._sides[out].transport
        target = self._peers[out]
        assert transport is not None and target is not None and self._loop is not None

        def send() -> None:
            self._pending.discard(handle)
            d.forwarded += 1
            transport.sendto(data, target)

        if delay <= 0:
            d.forwarded += 1
            transport.sendto(data, target)
            return
        handle = self._loop.call_later(delay, send)
        self._pending.add(handle)

    async def aclose(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for side in self._sides.values():
            if side.transport is not None:
                side.transport.close()
