"""Capacity benchmark: concurrent G.711 legs one MediaEngine process carries while its outbound packet spacing
stays within 20 ± 5 ms at p99 and no leg underflows, and resident memory per additional leg.

Each step starts two fresh processes: the server under test (a MediaEngine on uvloop with N PCMU legs; every
leg's inbound frames go through webrtcvad, as the agent's listener does, and a TTS stand-in keeps 0.5-1.5 s of
audio queued on every leg) and a generator that sends N 20 ms streams over loopback from one socket and reads
everything the server sends back, with kernel receive timestamps (SO_TIMESTAMPNS), so spacing is read from the
wire. This process samples both children's CPU (/proc/<pid>/stat, user+sys) and RSS over the same window. N
steps up; the first step that fails twice sets the headline, and the ladder goes on (for the CPU-vs-legs
curve) until the server's CPU saturates or the time budget is spent.

    python -m bench.capacity [--quick] [--consumer task|batch|none] [--ladder 100,200,...]
    TRUNKLINE_BENCH_SCHED=none|nice|rr   TRUNKLINE_BENCH_GC_FREEZE=1 (what-if: gc.freeze() in the engine)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Metric

HOST = "127.0.0.1"
PORT_MIN, PORT_MAX = 26000, 31999
FRAME_S = 0.02
FRAME_SAMPLES = 160
SPACING_TOLERANCE_MS = 5.0
CPU_SATURATED_PCT = 90.0  # SCHED_RR is throttled at 95 % of a core (sched_rt_runtime_us)
# Both children run with real-time round-robin priority when allowed (media servers are deployed that way:
# FreeSWITCH -rp, Asterisk -p), so other work on a shared box does not decide the spacing. On this 2-core
# box under other load, nice -10 still left a bare 20 ms sleep loop 16 ms late at p99; SCHED_RR 0.1 ms.
# TRUNKLINE_BENCH_SCHED=none measures at normal priority.
SCHED = os.environ.get("TRUNKLINE_BENCH_SCHED", "rr" if os.geteuid() == 0 else "none")
# What-if, not the headline (the server does not do it yet): gc.freeze() in the engine after startup.
GC_FREEZE = os.environ.get("TRUNKLINE_BENCH_GC_FREEZE", "") == "1"
_SCHED_PREFIX = {"rr": ["chrt", "-r", "10"], "nice": ["nice", "-n", "-10"], "none": []}
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_HDR = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])
# (legs per step, warmup s, window s, time budget s); streams start over the first second of the warmup
FULL = ((50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1400, 1600, 2000), 2.0, 3.0, 105.0)
QUICK = ((100, 200, 400), 1.5, 2.0, 24.0)


# ------------------------------------------------------------------------------------------ pure helpers


def spacing_summary(
    leg: np.ndarray, seq: np.ndarray, arrival_s: np.ndarray, silent: np.ndarray, frame_ms: float = 20.0
) -> dict[str, Any]:
    """Per-leg inter-arrival gaps of received packets (in arrival order within a leg), pooled over legs;
    `missing` counts sequence jumps (lost or skipped packets), `silent_frames` packets of idle silence."""
    out: dict[str, Any] = {"packets": int(leg.size), "silent_frames": int(np.count_nonzero(silent))}
    order = np.lexsort((arrival_s, leg))
    leg_o, seq_o, t_o = leg[order], seq[order].astype(np.int64), arrival_s[order]
    same = leg_o[1:] == leg_o[:-1]
    gaps_ms = (np.diff(t_o) * 1000.0)[same]
    steps = ((seq_o[1:] - seq_o[:-1]) % 65536)[same]
    out["missing"] = int(np.sum(np.where(steps == 0, 1, steps - 1)))
    out["gaps"] = int(gaps_ms.size)
    if not gaps_ms.size:
        return out
    dev = np.abs(gaps_ms - frame_ms)
    for q in (1, 50, 99, 99.9):
        out[f"spacing_p{q:g}_ms"] = round(float(np.percentile(gaps_ms, q)), 3)
    out["spacing_max_ms"] = round(float(gaps_ms.max()), 3)
    out["deviation_p99_ms"] = round(float(np.percentile(dev, 99)), 3)
    out["outside_tolerance_pct"] = round(100.0 * float(np.mean(dev > SPACING_TOLERANCE_MS)), 4)
    return out


def verdict(step: dict[str, Any]) -> tuple[bool, list[str]]:
    """Pass when p99 spacing deviation ≤ 5 ms, nothing missing, no leg underflowed (wire or engine)."""
    reasons = []
    dev = step.get("deviation_p99_ms")
    if dev is None or dev > SPACING_TOLERANCE_MS:
        reasons.append(f"p99 |spacing-20| {dev} ms > {SPACING_TOLERANCE_MS:g}")
    if step.get("missing", 1):
        reasons.append(f"{step.get('missing')} packets missing")
    if step.get("underflows", 1):
        reasons.append(f"{step.get('underflows')} underflow frames")
    if step.get("expected_pct", 0.0) < 99.0:
        reasons.append(f"only {step.get('expected_pct')} % of expected packets")
    return not reasons, reasons


def linear_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def headline(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest N passing before the first confirmed failure, legs per core of engine CPU, RSS slopes."""
    best: dict[str, Any] | None = None
    for step in steps:
        if step["passed"]:
            if best is None or step["legs"] > best["legs"]:
                best = step
        elif step.get("confirmed_fail"):
            break
    out: dict[str, Any] = {"max_legs_passing": best["legs"] if best else 0}
    cores = (best or {}).get("engine_cpu_pct", 0.0) / 100.0
    out["engine_cpu_pct_at_max"] = (best or {}).get("engine_cpu_pct")
    out["legs_per_core"] = round(best["legs"] / cores) if best and cores > 0 else (0 if steps else None)
    ok = [s for s in steps if "rss_kb" in s]
    slope = linear_slope([s["legs"] for s in ok], [s["rss_kb"] for s in ok])
    idle = linear_slope([s["legs"] for s in ok], [s["rss_idle_kb"] for s in ok])
    out["rss_kb_per_leg"] = None if slope is None else round(slope, 2)
    out["rss_kb_per_idle_leg"] = None if idle is None else round(idle, 2)
    return out


