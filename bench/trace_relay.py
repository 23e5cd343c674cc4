"""Impairing UDP relay on 127.0.0.1: one RTP stream delayed and dropped per a seeded trace, in real time.

The relay sits in front of the receiver's RTP port. After `start [tick_grid_s]` arrives on stdin, the k-th RTP
packet from the sender becomes trace packet k (bench/traces.py): its sequence number and timestamp become the
trace's, its payload becomes a marker naming (k, 10 ms half) so the receiver's played audio can be attributed
to packets, and it is released at t0 + arrival_k — or dropped when the trace lost it. The schedule is the
trace's own, not the sender's send times; a packet that reaches the relay after its slot goes out on receipt
(counted). Packets from the receiver go back to the sender unimpaired; RTCP (port + 1) is absorbed. When the
slice is done the relay writes its JSON log (stdout or --log) and exits. This module also finds the markers
again in played audio and scores the playout with bench/jitter_quality.py's definitions (score_playout).

Run: python bench/trace_relay.py --trace spiky --listen-port 40000 --forward-port 40010   ("start" on stdin)
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
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trunkline.codecs.g711 import ulaw_decode

try:
    from bench.traces import PACKET_INTERVAL_S, TRACES, TracePacket
except ImportError:  # run as a script: python bench/trace_relay.py
    from traces import PACKET_INTERVAL_S, TRACES, TracePacket  # type: ignore[no-redef]

HALF_SAMPLES = 80  # pjmedia's G.711 codec and jitter buffer work in 10 ms frames
FRAME_SAMPLES = 160  # one 20 ms receiver tick
RATE_HZ = 8000
IDLE_EXIT_S = 5.0
ANCHOR_SLACK_S = 0.015  # t0 may precede the first packet by this much (no trace delivers in < 20 ms)
_MARKER_SEED = 0x7A3C_0000
_RTP_HEADER = struct.Struct("!BBHII")
_KEY_AT = 50  # samples 50..53 of a marker half locate it anywhere in a stream
_MERGE = 40  # pjmedia cross-fades 5 ms at each edge of a concealment
_FUZZY_ROWS = 100  # how far ahead (in halves) a half with both edges cross-faded is looked for
_FUZZY_MIN_CORR = 0.5  # unrelated 80-sample signals correlate at about N(0, 0.11)


def marker_payload(index: int) -> bytes:
    """The µ-law payload stamped on trace packet `index`: two pseudo-random halves, one per 10 ms."""
    return b"".join(random.Random(_MARKER_SEED + 2 * index + h).randbytes(HALF_SAMPLES) for h in (0, 1))


def marker_halves(count: int) -> np.ndarray:
    """Decoded PCM of every marker half: row 2k + h is half h of trace packet k."""
    return np.stack([ulaw_decode(marker_payload(k)) for k in range(count)]).reshape(2 * count, HALF_SAMPLES)


def grid_offset(stream: np.ndarray, halves: np.ndarray) -> int:
    """Where 10 ms packet boundaries fall in a played stream (samples mod 10 ms), from verbatim marker tails.
    A receiver whose decoder delays by a constant keeps one offset for the whole call."""
    keys = np.ascontiguousarray(halves[:, _KEY_AT : _KEY_AT + 4]).view(np.uint64).ravel()
    windows = np.ascontiguousarray(sliding_window_view(stream, 4)).view(np.uint64).ravel()
    starts = (np.nonzero(np.isin(windows, keys))[0] - _KEY_AT) % HALF_SAMPLES
    if not len(starts):
        raise ValueError("no marker in the played audio: the relay path did not carry the call")
    return int(np.bincount(starts).argmax())


def slot_rows(stream: np.ndarray, halves: np.ndarray, offset: int) -> tuple[list[int | None], int]:
    """The marker half (row) each 10 ms slot of the stream carries, or None, and how many were matched by
    correlation. A half is matched by a verbatim head or tail (pjmedia cross-fades 5 ms at each edge of a
    concealment); one with both edges faded, by its correlation with the next unplayed halves."""
    n = (len(stream) - offset) // HALF_SAMPLES
    slots = stream[offset : offset + n * HALF_SAMPLES].reshape(n, HALF_SAMPLES)
    head = {h[:_MERGE].tobytes(): r for r, h in enumerate(halves)}
    tail = {h[_MERGE:].tobytes(): r for r, h in enumerate(halves)}
    rows = [head.get(x[:_MERGE].tobytes(), tail.get(x[_MERGE:].tobytes())) for x in slots]
    seen = {r for r in rows if r is not None}
    last, fuzzy = -1, 0
    for i, row in enumerate(rows):
        if row is not None:
            last = max(last, row)
            continue
        candidates = [c for c in range(last + 1, min(len(halves), last + 1 + _FUZZY_ROWS)) if c not in seen]
        x = slots[i].astype(np.float64)
        if last < 0 or not candidates or not x.any():
            continue
        h = halves[candidates].astype(np.float64)
        corr = (h @ x) / (np.linalg.norm(h, axis=1) * np.linalg.norm(x))
        best = int(corr.argmax())
        if corr[best] >= _FUZZY_MIN_CORR:
            rows[i] = candidates[best]
            seen.add(candidates[best])
            last, fuzzy = max(last, candidates[best]), fuzzy + 1
    return rows, fuzzy


def played_stream(frames: list[tuple[float, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """The callee's played audio as one int16 stream, and the tick time of each 20 ms frame of it."""
    silence = bytes(2 * FRAME_SAMPLES)
    pcm = np.frombuffer(b"".join(d if len(d) == len(silence) else silence for _, d in frames), "<i2")
    return pcm, np.array([t for t, _ in frames])


