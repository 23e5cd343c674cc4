"""The capacity benchmark's child processes: the server under test (a MediaEngine with N legs, VAD on every
inbound frame, a TTS stand-in) and the generator that sends N RTP streams and timestamps what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import select
import socket
import struct
import sys
import time
from typing import Any

import numpy as np

from bench.capacity_analysis import FRAME_S, spacing_summary

HOST = "127.0.0.1"
PORT_MIN, PORT_MAX = 26000, 31999
FRAME_SAMPLES = 160
# What-if, not the headline (the server does not do it yet): gc.freeze() in the engine after startup.
GC_FREEZE = os.environ.get("TRUNKLINE_BENCH_GC_FREEZE", "") == "1"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it
_HDR = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])


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
