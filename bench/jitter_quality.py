"""Jitter-buffer quality: replay the seeded traces (bench/traces.py) into our JitterBuffer on a virtual clock.

A 20 ms ticker pops one frame per tick; every packet whose arrival time is <= the tick is pushed first. The
replay runs at four ticker phases (0, 5, 10, 15 ms after the first send) because the phase between sender and
pacer shifts the achievable delay by up to one frame; headline numbers are the mean over the phases.

Metrics, per trace:
* mean_added_delay_ms: playout time (the tick that popped the packet) − arrival time, averaged over played
  packets; p50/p95 of the same. mean_delay_above_min_ms: playout − send − the trace's minimum one-way delay.
* conceal_or_drop_pct: frames that were concealed or silenced where audio should have played, plus received
  packets never played (late, overflow, dropped to shrink), as a share of all sent frames — excluding the
  frames of packets the network lost. A late packet counts once even though its slot was also concealed.
* network_loss_pct: packets the network lost, as a share of sent packets.
* series (phase 0): per-second added delay, impaired frames, target delay and network delay, for a plot.

Run: python bench/jitter_quality.py [--full]   (prints JSON; --full adds per-phase numbers and the series)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

from trunkline.mediaserver.jitterbuffer import FrameKind, JitterBuffer
from trunkline.mediaserver.rtp import RtpPacket

try:
    from bench.traces import TRACES, TracePacket
except ImportError:  # run as a script: python bench/jitter_quality.py
    from traces import TRACES, TracePacket  # type: ignore[no-redef]

TICK_MS = 20
PHASES_MS = (0, 5, 10, 15)
_PAYLOAD = bytes(160)


def _replay(
    trace: list[TracePacket], phase_ms: int
) -> tuple[list[tuple[float, FrameKind, int]], list[float]]:
    """Drive a fresh buffer; returns (tick time, kind, timestamp) per pop and the target delay each second."""
    jb = JitterBuffer()
    arrivals = sorted((p.arrival_time_s, p) for p in trace if p.arrival_time_s is not None)
    end = arrivals[-1][0] + 1.0
    frames: list[tuple[float, FrameKind, int]] = []
    targets: list[float] = []
    i, n = 0, 0
    while True:
        now = (phase_ms + TICK_MS * n) / 1000
        if now > end:
            break
        while i < len(arrivals) and arrivals[i][0] <= now:
            p = arrivals[i][1]
            jb.push(RtpPacket(0, p.seq, p.ts, 0x1234, _PAYLOAD), arrivals[i][0])
            i += 1
        frame = jb.pop(now)
        frames.append((now, frame.kind, frame.timestamp))
        if n % (1000 // TICK_MS) == 0:
            targets.append(jb.stats.target_delay_ms)
        n += 1
    return frames, targets


def _score(trace: list[TracePacket], frames: list[tuple[float, FrameKind, int]]) -> dict[str, Any]:
    by_ts = {p.ts: p for p in trace}
    lost_ts = {p.ts for p in trace if p.arrival_time_s is None}
    min_net = min(p.arrival_time_s - p.send_time_s for p in trace if p.arrival_time_s is not None)
    played = {ts: t for t, kind, ts in frames if kind is FrameKind.AUDIO}
    unplayed = {p.ts for p in trace if p.arrival_time_s is not None and p.ts not in played}
    first = min(played.values())
    last = max(played.values())
    used: set[int] = set()
    inserted_at: list[float] = []
    for t, kind, ts in frames:
        if kind is FrameKind.AUDIO or not first <= t <= last:
            continue
        if (ts in lost_ts or ts in unplayed) and ts not in used:
            used.add(ts)  # stands in for a lost packet (excluded) or a late one (counted via `unplayed`)
        else:
            inserted_at.append(t)
    added = [(t - by_ts[ts].arrival_time_s) * 1000 for ts, t in played.items()]  # type: ignore[operator]
    above_min = [(t - by_ts[ts].send_time_s - min_net) * 1000 for ts, t in played.items()]
    quantiles = statistics.quantiles(added, n=20)
    return {
        "mean_added_delay_ms": statistics.fmean(added),
        "p50_added_delay_ms": statistics.median(added),
        "p95_added_delay_ms": quantiles[18],
        "mean_delay_above_min_ms": statistics.fmean(above_min),
        "conceal_or_drop_pct": 100 * (len(unplayed) + len(inserted_at)) / len(trace),
        "network_loss_pct": 100 * len(lost_ts) / len(trace),
        "late_or_dropped_packets": len(unplayed),
        "inserted_frames": len(inserted_at),
        "_impaired_seconds": [int(by_ts[ts].send_time_s) for ts in unplayed] + [int(t) for t in inserted_at],
    }


def _series(
    trace: list[TracePacket],
    frames: list[tuple[float, FrameKind, int]],
    score: dict[str, Any],
    targets: list[float],
) -> dict[str, list[float]]:
    """Per-second summaries for a plot (about 60 points per array)."""
    by_ts = {p.ts: p for p in trace}
    seconds = int(trace[-1].send_time_s) + 1
    delay: list[list[float]] = [[] for _ in range(seconds + 2)]
    for t, kind, ts in frames:
        if kind is FrameKind.AUDIO and int(t) < len(delay):
            delay[int(t)].append((t - by_ts[ts].arrival_time_s) * 1000)  # type: ignore[operator]
    net: list[list[float]] = [[] for _ in range(seconds)]
    for p in trace:
        if p.arrival_time_s is not None:
            net[int(p.send_time_s)].append((p.arrival_time_s - p.send_time_s) * 1000)
    impaired = Counter(score["_impaired_seconds"])
    return {
        "t_s": list(range(seconds)),
        "added_delay_ms": [round(statistics.fmean(d), 2) if d else 0.0 for d in delay[:seconds]],
        "impaired_frames": [impaired.get(s, 0) for s in range(seconds)],
        "target_delay_ms": [round(x, 2) for x in targets[:seconds]],
        "network_delay_ms": [round(statistics.fmean(d), 2) if d else 0.0 for d in net],
        "network_delay_max_ms": [round(max(d), 2) if d else 0.0 for d in net],
    }


def run_trace(name: str) -> dict[str, Any]:
    """All phases of one trace; headline numbers are the mean over phases."""
    trace = TRACES[name]()
    per_phase = []
    series: dict[str, list[float]] = {}
    for phase in PHASES_MS:
        frames, targets = _replay(trace, phase)
        score = _score(trace, frames)
        if phase == 0:
            series = _series(trace, frames, score, targets)
        del score["_impaired_seconds"]
        per_phase.append({"phase_ms": phase, **{k: round(v, 3) for k, v in score.items()}})
    keys = [k for k in per_phase[0] if k != "phase_ms"]
    result: dict[str, Any] = {k: round(statistics.fmean(p[k] for p in per_phase), 3) for k in keys}
    result["per_phase"] = per_phase
    result["series"] = series
    return result


def run() -> dict[str, Any]:
    """Quality numbers per trace (JSON-serialisable), with the issue's targets and whether each is met."""
    started = time.perf_counter()
    out: dict[str, Any] = {name: run_trace(name) for name in TRACES}
    targets = {"moderate": (50.0, 1.0), "spiky": (80.0, 2.5)}
    for name, (delay_ms, pct) in targets.items():
        r = out[name]
        r["target"] = {"mean_added_delay_ms": delay_ms, "conceal_or_drop_pct": pct}
        r["target_met"] = r["mean_added_delay_ms"] <= delay_ms and r["conceal_or_drop_pct"] <= pct
    out["replay_seconds"] = round(time.perf_counter() - started, 2)
    return out


if __name__ == "__main__":
    result = run()
    if "--full" not in sys.argv:  # the per-phase numbers and the plot series only on request
        for r in result.values():
            if isinstance(r, dict):
                r.pop("series", None)
                r.pop("per_phase", None)
    print(json.dumps(result, indent=2))
