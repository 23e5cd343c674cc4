"""Media CPU benchmark: server CPU per inbound+outbound RTP packet pair with N G.711 legs in one process.

Each run starts a fresh server process (a MediaEngine on uvloop, N PCMU legs, every leg playing audio as a
TTS feed would) and, from it, the load generator (bench/loadgen.py, its own process) that sends N streams at
50 pps over loopback and measures our packets' spacing. After a warmup, the server's process CPU time over
the window is divided by the packet pairs handled ((received + sent) / 2). The floor is a bare server under
the same load doing only what cannot be avoided: read (same epoll drain), parse_rtp, sendto.

    python -m bench.media_cpu [--legs 200] [--seconds 20] [--repeats 5] [--no-floor] [--quick]

`run(quick)` is the `make bench` step (bench/run.py): FULL or QUICK below.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Metric

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
HOST = "127.0.0.1"
PORT_MIN, PORT_MAX = 24000, 25999
_SLICE_S = 1.0  # the engine run is sampled per slice for the percentiles
TARGET_US = 15.0


async def _start_loadgen(legs: int) -> tuple[asyncio.subprocess.Process, list[int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(LOADGEN), str(legs), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    ports = json.loads(await proc.stdout.readline())["ports"]
    return proc, [int(p) for p in ports]


async def _go(proc: asyncio.subprocess.Process, targets: list[int], seconds: float) -> None:
    assert proc.stdin is not None
    order = {"targets": [[HOST, p] for p in targets], "seconds": seconds}
    proc.stdin.write((json.dumps(order) + "\n").encode())
    await proc.stdin.drain()


async def _loadgen_result(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    await proc.wait()
    result: dict[str, Any] = json.loads(line)["result"]
    return result


def _tone(seconds: float, rate_hz: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (6000 * np.sin(2 * math.pi * 300 * t)).astype(np.int16)


async def serve_engine(legs: int, seconds: float, warmup_s: float, consumers: bool = False) -> dict[str, Any]:
    """One measured run of the real MediaEngine; with `consumers`, one task per leg reads every inbound
    frame through `async for` (what a per-call agent task would do)."""
    from trunkline.mediaserver.engine import MediaEngine

    engine = MediaEngine(HOST, PORT_MIN, PORT_MAX)
    await engine.start()
    open_legs = [engine.open_leg("PCMU", 8000, 0) for _ in range(legs)]
    proc, ports = await _start_loadgen(legs)
    for leg, port in zip(open_legs, ports, strict=True):
        leg.set_remote((HOST, port))
    await _go(proc, [leg.local_port for leg in open_legs], warmup_s + seconds + 1.0)
    chunk = _tone(1.0)
    stop = asyncio.Event()

    async def feed() -> None:  # a TTS stand-in: keep ~1-2 s queued on every leg
        n = 0
        while not stop.is_set():
            for leg in open_legs:
                if leg.session.outbound.queued_s < 1.0:
                    leg.play(f"u{n}", chunk, 8000)
            n += 1
            await asyncio.sleep(0.25)

    feeder = asyncio.create_task(feed())
    readers = [asyncio.create_task(_read_all(leg)) for leg in open_legs] if consumers else []
    await asyncio.sleep(warmup_s)
    snapshots = [_snapshot(engine)]
    for _ in range(max(1, round(seconds / _SLICE_S))):  # one snapshot per slice: a spread within the run
        await asyncio.sleep(_SLICE_S)
        snapshots.append(_snapshot(engine))
    stop.set()
    await feeder
    for reader in readers:
        reader.cancel()
    loadgen = await _loadgen_result(proc)
    await engine.aclose()
    result = _compare(snapshots[0], snapshots[-1], legs, loadgen)
    result["slice_us_per_packet_pair"] = [
        us for a, b in itertools.pairwise(snapshots) if (us := _compare(a, b, legs, {})["us_per_packet_pair"])
    ]
    return result


async def _read_all(leg: Any) -> None:
    async for _frame in leg.frames:
        pass


def _snapshot(engine: Any) -> dict[str, float]:
    sessions = [leg.session for leg in engine.legs]
    ticker = engine.ticker_stats()
    return {
        "cpu_s": time.process_time(),
        "wall_s": time.monotonic(),
        "tick_cpu_s": engine.tick_cpu_s,
        "received": sum(s.received for s in sessions),
        "sent": sum(s.sent for s in sessions),
        "concealed": sum(s.frames_concealed for s in sessions),
        "silence": sum(s.frames_silence for s in sessions),
        "underruns": sum(s.outbound.underruns for s in sessions),
        "send_errors": sum(s.send_errors for s in sessions),
        "skipped_ticks": ticker.skipped_ticks,
        "late_ticks": ticker.late_ticks,
        "jb_late": sum(s.jitter.stats.late for s in sessions),
    }


def _compare(before: dict[str, float], after: dict[str, float], legs: int, loadgen: dict) -> dict[str, Any]:
    d = {k: after[k] - before[k] for k in before}
    pairs = (d["received"] + d["sent"]) / 2
    return {
        "legs": legs,
        "window_s": round(d["wall_s"], 3),
        "cpu_s": round(d["cpu_s"], 4),
        "cpu_pct_of_core": round(100 * d["cpu_s"] / d["wall_s"], 1),
        "received": int(d["received"]),
        "sent": int(d["sent"]),
        "us_per_packet_pair": round(1e6 * d["cpu_s"] / pairs, 3) if pairs else None,
        "tick_us_per_packet_pair": round(1e6 * d["tick_cpu_s"] / pairs, 3) if pairs else None,
        "inbound_concealed_frames": int(d["concealed"]),
        "inbound_silence_frames": int(d["silence"]),
        "jb_late_packets": int(d["jb_late"]),
        "outbound_underruns": int(d["underruns"]),
        "send_errors": int(d["send_errors"]),
        "skipped_ticks": int(d["skipped_ticks"]),
        "late_ticks": int(d["late_ticks"]),
        "loadgen": loadgen,
    }


async def serve_floor(legs: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """The same load against a bare server: epoll drain + recvmsg + parse_rtp, one sendto per leg."""
    from trunkline.mediaserver.ports import PortAllocator
    from trunkline.mediaserver.rtp import RtpPacket, RtpParseError, parse_rtp

    alloc = PortAllocator(HOST, PORT_MIN, PORT_MAX, bind_rtcp=False)
    leases = [alloc.allocate() for _ in range(legs)]
    socks = [lease.rtp_socket for lease in leases]
    epoll = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        epoll.register(fd, select.EPOLLIN)
    proc, ports = await _start_loadgen(legs)
    remotes = [(HOST, p) for p in ports]
    await _go(proc, [lease.port for lease in leases], warmup_s + seconds + 1.0)
    packet = RtpPacket(0, 1, 160, 1234, b"\xff" * 160).serialize()
    counts = {"received": 0, "sent": 0}
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    timer: list[asyncio.TimerHandle] = []

    def tick(n: int) -> None:
        for _ in range(8):
            ready = epoll.poll(0)
            if not ready:
                break
            for fd, _ in ready:
                try:
                    data, _anc, _flags, _addr = by_fd[fd].recvmsg(4096, 64)
                    parse_rtp(data)
                    counts["received"] += 1
                except (OSError, RtpParseError):
                    pass
        for sock, remote in zip(socks, remotes, strict=True):
            sock.sendto(packet, remote)
            counts["sent"] += 1
        timer[:] = [loop.call_later(max(0.0, start + (n + 1) * 0.02 - time.monotonic()), tick, n + 1)]

    loop.call_soon(tick, 0)
    await asyncio.sleep(warmup_s)
    cpu0, rx0, tx0 = time.process_time(), counts["received"], counts["sent"]
    await asyncio.sleep(seconds)
    cpu, rx, tx = time.process_time() - cpu0, counts["received"] - rx0, counts["sent"] - tx0
    await _loadgen_result(proc)
    for handle in timer:
        handle.cancel()
    epoll.close()
    for lease in leases:
        lease.release()
    pairs = (rx + tx) / 2
    return {"us_per_packet_pair": round(1e6 * cpu / pairs, 3) if pairs else None, "received": rx, "sent": tx}


def component_costs(packets: int = 3000, repeats: int = 3) -> dict[str, float]:
    """µs per packet of each piece of the per-packet path, in this process without sockets (attribution);
    the best of `repeats` runs, each on fresh objects. Timestamps and SSRC are random 32-bit values, as on
    the wire."""
    import random
    import socket

    from trunkline.codecs.registry import create_codec
    from trunkline.mediaserver.jitterbuffer import JitterBuffer
    from trunkline.mediaserver.rtp import RTP_HEADER, RtpPacket, parse_rtp
    from trunkline.mediaserver.rtpstats import ReceiveStats
    from trunkline.mediaserver.session import RtpSession
    from trunkline.mediaserver.tick import run_tick

    rng = random.Random(7)
    ssrc, ts0, seq0 = rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(16)
    wire = [
        RtpPacket(0, (seq0 + i) & 0xFFFF, (ts0 + i * 160) & 0xFFFFFFFF, ssrc, bytes(160)).serialize()
        for i in range(packets)
    ]
    parsed = [parse_rtp(w) for w in wire]
    arrivals = [i * 0.02 + 0.003 + rng.uniform(0, 0.004) for i in range(packets)]

    def per_call(make: Any, calls: int = packets) -> float:
        best = math.inf
        for _ in range(repeats):
            fn = make()
            cpu = time.process_time()
            fn()
            best = min(best, time.process_time() - cpu)
        return round(1e6 * best / calls, 3)

    def header() -> Any:
        unpack = RTP_HEADER.unpack_from
        return lambda: [(unpack(w), w[12:]) for w in wire]

    def stats_each() -> Any:
        stats = ReceiveStats(8000)
        pairs = list(zip(parsed, arrivals, strict=True))
        return lambda: [stats.update(p.sequence_number, p.timestamp, t) for p, t in pairs]

    def stats_deferred() -> Any:  # what the session does: log per packet, fold in once a second
        stats, log = ReceiveStats(8000), []

        def run() -> None:
            for p, t in zip(parsed, arrivals, strict=True):
                log.append((p.sequence_number, p.timestamp, t))
                if len(log) == 50:
                    stats.update_all(log)
                    log.clear()

        return run

    def jitter() -> Any:
        jb = JitterBuffer(8000, 20)

        def run() -> None:
            for i, (p, t) in enumerate(zip(parsed, arrivals, strict=True)):
                jb.push_fields(p.ssrc, p.sequence_number, p.timestamp, p.payload, p.marker, t)
                jb.pop_payload(i * 0.02 + 0.02)

        return run

    costs = {
        "parse_rtp": per_call(lambda: lambda: [parse_rtp(w) for w in wire]),
        "rtp_header_unpack": per_call(header),
        "receive_stats_update": per_call(stats_each),
        "receive_stats_deferred": per_call(stats_deferred),
        "jitter_push_pop": per_call(jitter),
    }
    ticks = packets // 20
    warm = ticks // 3  # run first, untimed: the jitter buffers start and settle their delay

    def legs() -> Any:
        sessions = [RtpSession(create_codec("PCMU", 8000), 0, remote=(HOST, 9)) for _ in range(200)]
        for leg in sessions:
            leg.outbound.enqueue("u", _tone(ticks * 0.02 + 1))

        def run_ticks(first: int, last: int) -> None:
            for t in range(first, last):
                for leg in sessions:
                    leg.receive(wire[t], (HOST, 9), arrivals[t])
                run_tick(sessions, t * 0.02 + 0.02, t)
                if t % 50 == 49:
                    for leg in sessions:
                        leg.fold_stats()
                        leg.inbound.clear()

        run_ticks(0, warm)
        return lambda: run_ticks(warm, ticks)

    costs["session_receive_plus_tick_per_leg"] = per_call(legs, (ticks - warm) * 200)
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((HOST, 0))
    b.bind((HOST, 0))
    b.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS, as the engine reads
    target = b.getsockname()

    send_us = recv_us = math.inf
    for _ in range(20):  # 200 sent, then those 200 received: the queue never overflows, a read never waits
        cpu = time.process_time()
        for _ in range(200):
            a.sendto(wire[0], target)
        send_us = min(send_us, (time.process_time() - cpu) / 200 * 1e6)
        cpu = time.process_time()
        for _ in range(200):
            b.recvmsg(4096, 64)
        recv_us = min(recv_us, (time.process_time() - cpu) / 200 * 1e6)
    costs["sendto_loopback"] = round(send_us, 3)
    costs["recvmsg_with_timestamp"] = round(recv_us, 3)
    a.close()
    b.close()
    return costs


def _one_run(kind: str, legs: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """A fresh server process for one run (no state or garbage carried over between runs)."""
    cmd = [sys.executable, "-m", "bench.media_cpu", "--child", kind, "--legs", str(legs)]
    cmd += ["--seconds", str(seconds), "--warmup", str(warmup_s)]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=seconds + warmup_s + 120)
    if out.returncode != 0:
        raise RuntimeError(f"media_cpu {kind} run failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure: engine runs (fresh processes) of `seconds` each, then floor runs."""

    legs: int = 200
    seconds: float = 20.0
    repeats: int = 5
    floor_repeats: int = 5
    warmup_s: float = 3.0