# ------------------------------------------------------------------------------------------ /proc


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat (other helpers load it too)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def udp_drops(ports: set[int]) -> int:
    """Kernel receive-queue drops summed over our UDP sockets on these local ports (/proc/net/udp)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) in ports:
            total += int(parts[-1])
    return total


# ------------------------------------------------------------------------------------------ engine child


def _tone_pcm(seconds: float, freq_hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000.0
    rng = np.random.default_rng(11)
    x = amplitude * np.sin(2 * math.pi * freq_hz * t) * (0.6 + 0.4 * np.sin(2 * math.pi * 3 * t))
    return (x + rng.normal(0, 300, t.size)).astype(np.int16)


async def _stdin_json() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    order: dict[str, Any] = json.loads(line)
    return order


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


def _engine_counters(engine: Any, vads: list[Any]) -> dict[str, int]:
    totals: dict[str, int] = {"vad_frames": sum(v.stats.frames for v in vads)}
    for leg in engine.legs:
        c = leg.stats().counters
        for key in ("received", "sent", "outbound_underruns", "frames_concealed", "inbound_dropped"):
            totals[key] = totals.get(key, 0) + getattr(c, key, 0)
    ticker = engine.ticker_stats()
    totals["skipped_ticks"] = getattr(ticker, "skipped_ticks", 0)
    totals["late_ticks"] = getattr(ticker, "late_ticks", 0)
    totals["max_lateness_us"] = int(1e6 * getattr(ticker, "max_lateness_s", 0.0))
    totals["tick_errors"] = getattr(engine, "tick_errors", 0)
    return totals


async def serve_engine(legs: int, consumer: str) -> dict[str, Any]:
    """The server under test: open N legs, report ports, then run the plan the parent sends."""
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.vad.vad import WebRtcVad

    engine = MediaEngine(HOST, PORT_MIN, PORT_MAX)
    await engine.start()
    opened = [engine.open_leg("PCMU", 8000, 0) for _ in range(legs)]
    vads = [WebRtcVad(8000, aggressiveness=2, frame_ms=20) for _ in opened]
    if GC_FREEZE:  # what-if: objects alive after startup leave the collector's view (gc.freeze)
        import gc

        gc.collect()
        gc.freeze()
    print(json.dumps({"ports": [leg.local_port for leg in opened]}), flush=True)
    plan = await _stdin_json()
    chunk = _tone_pcm(0.5, 220.0, 5000.0)
    for i, leg in enumerate(opened):  # queued before the first packet: every packet on the wire is speech
        leg.play("tts", chunk, 8000)
        # a first chunk of a different length per leg, so chunk boundaries (a slower path) are spread over
        # ticks as unrelated calls' would be, not all in one tick
        leg.play("tts", chunk[: FRAME_SAMPLES * (1 + i % 25)], 8000)
        leg.set_remote((HOST, int(plan["remote"])))
    stop = asyncio.Event()

    async def feed() -> None:
        """A TTS stand-in streaming one long utterance per leg in 0.5 s chunks (0.5-1.5 s queued); chunk
        boundaries stay spread over ticks because the first chunks differ in length."""
        while not stop.is_set():
            for leg in opened:
                if leg.session.outbound.queued_s < 1.0:
                    leg.play("tts", chunk, 8000)
            await asyncio.sleep(FRAME_S)

    async def listen(leg: Any, vad: Any) -> None:  # the agent's listener: one task per call
        async for frame in leg.frames:
            vad.is_speech(frame)

    async def listen_batched() -> None:  # alternative: one task classifies every leg's frames after a tick
        while not stop.is_set():
            await engine.wait_ticks(1)
            for leg, vad in zip(opened, vads, strict=True):
                for frame in leg.frames.drain():
                    vad.is_speech(frame)

    tasks = [asyncio.create_task(feed())]
    if consumer == "task":
        tasks += [asyncio.create_task(listen(leg, vad)) for leg, vad in zip(opened, vads, strict=True)]
    elif consumer == "batch":
        tasks.append(asyncio.create_task(listen_batched()))
    t0, t1 = plan["window"]
    gc_pauses = _watch_gc()
    ticks = _watch_ticks(engine)
    await _sleep_until(t0)
    before = _engine_counters(engine, vads)
    await _sleep_until(t1)
    after = _engine_counters(engine, vads)
    await _sleep_until(plan["end"])  # still running while the parent samples /proc at t1
    stop.set()
    for task in tasks:
        task.cancel()
    await engine.aclose()
    result: dict[str, Any] = {k: after[k] - before[k] for k in after}
    result.update(_gc_summary(gc_pauses, t0, t1))
    result.update(_tick_summary(ticks, t0, t1))
    return result


def _watch_ticks(engine: Any) -> list[tuple[float, float]]:
    """(start, wall seconds) of every pacer callback, to tell a slow tick from a late one (instrumentation
    only: wraps the engine's timer callback when it has the expected name, else records nothing)."""
    record: list[tuple[float, float]] = []
    inner = getattr(engine, "_on_timer", None)
    if callable(inner):

        def timed() -> None:
            t = time.monotonic()
            inner()
            record.append((t, time.monotonic() - t))

        engine._on_timer = timed
    return record


def _tick_summary(ticks: list[tuple[float, float]], t0: float, t1: float) -> dict[str, Any]:
    ms = np.asarray([d for t, d in ticks if t0 <= t < t1]) * 1000.0
    if not ms.size:
        return {}
    return {
        "pacer_callback_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "pacer_callback_ms_p99": round(float(np.percentile(ms, 99)), 2),
        "pacer_callback_ms_max": round(float(ms.max()), 2),
        "pacer_callbacks_over_5ms_above_p50": int(np.sum(ms > np.percentile(ms, 50) + 5.0)),
    }


def _watch_gc() -> list[tuple[float, int, float]]:
    """Record (start, generation, duration) of every garbage collection: a pause the pacer cannot run in."""
    import gc

    pauses: list[tuple[float, int, float]] = []
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.monotonic(), info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(on_gc)
    return pauses


def _gc_summary(pauses: list[tuple[float, int, float]], t0: float, t1: float) -> dict[str, Any]:
    inside = [(g, d) for t, g, d in pauses if t0 <= t < t1]
    out: dict[str, Any] = {f"gc_gen{g}_count": sum(1 for x, _ in inside if x == g) for g in (0, 1, 2)}
    out["gc_max_pause_ms"] = round(1000 * max((d for _, d in inside), default=0.0), 2)
    out["gc_gen2_max_ms"] = round(1000 * max((d for g, d in inside if g == 2), default=0.0), 2)
    return out


# ------------------------------------------------------------------------------------------ generator child


class _Generator:
    """N RTP streams from one socket, staggered over the 20 ms period and starting over the first second (as
    unrelated calls would: the engine's per-leg periodic work is not all in one tick); records every packet
    it gets back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.ports: list[int] = []
        self.headers: list[bytes] = []
        self.stamps: list[bytes] = []
        self.silent: list[bool] = []
        self.late_s: list[float] = []

    def drain(self, silence: bytes) -> None:
        recvmsg, ports, headers, stamps, silent = (
            self.sock.recvmsg,
            self.ports,
            self.headers,
            self.stamps,
            self.silent,
        )
        while True:
            try:
                data, anc, _flags, addr = recvmsg(512, 64)
            except BlockingIOError:
                return
            ports.append(addr[1])
            headers.append(data[:12])
            stamps.append(anc[0][2][:16] if anc else struct.pack("@qq", *divmod(time.time_ns(), 10**9)))
            silent.append(data[12:] == silence)

    def run(self, targets: list[int], start: float, end: float, groups: int = 10) -> None:
        from trunkline.codecs.g711 import ulaw_encode

        pcm = _tone_pcm(1.0, 300.0, 7000.0)
        frames = [ulaw_encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(50)]
        silence = ulaw_encode(np.zeros(FRAME_SAMPLES, np.int16))
        poller = select.epoll()
        poller.register(self.sock.fileno(), select.EPOLLIN)
        addrs = [(HOST, p) for p in targets]
        sub = FRAME_S / groups
        n = 0
        sendto, pack = self.sock.sendto, struct.Struct("!BBHII").pack
        while True:
            deadline = start + n * sub
            now = time.monotonic()
            if now >= end:
                break
            if now < deadline:
                if poller.poll(deadline - now):
                    self.drain(silence)
                continue
            self.late_s.append(now - deadline)
            tick, group = divmod(n, groups)
            payload = frames[tick % 50]
            for i in range(group, len(addrs), groups):
                first = (i // groups) % 50  # calls start over the first second, not all in one tick
                if tick < first:
                    continue
                marker = 0x80 if tick == first else 0
                header = pack(0x80, marker, (i * 7 + tick) & 0xFFFF, tick * 160, i + 1)
                with contextlib.suppress(BlockingIOError):  # counted as missing on the way back
                    sendto(header + payload, addrs[i])
            n += 1
        self.drain(silence)
        poller.close()

    def summary(self, window: tuple[float, float]) -> dict[str, Any]:
        if not self.ports:
            return {"packets": 0}
        hdr = np.frombuffer(b"".join(self.headers), dtype=_HDR)
        ts = np.frombuffer(b"".join(self.stamps), dtype=np.int64).reshape(-1, 2)
        offset = time.time() - time.monotonic()  # kernel stamps are wall clock; the plan is monotonic
        arrival = ts[:, 0] + ts[:, 1] * 1e-9 - offset
        inside = (arrival >= window[0]) & (arrival < window[1])
        legs = np.asarray(self.ports, dtype=np.int64)[inside]
        out = spacing_summary(legs, hdr["seq"][inside], arrival[inside], np.asarray(self.silent)[inside])
        late_ms = np.asarray(self.late_s) * 1000.0
        out["send_late_p99_ms"] = round(float(np.percentile(late_ms, 99)), 3) if late_ms.size else None
        out["send_late_max_ms"] = round(float(late_ms.max()), 3) if late_ms.size else None
        return out


def serve_generator() -> dict[str, Any]:
    gen = _Generator()
    print(json.dumps({"port": gen.sock.getsockname()[1]}), flush=True)
    plan = json.loads(sys.stdin.readline())
    targets = [int(p) for p in plan["targets"]]
    gen.run(targets, float(plan["start"]), float(plan["end"]))
    result = gen.summary((float(plan["window"][0]), float(plan["window"][1])))
    gen.sock.close()
    return result


# ------------------------------------------------------------------------------------------ orchestration


def _sched_prefix() -> list[str]:
    """The command prefix for SCHED, or none when this box does not allow it (no CAP_SYS_NICE, no chrt)."""
    prefix = _SCHED_PREFIX.get(SCHED, [])
    if prefix and subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode != 0:
        return []
    return prefix


def _spawn(*args: str, prefix: list[str]) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "bench.capacity", *args],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_json(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"capacity child {proc.pid} gave no answer (exit {proc.poll()})")
    result: dict[str, Any] = json.loads(line)
    return result


def _send_json(proc: subprocess.Popen[str], order: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(order) + "\n")
    proc.stdin.flush()


def _sample(pids: tuple[int, int]) -> dict[str, float]:
    busy, total = box_cpu()
    return {
        "t": time.monotonic(),
        "engine_cpu_s": proc_cpu_s(pids[0]),
        "gen_cpu_s": proc_cpu_s(pids[1]),
        "box_busy": busy,
        "box_total": total,
    }


def run_step(legs: int, consumer: str, warmup_s: float, window_s: float) -> dict[str, Any]:
    """One step in fresh processes: N legs, warmup, then a measured window read on both sides."""
    prefix = _sched_prefix()
    engine = _spawn("--child", "engine", "--legs", str(legs), "--consumer", consumer, prefix=prefix)
    gen = _spawn("--child", "generator", prefix=prefix)
    try:
        ports = _read_json(engine, 60)["ports"]
        gen_port = int(_read_json(gen, 30)["port"])
        rss_idle = proc_rss_kb(engine.pid)
        start = time.monotonic() + 0.3
        window = [start + warmup_s, start + warmup_s + window_s]
        plan = {"start": start, "window": window, "end": window[1] + 0.3}
        _send_json(engine, {**plan, "remote": gen_port})
        _send_json(gen, {**plan, "targets": ports})
        time.sleep(max(0.0, window[0] - time.monotonic()))
        a = _sample((engine.pid, gen.pid))
        time.sleep(max(0.0, window[1] - time.monotonic()))
        b = _sample((engine.pid, gen.pid))  # both still run until plan["end"]
        rss = proc_rss_kb(engine.pid)
        drops_engine, drops_gen = udp_drops(set(ports)), udp_drops({gen_port})
        eng = _read_json(engine, 30)
        wire = _read_json(gen, 60)
    finally:
        for proc in (engine, gen):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    step = _step_result(legs, window_s, a, b, eng, wire, rss, rss_idle, drops_engine, drops_gen)
    step["sched"] = " ".join(prefix) or "default"
    return step


def _step_result(
    legs: int,
    window_s: float,
    a: dict[str, float],
    b: dict[str, float],
    eng: dict[str, Any],
    wire: dict[str, Any],
    rss_kb: int,
    rss_idle_kb: int,
    drops_engine: int,
    drops_gen: int,
) -> dict[str, Any]:
    wall = b["t"] - a["t"]
    ncpu = os.cpu_count() or 1
    step: dict[str, Any] = {
        "legs": legs,
        "engine_cpu_pct": round(100 * (b["engine_cpu_s"] - a["engine_cpu_s"]) / wall, 1),
        "generator_cpu_pct": round(100 * (b["gen_cpu_s"] - a["gen_cpu_s"]) / wall, 1),
        "box_busy_pct": round(
            100 * ncpu * (b["box_busy"] - a["box_busy"]) / (b["box_total"] - a["box_total"]), 1
        ),
        "rss_kb": rss_kb,
        "rss_idle_kb": rss_idle_kb,
        "underflows": int(wire.get("silent_frames", 0)) + int(eng.get("outbound_underruns", 0)),
        "expected_pct": round(100 * wire.get("packets", 0) / (legs * window_s / FRAME_S), 2),
        "udp_drops_engine": drops_engine,
        "udp_drops_generator": drops_gen,
        "engine": eng,
    }
    step["box_busy_pct_of_cores"] = f"{step['box_busy_pct']} % of {ncpu * 100} %"
    step.update({k: v for k, v in wire.items() if k not in step})
    step["passed"], step["fail_reasons"] = verdict(step)
    return step


def ladder(
    legs: tuple[int, ...], consumer: str, warmup_s: float, window_s: float, budget_s: float
) -> dict[str, Any]:
    """Step N up; a failing step is retried once (noisy box) and a confirmed failure sets the headline. The
    ladder then goes on without retries, for the CPU-vs-legs curve, until the engine's CPU saturates."""
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    stop_reason = "ladder top reached"
    failed_at: int | None = None
    for n in legs:
        step = _timed_step(n, consumer, warmup_s, window_s)
        steps.append(step)
        if failed_at is None and not step["passed"] and time.monotonic() - started < budget_s:
            step = _timed_step(n, consumer, warmup_s, window_s, retry=True)
            steps.append(step)
        if failed_at is None and not step["passed"]:
            step["confirmed_fail"] = True
            failed_at = n
            stop_reason = f"failed at {n} legs: {'; '.join(step['fail_reasons'])}"
        if _saturated(step):
            stop_reason += f"; engine saturated at {n} legs" if failed_at else f"engine saturated at {n}"
            break
        if time.monotonic() - started > budget_s:
            stop_reason += f"; time budget ({budget_s:g} s) spent after {n} legs"
            break
    result = {"consumer": consumer, "steps": steps, "stop_reason": stop_reason, **headline(steps)}
    result["limited_by"] = _limited_by([s for s in steps if s.get("confirmed_fail")] or steps[-1:])
    result["legs_at_full_core"] = _legs_at_full_core(steps)
    unsaturated = [s for s in steps if not _saturated(s)]
    slope = linear_slope([s["legs"] for s in unsaturated], [s["engine_cpu_pct"] for s in unsaturated])
    # % of a core per leg -> µs of engine CPU per leg per 20 ms frame (both directions, VAD included)
    result["engine_us_per_leg_frame"] = None if slope is None else round(slope / 100 * 1e6 * FRAME_S, 1)
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


def _saturated(step: dict[str, Any]) -> bool:
    """The engine is out of CPU: near a full core, or its median tick callback takes a whole period."""
    tick_ms = step.get("engine", {}).get("pacer_callback_ms_p50", 0.0)
    return bool(step["engine_cpu_pct"] >= CPU_SATURATED_PCT or tick_ms >= FRAME_S * 1000)


def _legs_at_full_core(steps: list[dict[str, Any]]) -> int | None:
    """Where a straight line through engine CPU vs N reaches 100 % of one core: the CPU-bound ceiling,
    which spacing failures may keep the engine from reaching."""
    steps = [s for s in steps if not _saturated(s)]  # a saturated step's CPU is flat
    slope = linear_slope([s["legs"] for s in steps], [s["engine_cpu_pct"] for s in steps])
    if not slope or slope <= 0:
        return None
    xs = np.asarray([s["legs"] for s in steps], float)
    intercept = float(np.mean([s["engine_cpu_pct"] for s in steps]) - slope * xs.mean())
    return int((100.0 - intercept) / slope)


def _timed_step(
    n: int, consumer: str, warmup_s: float, window_s: float, retry: bool = False
) -> dict[str, Any]:
    step = run_step(n, consumer, warmup_s, window_s)
    step["retry"] = retry
    print(
        f"[capacity] {consumer} {n:5d} legs{' (retry)' if retry else ''}: "
        f"engine {step['engine_cpu_pct']:5.1f}% gen {step['generator_cpu_pct']:5.1f}% "
        f"box {step['box_busy_pct']:5.1f}% tick p50/max {step['engine'].get('pacer_callback_ms_p50')}/"
        f"{step['engine'].get('pacer_callback_ms_max')} ms "
        f"spacing p50/p99/max {step.get('spacing_p50_ms')}/{step.get('spacing_p99_ms')}/"
        f"{step.get('spacing_max_ms')} ms dev99 {step.get('deviation_p99_ms')} "
        f"underflows {step['underflows']} missing {step.get('missing')} rss {step['rss_kb'] / 1024:.0f} MB "
        f"{'PASS' if step['passed'] else 'FAIL: ' + '; '.join(step['fail_reasons'])}",
        file=sys.stderr,
        flush=True,
    )
    return step


def _limited_by(failed: list[dict[str, Any]]) -> str:
    """What ended the passing range: the engine's CPU or pacer stalls, the generator (it shares the 2 cores),
    or the box."""
    if not failed or failed[0]["passed"]:
        return "nothing failed (ladder top, CPU or time budget ended it)"
    last = failed[0]
    eng = last.get("engine", {})
    if _saturated(last):
        return "engine CPU (one core saturated)"
    if last["generator_cpu_pct"] >= 90.0 or last.get("udp_drops_generator", 0):
        return "generator (its CPU or receive queue), not necessarily the engine"
    stall_ms = eng.get("pacer_callback_ms_max", 0.0) - eng.get("pacer_callback_ms_p50", 0.0)
    if stall_ms > SPACING_TOLERANCE_MS:
        return (
            f"engine pacer stalls: longest tick callback {eng['pacer_callback_ms_max']} ms vs p50 "
            f"{eng['pacer_callback_ms_p50']} ms, longest gen-2 GC pause {eng.get('gc_gen2_max_ms')} ms "
            "(periodic work for every leg in one tick, or a full garbage collection)"
        )
    if last["box_busy_pct"] >= 100.0 * (os.cpu_count() or 1) - 10.0:
        return "the whole box (engine + generator + other processes use every core)"
    return "engine scheduling (spacing/underflow failed below full CPU)"


def run(quick: bool = False, consumers: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The headline ladder (VAD in one task per leg, as the agent reads frames) and, in the full run, the
    same ladder with VAD batched in one task; JSON-serialisable. Full ≲ 2 min, quick ≲ 30 s."""
    legs, warmup_s, window_s, budget_s = QUICK if quick else FULL
    consumers = consumers or (("task",) if quick else ("task", "batch"))
    started = time.monotonic()
    ladders: dict[str, Any] = {}
    for k, consumer in enumerate(consumers):
        left = budget_s - (time.monotonic() - started)
        if ladders and left < 15.0:
            ladders[consumer] = {"error": "skipped: time budget spent"}
            continue
        ladders[consumer] = ladder(legs, consumer, warmup_s, window_s, left / (len(consumers) - k))
    main = ladders[consumers[0]]
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    return {
        **{k: main[k] for k in ("max_legs_passing", "legs_per_core", "engine_cpu_pct_at_max")},
        **{k: main[k] for k in ("rss_kb_per_leg", "rss_kb_per_idle_leg", "limited_by", "stop_reason")},
        "legs_at_full_core": main["legs_at_full_core"],
        "engine_us_per_leg_frame": main["engine_us_per_leg_frame"],
        "sched": " ".join(_sched_prefix()) or "default",
        "gc_freeze": GC_FREEZE,
        "consumer": consumers[0],
        "steps": main["steps"],
        "ladders": ladders,
        "quick": quick,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "loadavg_at_end": [float(x) for x in uptime],
        "duration_s": round(time.monotonic() - started, 1),
        "how": _how(window_s, warmup_s, " ".join(_sched_prefix()) or "default priority"),
    }


def _how(window_s: float, warmup_s: float, sched: str) -> str:
    return (
        "Per step two fresh processes: a MediaEngine (uvloop) with N PCMU/20 ms legs, every inbound frame "
        "through webrtcvad (mode 2; headline: one asyncio task per leg reading `leg.frames`, as the "
        "agent's listener does; comparator: one task classifying every leg's frames after each tick), a TTS "
        "stand-in keeping 0.5-1.5 s of 8 kHz audio queued per leg; and a generator sending N 50 pps streams "
        "(staggered in the 20 ms period, starting over the first second) from one loopback socket and "
        "timestamping every returned packet in the kernel (SO_TIMESTAMPNS). "
        f"Both run as `{sched}` (real-time round robin keeps other work on a shared box out of the spacing). "
        f"After {warmup_s:g} s warmup, a "
        f"{window_s:g} s window: engine and generator CPU from /proc/<pid>/stat (user+sys, % of one core); "
        "outbound spacing per leg from the wire (pass: p99 of |gap − 20 ms| ≤ 5 ms); underflows = silent "
        "frames on the wire + engine outbound underruns (pass: 0); no missing sequence numbers. N steps up; "
        "a failing step is retried once. legs/core = largest passing N / engine cores used at that N. RSS "
        "per leg = least-squares slope of engine VmRSS over N (with audio queued; 'idle' = right after the "
        "legs were opened). The generator shares the 2 cores with the engine and other work on the box: "
        "its CPU and the box's are in every step."
    )


def metrics(result: dict[str, Any]) -> list[Metric]:
    """Rows for the report: legs per core (target ≥ 1,000) and RSS per additional leg."""
    legs_pc = result.get("legs_per_core")
    batch = (result.get("ladders") or {}).get("batch") or {}
    how = (
        f"{result.get('how', '')} Largest passing N: {result.get('max_legs_passing')} at "
        f"{result.get('engine_cpu_pct_at_max')} % engine CPU; ended: {result.get('stop_reason')}; "
        f"limited by: {result.get('limited_by')}. Engine CPU reaches one core at ~"
        f"{result.get('legs_at_full_core')} legs (linear fit over unsaturated steps; "
        f"{result.get('engine_us_per_leg_frame')} µs engine CPU per leg per 20 ms). "
        f"Load average at end: {result.get('loadavg_at_end')}."
    )
    return [
        Metric(
            metric_id="capacity_legs_per_core",
            title=(
                "Concurrent G.711 legs per core (spacing 20±5 ms p99, no underflow): "
                f"{result.get('max_legs_passing')} legs passed at {result.get('engine_cpu_pct_at_max')} % "
                "of a core"
            ),
            unit="legs",
            value=legs_pc,
            target="≥ 1000 legs",
            passed=None if legs_pc is None else legs_pc >= 1000,
            comparator=(
                "same ladder, VAD batched in one task"
                if batch.get("steps")
                else "VAD batched in one task: not run (--quick or time budget)"
            ),
            comparator_value=batch.get("legs_per_core"),
            how=how,
            extra={k: v for k, v in result.items() if k not in ("ladders", "steps")},
        ),
        Metric(
            metric_id="capacity_rss_per_leg_kb",
            title="Resident memory per additional leg (0.5-1.5 s audio queued)",
            unit="KB",
            value=result.get("rss_kb_per_leg"),
            target="report only",
            passed=None,
            comparator="idle leg (no audio queued)",
            comparator_value=result.get("rss_kb_per_idle_leg"),
            how="Least-squares slope of the engine's VmRSS over N across all steps run.",
        ),
    ]


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--consumer", choices=("task", "batch", "none"), default=None)
    parser.add_argument("--legs", type=int, default=0, help="child: legs; parent: unused")
    parser.add_argument("--ladder", default="", help="comma-separated N values (parent)")
    parser.add_argument("--child", choices=("engine", "generator"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "engine":
        import uvloop

        _raise_fd_limit()
        print(json.dumps(uvloop.run(serve_engine(args.legs, args.consumer or "task"))), flush=True)
        return
    if args.child == "generator":
        print(json.dumps(serve_generator()), flush=True)
        return
    if args.ladder:
        legs = tuple(int(x) for x in args.ladder.split(","))
        result = ladder(legs, args.consumer or "task", FULL[1], FULL[2], 600.0)
    else:
        result = run(args.quick, (args.consumer,) if args.consumer else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