def _walk(
    rows: list[int | None], offset: int, released: list[float | None], ticks: np.ndarray
) -> tuple[dict[int, float], int]:
    """Tick at which each half's packet started playing (first playout only), and the inserted slots:
    unmatched slots between two played halves beyond the missing halves they stand in for."""
    played: dict[int, float] = {}
    inserted, pending, last = 0, 0, -1
    for i, row in enumerate(rows):
        if row is None or row in played or released[row // 2] is None:
            pending += last >= 0  # concealment, silence, or a verbatim repeat by the concealer
            continue
        start = offset + i * HALF_SAMPLES
        lead = start % FRAME_SAMPLES - offset - (row % 2) * HALF_SAMPLES  # 0 or ±10 ms into the tick
        played[row] = float(ticks[start // FRAME_SAMPLES]) + lead / RATE_HZ
        if last >= 0:
            inserted += max(0, pending - max(0, row - last - 1))
        pending, last = 0, max(last, row)
    return played, inserted


def score_playout(
    trace: list[TracePacket], log: dict[str, Any], frames: list[tuple[float, bytes]]
) -> dict[str, Any]:
    """jitter_quality's metrics from a real playout, counted in 10 ms halves."""
    released: list[float | None] = log["released"] + [None] * (len(trace) - len(log["released"]))
    stream, ticks = played_stream(frames)
    halves = marker_halves(len(trace))
    offset = grid_offset(stream, halves)  # pjmedia's concealer delays its output by this constant
    rows, fuzzy = slot_rows(stream, halves, offset)
    played, inserted = _walk(rows, offset, released, ticks)
    added = [(t - released[r // 2]) * 1000 for r, t in played.items()]  # type: ignore[operator]
    net = [r - log["t0"] - p.send_time_s for p, r in zip(trace, released, strict=True) if r is not None]
    above = [(t - log["t0"] - trace[r // 2].send_time_s - min(net)) * 1000 for r, t in played.items()]
    unplayed = 2 * len(net) - len(played)
    return {
        "mean_added_delay_ms": round(statistics.fmean(added), 3),
        "p50_added_delay_ms": round(statistics.median(added), 3),
        "p95_added_delay_ms": round(statistics.quantiles(added, n=20)[18], 3),
        "min_added_delay_ms": round(min(added), 3),  # < 0 would mean a packet played before it arrived
        "mean_delay_above_min_ms": round(statistics.fmean(above), 3),
        "conceal_or_drop_pct": round(100 * (unplayed + inserted) / (2 * len(trace)), 3),
        "network_loss_pct": round(100 * sum(p.arrival_time_s is None for p in trace) / len(trace), 3),
        "late_or_dropped_packets": unplayed / 2,
        "inserted_frames": inserted / 2,
        "decoder_delay_line_ms": offset / RATE_HZ * 1000,
        "halves_matched_by_correlation": fuzzy,
        "first_last_played_s": [min(played.values()), max(played.values())],
    }


def timing_quality(log: dict[str, Any], frames: list[tuple[float, bytes]]) -> dict[str, Any]:
    """How faithfully real time followed the trace: relay lateness, sender lateness, tick regularity."""
    pairs = zip(log["released"], log["scheduled"], strict=True)
    late = sorted((r - s) * 1000 for r, s in pairs if r is not None and s is not None)
    ticks = np.diff([t for t, _ in frames]) * 1000
    received = zip(log["received"], log["scheduled"], strict=True)
    gaps = np.diff(log["received"]) * 1000
    return {
        "realtime_sched": log.get("realtime"),
        "relay_release_late_ms_p50_p99_max": [
            round(x, 3) for x in (late[len(late) // 2], late[-len(late) // 100], late[-1])
        ],
        "sender_after_slot_packets": sum(1 for rx, s in received if s is not None and rx > s),
        "sender_gap_ms_max": round(float(gaps.max()), 3),
        "bridge_tick_ms_p1_p99_max": [
            round(float(x), 3) for x in (*np.percentile(ticks, [1, 99]), ticks.max())
        ],
        "tick_phase_ms": round(((log["grid_s"] - log["t0"]) * 1000) % 20, 3),
    }


@dataclass(slots=True)
class TraceSchedule:
    """Pure core: maps sender packets to trace packets and says when (or whether) each is released.

    t0 (the virtual send time of packet 0) is set on the first packet: `phase_s` before it or, when the
    receiver's tick grid is known, the first time at most 15 ms before it at which the receiver's ticks fall
    `phase_s` after the virtual send grid — so the tick phase is chosen, not left to chance."""

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
        header = _RTP_HEADER.pack(0x80, (second & 0x7F) | (0x80 if k == 0 else 0), p.seq, p.ts, ssrc)
        return max(release, now), header + marker_payload(k)


def try_realtime(priority: int = 10) -> bool:
    """Ask for SCHED_FIFO (threads started later inherit it); False where not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def trace_slice(name: str, seconds: float | None) -> list[TracePacket]:
    """The first `seconds` of a named trace (all of it when None); both buffers must replay the same slice."""
    trace = TRACES[name]()
    return trace if seconds is None else [p for p in trace if p.send_time_s < seconds - 1e-9]


@dataclass(slots=True)
class _Relay:
    """The socket side: forward, impair, release on time."""

    schedule: TraceSchedule
    receiver: tuple[str, int]
    rtp: socket.socket
    sender: tuple[str, int] | None = None
    started: bool = False
    pending: list[tuple[float, int, bytes]] = field(default_factory=list)
    released: dict[int, float] = field(default_factory=dict)

    def on_stdin(self, line: str) -> None:
        if line.startswith("start"):
            words = line.split()
            self.started, self.schedule.grid_s = True, float(words[1]) if len(words) > 1 else None

    def on_rtp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if addr == self.receiver:
            if self.sender is not None:
                self.rtp.sendto(data, self.sender)
            return
        self.sender = addr
        out = self.schedule.on_packet(data, now) if self.started else None
        if out is not None:
            heapq.heappush(self.pending, (out[0], len(self.schedule.received) - 1, out[1]))

    def release_due(self) -> None:
        while self.pending and self.pending[0][0] <= time.monotonic():
            _, k, data = heapq.heappop(self.pending)
            self.rtp.sendto(data, self.receiver)
            self.released[k] = time.monotonic()


def _serve(listen_port: int, forward_port: int, schedule: TraceSchedule) -> dict[str, Any]:
    """Run until every trace packet is released or dropped (or the sender goes quiet); returns the log."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", listen_port))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", listen_port + 1))
    relay = _Relay(schedule, ("127.0.0.1", forward_port), rtp)
    print("ready", flush=True)
    watch: list[Any] = [rtp, rtcp, sys.stdin]
    last_rx = time.monotonic()
    while not (schedule.done and not relay.pending):
        timeout = max(0.0, relay.pending[0][0] - time.monotonic()) if relay.pending else 1.0
        for sock in select.select(watch, [], [], timeout)[0]:
            if sock is sys.stdin:
                line = sys.stdin.readline()
                if line:
                    relay.on_stdin(line)
                else:
                    watch.remove(sys.stdin)
            elif sock is rtcp:
                rtcp.recv(2048)
            else:
                data, addr = rtp.recvfrom(2048)
                last_rx = time.monotonic()
                relay.on_rtp(data, addr, last_rx)
        relay.release_due()
        if relay.started and time.monotonic() - last_rx > IDLE_EXIT_S:
            break  # the sender went away: report what there is
    n = len(schedule.received)
    return {
        "t0": schedule.t0,
        "grid_s": schedule.grid_s,
        "phase_s": schedule.phase_s,
        "received": schedule.received,
        "scheduled": schedule.scheduled,
        "released": [relay.released.get(k) for k in range(n)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trace", choices=sorted(TRACES), required=True)
    parser.add_argument("--seconds", type=float, default=None, help="replay only the first N seconds")
    parser.add_argument("--listen-port", type=int, required=True, help="RTP port (RTCP on port + 1)")
    parser.add_argument("--forward-port", type=int, required=True, help="receiver's RTP port on 127.0.0.1")
    parser.add_argument("--phase-ms", type=float, default=0.0, help="receiver ticks this long after sends")
    parser.add_argument("--log", default=None, help="write the JSON log here instead of stdout")
    parser.add_argument("--realtime", action="store_true", help="SCHED_FIFO if permitted (steadier release)")
    args = parser.parse_args(argv)
    realtime = args.realtime and try_realtime()
    schedule = TraceSchedule(trace_slice(args.trace, args.seconds), args.phase_ms / 1000)
    log = _serve(args.listen_port, args.forward_port, schedule) | {"realtime": realtime}
    if args.log is None:
        print(json.dumps(log), flush=True)
    else:
        Path(args.log).write_text(json.dumps(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