FULL = Plan(seconds=8.0, repeats=4, floor_repeats=2, warmup_s=2.0)  # `make bench`: ~1.4 min on this box
QUICK = Plan(seconds=5.0, repeats=2, floor_repeats=1, warmup_s=2.0)  # ~40 s


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(statistics.median(values), 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3)}


def run(quick: bool = False, plan: Plan | None = None) -> dict:
    """Repeat the engine run (and the floor run); percentiles over runs and over 1 s slices (JSON-ready)."""
    plan = plan or (QUICK if quick else FULL)
    started = time.monotonic()
    runs = [_one_run("engine", plan.legs, plan.seconds, plan.warmup_s) for _ in range(plan.repeats)]
    floors = [_one_run("floor", plan.legs, plan.seconds, plan.warmup_s) for _ in range(plan.floor_repeats)]
    us = [r["us_per_packet_pair"] for r in runs if r["us_per_packet_pair"] is not None]
    slices = [v for r in runs for v in r.get("slice_us_per_packet_pair", [])]
    spacing = [r["loadgen"].get("spacing_p99_ms") for r in runs if "spacing_p99_ms" in r["loadgen"]]
    floor_us = [f["us_per_packet_pair"] for f in floors if f["us_per_packet_pair"] is not None]
    per_run, per_slice = _percentiles(us), _percentiles(slices)
    return {
        "component_costs_us": component_costs(),
        "legs": plan.legs,
        "seconds": plan.seconds,
        "repeats": plan.repeats,
        "quick": quick,
        "us_per_packet_pair_p50": per_run["p50"],
        "us_per_packet_pair_p95": per_run["p95"],
        "us_per_packet_pair_p99": per_run["p99"],
        "us_per_packet_pair_runs": us,
        "slice_us_per_packet_pair": per_slice,
        "floor_us_per_pair": round(statistics.median(floor_us), 3) if floor_us else None,
        "floor_us_per_pair_runs": floor_us,
        "outbound_spacing_p99_ms_p50": round(statistics.median(spacing), 3) if spacing else None,
        "outbound_underruns": sum(r["outbound_underruns"] for r in runs),
        "skipped_ticks": sum(r["skipped_ticks"] for r in runs),
        "load_average": list(os.getloadavg()),
        "elapsed_s": round(time.monotonic() - started, 1),
        "how": (
            f"{plan.legs} PCMU legs in one MediaEngine process (uvloop), all playing audio; loadgen process "
            f"sends {plan.legs}x50 pps over loopback; server process CPU over {plan.seconds:g} s after "
            f"{plan.warmup_s:g} s warmup / ((rx+tx)/2); percentiles over {plan.repeats} runs (fresh "
            f"processes) and over 1 s slices; floor ({plan.floor_repeats} runs) = epoll drain + recvmsg + "
            "parse_rtp + sendto. Noisy on a shared box: see load_average."
        ),
        "runs": runs,
        "floor_runs": floors,
    }


