"""Impairing UDP relay on 127.0.0.1: one RTP stream is delayed and dropped per a seeded trace, in real time.

The relay sits in front of the receiver's RTP port. After `start` arrives on stdin, the k-th RTP packet from the
sender becomes trace packet k (bench/traces.py): the relay rewrites its sequence number and timestamp to the
trace's, replaces the payload with a marker that names (k, half) so the receiver's played audio can be attributed
to packets, and releases it at t0 + arrival_k (t0 = receive time of packet 0 − phase), or drops it when the trace
lost it. The release schedule is the trace's own, independent of the sender's send jitter; a packet that reaches
the relay after its slot is released on receipt (counted). Packets from the receiver go back to the sender
unimpaired; RTCP on port + 1 is absorbed. When the slice is done the relay prints one JSON log line and exits.

Run: python bench/trace_relay.py --trace spiky --listen-port 40000 --forward-port 40010   (then "start" on stdin)
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from bench.traces import PACKET_INTERVAL_S, TRACES, TracePacket
except ImportError:  # run as a script: python bench/trace_relay.py
    from traces import PACKET_INTERVAL_S, TRACES, TracePacket  # type: ignore[no-redef]

PAYLOAD_BYTES = 160  # 20 ms of G.711 at 8 kHz
HALF_SAMPLES = 80  # pjmedia's G.711 codec and jitter buffer work in 10 ms frames
_MARKER_SEED = 0x7A3C_0000
_RTP_HEADER = struct.Struct("!BBHII")
IDLE_EXIT_S = 5.0
ANCHOR_SLACK_S = 0.015  # t0 may precede the first packet by this much (traces never deliver in < 20 ms)


def marker_payload(index: int) -> bytes:
    """The µ-law payload stamped on trace packet `index`: two pseudo-random halves, one per 10 ms."""
    return b"".join(random.Random(_MARKER_SEED + 2 * index + h).randbytes(HALF_SAMPLES) for h in (0, 1))


@dataclass(slots=True)
class TraceSchedule:
    """Pure core: maps sender packets to trace packets and says when (or whether) each is released.

    t0 (the virtual send time of packet 0) is set on the first packet: `phase_s` before it, or, when the
    receiver's tick grid is known, the first time within 15 ms before the first packet at which the receiver
    ticks fall `phase_s` after the virtual send grid (so the tick phase is chosen, not left to chance)."""

    trace: list[TracePacket]
    phase_s: float
    grid_s: float | None = None
    t0: float | None = None
    received: list[float] = field(default_factory=list)
    scheduled: list[float | None] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.received) >= len(self.trace)

    def _anchor(self, now: float) -> float:
        if self.grid_s is None:
            return now - self.phase_s
        base = self.grid_s - self.phase_s
        return base + PACKET_INTERVAL_S * math.ceil((now - ANCHOR_SLACK_S - base) / PACKET_INTERVAL_S)

    def on_packet(self, datagram: bytes, now: float) -> tuple[float, bytes] | None:
        """Take the sender's next packet; returns (release time, rewritten datagram), or None if dropped."""
        if self.done or len(datagram) < _RTP_HEADER.size or datagram[0] >> 6 != 2:
            return None
        k = len(self.received)
        if self.t0 is None:
            self.t0 = self._anchor(now)
        self.received.append(now)
        p = self.trace[k]
        if p.arrival_time_s is None:
            self.scheduled.append(None)
            return None
        release = self.t0 + p.arrival_time_s
        self.scheduled.append(release)
        _, second, _, _, ssrc = _RTP_HEADER.unpack_from(datagram)
        pt = second & 0x7F
        header = _RTP_HEADER.pack(0x80, pt | (0x80 if k == 0 else 0), p.seq, p.ts, ssrc)
        return max(release, now), header + marker_payload(k)


def try_realtime(priority: int = 10) -> bool:
    """Ask for SCHED_FIFO (inherited by threads started later); False where not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def trace_slice(name: str, seconds: float | None) -> list[TracePacket]:
    """The first `seconds` of a named trace (all of it when None); both buffers must replay the same slice."""
    trace = TRACES[name]()
    if seconds is None:
        return trace
    return [p for p in trace if p.send_time_s < seconds - 1e-9]


def _relay(args: argparse.Namespace, schedule: TraceSchedule) -> dict[str, Any]:
    """The socket loop: forward, impair, release on time; returns the log."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", args.listen_port))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", args.listen_port + 1))
    receiver = ("127.0.0.1", args.forward_port)
    print("ready", flush=True)
    sender: tuple[str, int] | None = None
    started = False
    watch: list[Any] = [rtp, rtcp, sys.stdin]
    pending: list[tuple[float, int, bytes]] = []
    released: dict[int, float] = {}
    last_rx = time.monotonic()
    while not (schedule.done and not pending):
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 1.0
        ready, _, _ = select.select(watch, [], [], timeout)
        for sock in ready:
            if sock is sys.stdin:
                line = sys.stdin.readline()
                if line.startswith("start"):
                    started, words = True, line.split()
                    schedule.grid_s = float(words[1]) if len(words) > 1 else None
                if not line:
                    watch.remove(sys.stdin)
                continue
            data, addr = sock.recvfrom(2048)
            now = time.monotonic()
            if sock is rtcp:
                continue
            if addr == receiver:
                if sender is not None:
                    rtp.sendto(data, sender)
                continue
            sender, last_rx = addr, now
            out = schedule.on_packet(data, now) if started else None
            if out is not None:
                heapq.heappush(pending, (out[0], len(schedule.received) - 1, out[1]))
        while pending and pending[0][0] <= time.monotonic():
            _, k, data = heapq.heappop(pending)
            rtp.sendto(data, receiver)
            released[k] = time.monotonic()
        if started and time.monotonic() - last_rx > IDLE_EXIT_S:
            break  # the sender went away: report what we have
    return {
        "t0": schedule.t0,
        "grid_s": schedule.grid_s,
        "phase_s": schedule.phase_s,
        "received": schedule.received,
        "scheduled": schedule.scheduled,
        "released": [released.get(k) for k in range(len(schedule.received))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", choices=sorted(TRACES), required=True)
    parser.add_argument("--seconds", type=float, default=None, help="replay only the first N seconds")
    parser.add_argument("--listen-port", type=int, required=True, help="RTP port (RTCP on port + 1)")
    parser.add_argument("--forward-port", type=int, required=True, help="receiver's RTP port on 127.0.0.1")
    parser.add_argument("--phase-ms", type=float, default=0.0, help="t0 = first receive time − phase")
    parser.add_argument("--log", default=None, help="write the JSON log here instead of stdout")
    parser.add_argument("--realtime", action="store_true", help="SCHED_FIFO if permitted (steadier release)")
    args = parser.parse_args(argv)
    realtime = args.realtime and try_realtime()
    schedule = TraceSchedule(trace_slice(args.trace, args.seconds), args.phase_ms / 1000)
    log = _relay(args, schedule) | {"realtime": realtime}
    if args.log is None:
        print(json.dumps(log), flush=True)
    else:
        Path(args.log).write_text(json.dumps(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
