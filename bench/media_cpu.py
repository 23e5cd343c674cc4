"""Media CPU benchmark: server CPU per inbound+outbound RTP packet pair with N G.711 legs in one process.

Each run starts a fresh server process (a MediaEngine on uvloop, N PCMU legs, every leg playing audio as a
TTS feed would) and, from it, the load generator (bench/loadgen.py, its own process) that sends N streams at
50 pps over loopback and measures our packets' spacing. After a warmup, the server's process CPU time over
the window is divided by the packet pairs handled ((received + sent) / 2). The floor is a bare server under
the same load doing only what cannot be avoided: read (same epoll drain), parse_rtp, sendto.

    python -m bench.media_cpu [--legs 200] [--seconds 20] [--repeats 5] [--no-floor]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
HOST = "127.0.0.1"
PORT_MIN, PORT_MAX = 24000, 25999


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
    before = _snapshot(engine)
    await asyncio.sleep(seconds)
    after = _snapshot(engine)
    stop.set()
    await feeder
    for reader in readers:
        reader.cancel()
    loadgen = await _loadgen_result(proc)
    await engine.aclose()
    return _compare(before, after, legs, loadgen)


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
        loop.call_later(max(0.0, start + (n + 1) * 0.02 - time.monotonic()), tick, n + 1)

    loop.call_soon(tick, 0)
    await asyncio.sleep(warmup_s)
    cpu0, rx0, tx0 = time.process_time(), counts["received"], counts["sent"]
    await asyncio.sleep(seconds)
    cpu, rx, tx = time.process_time() - cpu0, counts["received"] - rx0, counts["sent"] - tx0
    await _loadgen_result(proc)
    epoll.close()
    for lease in leases:
        lease.release()
    pairs = (rx + tx) / 2
    return {"us_per_packet_pair": round(1e6 * cpu / pairs, 3) if pairs else None, "received": rx, "sent": tx}


def component_costs(packets: int = 3000) -> dict[str, float]:
    """µs per call of each piece of the per-packet path, in this process without sockets (attribution)."""
    import socket

    from trunkline.codecs.registry import create_codec
    from trunkline.mediaserver.jitterbuffer import JitterBuffer
    from trunkline.mediaserver.rtp import RtpPacket, parse_rtp
    from trunkline.mediaserver.rtpstats import ReceiveStats
    from trunkline.mediaserver.session import RtpSession
    from trunkline.mediaserver.tick import run_tick

    wire = [RtpPacket(0, i & 0xFFFF, i * 160, 77, bytes(160)).serialize() for i in range(packets)]
    parsed = [parse_rtp(w) for w in wire]

    def per_call(fn: Any, calls: int = packets) -> float:
        cpu = time.process_time()
        fn()
        return round(1e6 * (time.process_time() - cpu) / calls, 3)

    stats = ReceiveStats(8000)
    jb = JitterBuffer(8000, 20)

    def jitter() -> None:
        for i, p in enumerate(parsed):
            jb.push(p, i * 0.02 + 0.003)
            jb.pop(i * 0.02 + 0.02)

    costs = {
        "parse_rtp": per_call(lambda: [parse_rtp(w) for w in wire]),
        "receive_stats_update": per_call(
            lambda: [stats.update(p.sequence_number, p.timestamp, i * 0.02) for i, p in enumerate(parsed)]
        ),
        "jitter_push_pop": per_call(jitter),
    }
    legs = [RtpSession(create_codec("PCMU", 8000), 0, remote=(HOST, 9)) for _ in range(200)]
    for leg in legs:
        leg.outbound.enqueue("u", _tone(packets * 0.02 + 1))
    ticks = packets // 20

    def drive() -> None:
        for t in range(ticks):
            for leg in legs:
                leg.receive(wire[t], (HOST, 9), t * 0.02 + 0.003)
            run_tick(legs, t * 0.02 + 0.02, t)

    costs["session_receive_plus_tick_per_leg"] = per_call(drive, ticks * len(legs))
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((HOST, 0))
    b.bind((HOST, 0))
    b.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS, as the engine reads
    target = b.getsockname()

    def sends() -> None:
        for _ in range(200):
            a.sendto(wire[0], target)

    def receives() -> None:
        for _ in range(200):
            b.recvmsg(4096, 64)

    send_us = recv_us = 0.0
    for _ in range(20):
        send_us += per_call(sends, 200) / 20
        recv_us += per_call(receives, 200) / 20
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


def run(
    legs: int = 200, seconds: float = 20.0, repeats: int = 5, warmup_s: float = 3.0, floor: bool = True
) -> dict:
    """Repeat the engine run (and the floor run) and report p50s; JSON-serialisable."""
    runs = [_one_run("engine", legs, seconds, warmup_s) for _ in range(repeats)]
    floors = [_one_run("floor", legs, seconds, warmup_s) for _ in range(repeats)] if floor else []
    us = [r["us_per_packet_pair"] for r in runs if r["us_per_packet_pair"] is not None]
    spacing = [r["loadgen"].get("spacing_p99_ms") for r in runs if "spacing_p99_ms" in r["loadgen"]]
    floor_us = [f["us_per_packet_pair"] for f in floors if f["us_per_packet_pair"] is not None]
    return {
        "component_costs_us": component_costs(),
        "legs": legs,
        "seconds": seconds,
        "repeats": repeats,
        "us_per_packet_pair_p50": round(statistics.median(us), 3) if us else None,
        "us_per_packet_pair_runs": us,
        "floor_us_per_pair": round(statistics.median(floor_us), 3) if floor_us else None,
        "outbound_spacing_p99_ms_p50": round(statistics.median(spacing), 3) if spacing else None,
        "outbound_underruns": sum(r["outbound_underruns"] for r in runs),
        "skipped_ticks": sum(r["skipped_ticks"] for r in runs),
        "how": (
            f"{legs} PCMU legs in one MediaEngine process (uvloop), all playing audio; loadgen process sends "
            f"{legs}x50 pps over loopback; server process CPU over {seconds:g} s after {warmup_s:g} s warmup "
            "/ ((rx+tx)/2); p50 over runs; floor = epoll drain + recvmsg + parse_rtp + sendto"
        ),
        "runs": runs,
        "floor_runs": floors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--no-floor", action="store_true")
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
    print(json.dumps(run(args.legs, args.seconds, args.repeats, args.warmup, not args.no_floor), indent=2))


if __name__ == "__main__":
    main()