def metrics(result: dict[str, Any]) -> list[Metric]:
    """Rows for the report: p50 over runs against the target, p95/p99 beside it."""
    legs = result.get("legs", 200)
    rows = []
    for key, label in (("p50", "p50 over runs"), ("p95", "p95 over runs"), ("p99", "p99 over runs")):
        us = result.get(f"us_per_packet_pair_{key}")
        gated = key == "p50"
        rows.append(
            Metric(
                metric_id="media_cpu_us_per_pair" if gated else f"media_cpu_us_per_pair_{key}",
                title=f"Media CPU per in+out packet pair ({legs} legs), {label}",
                unit="µs",
                value=us,
                target=f"≤ {TARGET_US:g} µs" if gated else "-",
                passed=(None if us is None else us <= TARGET_US) if gated else None,
                comparator="floor on this box (epoll+recvmsg+parse_rtp+sendto)",
                comparator_value=result.get("floor_us_per_pair"),
                how=result.get("how", ""),
                extra=result if gated else {},
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="the quick plan (2 short runs), ignoring the rest"
    )
    parser.add_argument("--child", choices=("engine", "engine-consumers", "floor"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        if args.child == "floor":
            result = uvloop.run(serve_floor(args.legs, args.seconds, args.warmup))
        else:
            consumers = args.child == "engine-consumers"
            result = uvloop.run(serve_engine(args.legs, args.seconds, args.warmup, consumers))
        print(json.dumps(result))
        return
    plan = Plan(args.legs, args.seconds, args.repeats, 0 if args.no_floor else args.repeats, args.warmup)
    print(json.dumps(run(args.quick, None if args.quick else plan), indent=2))


if __name__ == "__main__":
    main()
