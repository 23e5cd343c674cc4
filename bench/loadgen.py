"""Load generator for the media CPU benchmark: N G.711 RTP streams at 50 pps over loopback, and a receiver
that measures what the server sends back (packets, sequence gaps, inter-packet spacing).

Runs as its own process so its CPU is not charged to the server. Protocol on stdin/stdout (JSON lines):
  -> {"ports": [...]}                  our bound ports, one per stream (the server sets them as remotes)
  <- {"targets": [[host, port], ...], "seconds": S}   where to send and for how long
  -> {"result": {...}}                 when done
Streams are staggered over the 20 ms period (in `groups` sub-ticks) as independent calls would be.
Arrival times are kernel receive timestamps (SO_TIMESTAMPNS) so our own scheduling does not skew spacing.
"""

from __future__ import annotations

import json
import math
import random
import select
import socket
import struct
import sys
import time
from typing import Any

import numpy as np

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it
_TIMESPEC = struct.Struct("@qq")
_HEADER = struct.Struct("!BBHII")
PERIOD_S = 0.02
FRAME_SAMPLES = 160


def tone_frames(count: int = 50, freq_hz: float = 440.0) -> list[bytes]:
    """One second of a µ-law tone as 20 ms payloads (encoded with the standard G.711 rule)."""
    from trunkline.codecs.g711 import ulaw_encode

    t = np.arange(count * FRAME_SAMPLES) / 8000.0
    pcm = (8000 * np.sin(2 * math.pi * freq_hz * t)).astype(np.int16)
    data = ulaw_encode(pcm)
    return [data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(count)]


class Stream:
    """One simulated call: its socket, send state and receive accounting."""

    __slots__ = (
        "gaps",
        "last_arrival",
        "last_seq",
        "markers",
        "received",
        "seq",
        "seq_gaps",
        "sock",
        "ssrc",
        "ts0",
    )

    def __init__(self, index: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # random SSRC, sequence number and timestamp origins, as real senders pick them (RFC 3550 §5.1;
        # 32-bit values are also what the receiver's arithmetic has to cope with), seeded per stream
        rng = random.Random(index)
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)
        self.ts0 = rng.getrandbits(32)
        self.received = 0
        self.markers = 0
        self.seq_gaps = 0
        self.last_seq: int | None = None
        self.last_arrival: float | None = None
        self.gaps: list[float] = []

    def on_packet(self, data: bytes, arrival_s: float, record: bool) -> None:
        if len(data) < 12:
            return
        _, second, seq, _, _ = _HEADER.unpack_from(data)
        self.received += 1
        if second & 0x80:
            self.markers += 1
        if self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF:
            self.seq_gaps += 1
        if record and self.last_arrival is not None:
            self.gaps.append(arrival_s - self.last_arrival)
        self.last_seq = seq
        self.last_arrival = arrival_s


def _drain(stream: Stream, record: bool) -> None:
    sock = stream.sock
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(2048, 64)
        except BlockingIOError:
            return
        arrival = time.monotonic()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(raw)
                arrival = sec + nsec * 1e-9
        stream.on_packet(data, arrival, record)


def run_load(streams: list[Stream], targets: list[tuple[str, int]], seconds: float, groups: int = 10) -> dict:
    """Send every stream at 50 pps for `seconds` while receiving; the first second is not recorded."""
    frames = tone_frames()
    poller = select.epoll()
    by_fd = {s.sock.fileno(): s for s in streams}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    sub_period = PERIOD_S / groups
    start = time.monotonic() + 0.05
    end = start + seconds
    record_from = start + 1.0
    n = 0  # sub-tick index
    sent = 0
    late_max = 0.0
    cpu0 = time.process_time()
    while True:
        deadline = start + n * sub_period
        now = time.monotonic()
        if now >= end:
            break
        if now < deadline:
            for fd, _ in poller.poll(deadline - now):
                _drain(by_fd[fd], now >= record_from)
            continue
        late_max = max(late_max, now - deadline)
        tick, group = divmod(n, groups)
        payload = frames[tick % len(frames)]
        ts = tick * FRAME_SAMPLES
        for i in range(group, len(streams), groups):
            s = streams[i]
            packet = _HEADER.pack(
                0x80, 0x80 if tick == 0 else 0, s.seq & 0xFFFF, (s.ts0 + ts) & 0xFFFFFFFF, s.ssrc
            )
            s.seq += 1
            try:
                s.sock.sendto(packet + payload, targets[i])
                sent += 1
            except BlockingIOError:
                pass
        n += 1
    cpu = time.process_time() - cpu0
    poller.close()
    return summarize(streams, sent, seconds, cpu, late_max)


def summarize(streams: list[Stream], sent: int, seconds: float, cpu_s: float, late_max_s: float) -> dict:
    """Totals and spacing percentiles over all streams (spacing in ms between consecutive packets)."""
    gaps = np.concatenate([np.asarray(s.gaps) for s in streams if s.gaps]) if streams else np.zeros(0)
    received = sum(s.received for s in streams)
    result: dict[str, Any] = {
        "streams": len(streams),
        "seconds": seconds,
        "sent": sent,
        "received": received,
        "seq_gaps": sum(s.seq_gaps for s in streams),
        "markers": sum(s.markers for s in streams),
        "loadgen_cpu_s": round(cpu_s, 3),
        "loadgen_send_late_max_ms": round(late_max_s * 1000, 3),
        "spacing_samples": int(gaps.size),
    }
    if gaps.size:
        ms = gaps * 1000.0
        for q in (1, 50, 99, 99.9):
            result[f"spacing_p{q:g}_ms"] = round(float(np.percentile(ms, q)), 3)
        result["spacing_max_ms"] = round(float(ms.max()), 3)
        result["gaps_over_30ms"] = int((ms > 30.0).sum())
    return result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    streams = [Stream(i) for i in range(count)]
    print(json.dumps({"ports": [s.sock.getsockname()[1] for s in streams]}), flush=True)
    order = json.loads(sys.stdin.readline())
    targets = [(str(h), int(p)) for h, p in order["targets"]]
    if len(targets) != count or any(host != "127.0.0.1" for host, _ in targets):
        raise SystemExit("loadgen: targets must be one 127.0.0.1 address per stream")
    result = run_load(streams, targets, float(order["seconds"]))
    print(json.dumps({"result": result}), flush=True)
    for s in streams:
        s.sock.close()


if __name__ == "__main__":
    main()
