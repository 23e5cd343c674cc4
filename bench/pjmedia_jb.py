"""Comparator: the seeded jitter traces replayed through pjmedia's jitter buffer (pjsua2), scored like ours.

Two local pjsua2 accounts in one worker process call each other over SIP on 127.0.0.1 (PCMU, 20 ms, null sound
device, conference bridge at 8 kHz so nothing is resampled; pjmedia's jitter buffer left at its adaptive
defaults with progressive discard). The callee's SDP answer advertises the impairing relay (bench/trace_relay.py)
as its RTP address, so the caller's RTP reaches the callee only through the relay, which releases packet k at
t0 + arrival_k of the trace (or drops it) and stamps its payload with a marker naming (k, half). A sink port on
the callee's conference bridge records every 20 ms frame the bridge pulls from the call with its monotonic time.
Attributing each played 10 ms to a marker half gives playout − arrival per packet and the frames that were
concealed, dropped or inserted — the same definitions as bench/jitter_quality.py, counted in 10 ms halves
because pjmedia's G.711 jitter buffer stores 10 ms frames. pjsua2 (GPL-2.0) is imported only here, lazily, in a
child process (its teardown can assert; the harness must survive that).

Run: python bench/pjmedia_jb.py   (prints JSON; about 2 × 62 s of real time)
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import wave
from pathlib import Path
from typing import Any

import numpy as np

from numpy.lib.stride_tricks import sliding_window_view

from trunkline.codecs.g711 import ulaw_decode

try:
    from bench import jitter_quality
    from bench.trace_relay import HALF_SAMPLES, marker_payload, trace_slice, try_realtime
    from bench.traces import TRACES, TracePacket
except ImportError:  # run as a script: python bench/pjmedia_jb.py
    import jitter_quality  # type: ignore[no-redef]
    from trace_relay import HALF_SAMPLES, marker_payload, trace_slice, try_realtime  # type: ignore[no-redef]
    from traces import TRACES, TracePacket  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 8000
TICK_S = 0.020
GRID_TICKS = 25
FRAME_SAMPLES = 160  # one 20 ms bridge tick
_KEY_AT = 50  # samples 50..53 of a marker half locate it anywhere in the stream
_MERGE = 40  # pjmedia cross-fades 5 ms at each edge of a concealment
_FUZZY_ROWS = 100  # how far ahead (in halves) a cross-faded half is looked for
_FUZZY_MIN_CORR = 0.5  # unrelated 80-sample signals correlate at ~N(0, 0.11)
PHASE_MS = 7.5  # bridge ticks sit this far after the virtual send grid: the mean of our four replay phases
DRAIN_S = 1.0
STAT_POLL_S = 0.02
JBUF_FIELDS = ("avgDelayMsec", "minDelayMsec", "maxDelayMsec", "devDelayMsec", "lost", "discard", "empty",
               "frameSize", "size", "prefetch", "minPrefetch", "maxPrefetch", "burst", "avgBurst")
NOT_INSTALLED = "pjsua2-python not installed: pip install 'trunkline[bench]'"


# ---------------------------------------------------------------- scoring (pure)

def marker_halves(count: int) -> np.ndarray:
    """Decoded PCM of every marker half: row 2k + h is half h of trace packet k."""
    pcm = [ulaw_decode(marker_payload(k)) for k in range(count)]
    return np.stack(pcm).reshape(2 * count, HALF_SAMPLES)


def grid_offset(stream: np.ndarray, halves: np.ndarray) -> int:
    """Where 10 ms packet boundaries fall in the played stream, in samples after a tick boundary (mod 10 ms).
    pjmedia's concealer delays its output by a constant, so this is found once from verbatim marker tails."""
    keys = np.ascontiguousarray(halves[:, _KEY_AT : _KEY_AT + 4]).view(np.uint64).ravel()
    windows = np.ascontiguousarray(sliding_window_view(stream, 4)).view(np.uint64).ravel()
    starts = (np.nonzero(np.isin(windows, keys))[0] - _KEY_AT) % HALF_SAMPLES
    if not len(starts):
        raise ValueError("no marker found in the callee's played audio: the relay path did not carry the call")
    return int(np.bincount(starts).argmax())


def slot_rows(stream: np.ndarray, halves: np.ndarray, offset: int) -> tuple[list[int | None], int]:
    """The marker half (row) each 10 ms slot of the stream carries, or None. pjmedia cross-fades 5 ms at each
    edge of a concealment, so a half is matched by a verbatim head or tail; one with both edges faded (between
    two concealments) by its correlation with the next unplayed halves (counted: the second value)."""
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
    pcm = np.frombuffer(b"".join(data if len(data) == len(silence) else silence for _, data in frames), "<i2")
    return pcm, np.array([t for t, _ in frames])


def _walk(rows: list[int | None], offset: int, released: list[float | None], ticks: np.ndarray
          ) -> tuple[dict[int, float], int]:
    """Tick at which each half's packet started playing (first playout only) and the number of inserted
    slots: unmatched slots between two played halves beyond the missing halves they stand in for."""
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


def score_playout(trace: list[TracePacket], log: dict[str, Any], frames: list[tuple[float, bytes]]
                  ) -> dict[str, Any]:
    """jitter_quality's metrics from a real playout, in 10 ms halves: halves never played (late/dropped) plus
    halves inserted where nothing was missing, over all sent halves; network loss excluded."""
    released: list[float | None] = log["released"] + [None] * (len(trace) - len(log["released"]))
    t0: float = log["t0"]
    stream, ticks = played_stream(frames)
    halves = marker_halves(len(trace))
    offset = grid_offset(stream, halves)
    rows, fuzzy = slot_rows(stream, halves, offset)
    played, inserted = _walk(rows, offset, released, ticks)
    added = [(t - released[r // 2]) * 1000 for r, t in played.items()]  # type: ignore[operator]
    net = [r - t0 - p.send_time_s for p, r in zip(trace, released, strict=True) if r is not None]
    above = [(t - t0 - trace[r // 2].send_time_s - min(net)) * 1000 for r, t in played.items()]
    unplayed = 2 * len(net) - len(played)
    return {
        "mean_added_delay_ms": round(statistics.fmean(added), 3),
        "p50_added_delay_ms": round(statistics.median(added), 3),
        "p95_added_delay_ms": round(statistics.quantiles(added, n=20)[18], 3),
        "mean_delay_above_min_ms": round(statistics.fmean(above), 3),
        "conceal_or_drop_pct": round(100 * (unplayed + inserted) / (2 * len(trace)), 3),
        "network_loss_pct": round(100 * sum(p.arrival_time_s is None for p in trace) / len(trace), 3),
        "late_or_dropped_packets": unplayed / 2,
        "inserted_frames": inserted / 2,
        # pjmedia's concealer plays everything this much after the tick that took it from the buffer (it
        # keeps a delay line to cross-fade); not buffer delay, so it is not in mean_added_delay_ms
        "decoder_delay_line_ms": offset / RATE_HZ * 1000,
        "halves_matched_by_correlation": fuzzy,
        "first_last_played_s": [min(played.values()), max(played.values())],
    }


def timing_quality(log: dict[str, Any], frames: list[tuple[float, bytes]]) -> dict[str, Any]:
    """How faithfully real time followed the trace: relay lateness, sender lateness, bridge tick regularity."""
    late = sorted((r - s) * 1000 for r, s in zip(log["released"], log["scheduled"], strict=True)
                  if r is not None and s is not None)
    ticks = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
    phases = sorted(((t - log["t0"]) * 1000) % 20 for t, _ in frames)
    return {
        "relay_realtime_sched": log.get("realtime"),
        "relay_release_late_ms_p50": round(late[len(late) // 2], 3),
        "relay_release_late_ms_p99": round(late[int(len(late) * 0.99)], 3),
        "relay_release_late_ms_max": round(late[-1], 3),
        "sender_after_slot_packets": sum(
            1 for rx, s in zip(log["received"], log["scheduled"], strict=True) if s is not None and rx > s),
        "bridge_tick_ms_p1_p99": [round(1000 * float(np.percentile(ticks, q)), 3) for q in (1, 99)],
        "tick_phase_ms": tick_phase_ms(log),
        "tick_callback_phase_ms_p10_p50": [round(phases[len(phases) // 10], 3), round(phases[len(phases) // 2], 3)],
    }


def tick_phase_ms(log: dict[str, Any]) -> float:
    """Where the callee's bridge ticks fall after the virtual send grid (the relay anchored t0 on them)."""
    if log.get("grid_s") is None:
        raise ValueError("relay log has no tick grid")
    return round(((log["grid_s"] - log["t0"]) * 1000) % 20, 3)


def jbuf_delta(samples: list[tuple[float, dict[str, int]]], first: float, last: float, halves: int) -> dict[str, Any]:
    """pjmedia's own counters between the first and the last played marker (sampled every STAT_POLL_S)."""
    before = max((s for s in samples if s[0] <= first), key=lambda s: s[0], default=samples[0])[1]
    after = min((s for s in samples if s[0] >= last), key=lambda s: s[0], default=samples[-1])[1]
    delta = {k: after[k] - before[k] for k in ("lost", "discard", "empty")}
    return {
        "state_at_end": after,
        "delta_10ms_frames": delta,
        "stats_conceal_or_drop_pct": round(100 * (delta["empty"] + delta["discard"]) / halves, 3),
    }


def ours_on_same_arrivals(trace: list[TracePacket], log: dict[str, Any], phase_ms: float) -> dict[str, Any]:
    """Our JitterBuffer replayed on the arrivals the relay actually produced, at pjmedia's measured phase."""
    t0 = log["t0"]
    realized = [TracePacket(p.send_time_s, None if r is None else r - t0, p.seq, p.ts)
                for p, r in zip(trace, log["released"], strict=False)]
    frames, _ = jitter_quality._replay(realized, phase_ms)  # type: ignore[arg-type]
    score = jitter_quality._score(realized, frames)
    return {k: round(v, 3) for k, v in score.items() if not k.startswith("_")}


# ---------------------------------------------------------------- pjsua2 worker (child process)

def _free_port_pair() -> int:
    """An even port p with p and p + 1 free on 127.0.0.1 (RTP + RTCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port % 2 or port > 65000:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def _write_tone(path: Path) -> None:
    """A 1 s 440 Hz tone for the caller's player (its audio is replaced by markers at the relay)."""
    samples = (int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(8000))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))


def _classes(pj: Any) -> dict[str, type]:
    """pjsua2 subclasses, built after the lazy import."""

    class Stderr(pj.LogWriter):  # type: ignore[misc]
        def write(self, entry: Any) -> None:
            sys.stderr.write(entry.msg)

    class Capture(pj.AudioMediaPort):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[tuple[float, bytes]] = []
            self.recording = False
            self.warm = threading.Event()  # enough ticks seen to know the bridge's tick grid

        def onFrameReceived(self, frame: Any) -> None:
            if self.recording:
                now = time.monotonic()
                audio = frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size
                self.frames.append((now, bytes(frame.buf)[: frame.size] if audio else b""))
                if len(self.frames) >= GRID_TICKS:
                    self.warm.set()

    class Leg(pj.Call):  # type: ignore[misc]
        def __init__(self, acc: Any, call_id: int, connect: Any, sdp_rewrite: Any = None) -> None:
            super().__init__(acc, call_id)
            self.connect, self.sdp_rewrite = connect, sdp_rewrite
            self.media_up, self.gone = threading.Event(), threading.Event()

        def onCallSdpCreated(self, prm: Any) -> None:
            if self.sdp_rewrite is not None:
                prm.sdp.wholeSdp = self.sdp_rewrite(prm.sdp.wholeSdp)

        def onCallMediaState(self, prm: Any) -> None:
            try:
                self._media_state()
            except Exception:  # pjsua2 swallows exceptions raised in callbacks
                traceback.print_exc()

        def _media_state(self) -> None:
            info = self.getInfo()  # keep it alive: .media is a view into it
            # the caller's side of a sendonly/recvonly call reports "hold"; its stream still runs
            live = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
            for i, media in enumerate(info.media):
                if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in live:
                    self.connect(self.getAudioMedia(i))
                    self.media_up.set()

        def onCallState(self, prm: Any) -> None:
            if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.gone.set()

    class Callee(pj.Account):  # type: ignore[misc]
        def __init__(self, make_leg: Any) -> None:
            super().__init__()
            self.make_leg, self.legs = make_leg, []

        def onIncomingCall(self, prm: Any) -> None:
            leg = self.make_leg(self, prm.callId)
            self.legs.append(leg)
            op = pj.CallOpParam()
            op.statusCode = 200
            leg.answer(op)

    return {"Stderr": Stderr, "Capture": Capture, "Leg": Leg, "Callee": Callee}


def _endpoint(pj: Any, cls: dict[str, type]) -> tuple[Any, int, Any]:
    """One endpoint: SIP/UDP on 127.0.0.1, null sound device, 8 kHz bridge, PCMU only, default jitter buffer."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    writer = cls["Stderr"]()
    cfg.logConfig.writer, cfg.logConfig.level, cfg.logConfig.consoleLevel = writer, 2, 2
    cfg.uaConfig.maxCalls, cfg.uaConfig.threadCnt = 4, 1
    med = cfg.medConfig  # jbInit/jbMinPre/jbMaxPre/jbMax stay -1 (pjmedia defaults, adaptive)
    med.clockRate, med.sndClockRate, med.noVad, med.ptime, med.audioFramePtime = 8000, 8000, True, 20, 20
    med.sndAutoCloseTime = -1  # keep the null device's clock running between calls
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.boundAddress, tcfg.port = "127.0.0.1", _free_port_pair()
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU/") else 0)
    ep.libStart()
    return ep, tcfg.port, writer


def _account(pj: Any, acc: Any, user: str, sip_port: int, rtp_port: int) -> Any:
    cfg = pj.AccountConfig()
    cfg.idUri = f"sip:{user}@127.0.0.1:{sip_port}"
    cfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    cfg.mediaConfig.transportConfig.port = rtp_port
    cfg.mediaConfig.transportConfig.portRange = 1 if rtp_port else 0
    acc.create(cfg)
    return acc


def tick_grid(frames: list[tuple[float, bytes]]) -> float:
    """A time at which the bridge ticked: callbacks run late, never early, so take the earliest on the grid."""
    return min(t - i * TICK_S for i, (t, _) in enumerate(frames)) + (len(frames) - 1) * TICK_S


def _jbuf(state: Any) -> dict[str, int]:
    return {k: int(getattr(state, k)) for k in JBUF_FIELDS}


def _sdp_via(relay_port: int, rtp_port: int) -> Any:
    """Rewrite the callee's SDP answer: the caller sends RTP (and RTCP) to the relay, and the callee only
    receives (if it sent RTP, the caller's symmetric-RTP latching would switch to the callee's real port)."""

    def rewrite(sdp: str) -> str:
        sdp = sdp.replace(f"m=audio {rtp_port} ", f"m=audio {relay_port} ").replace("a=sendrecv", "a=recvonly")
        return sdp.replace(f"a=rtcp:{rtp_port + 1}", f"a=rtcp:{relay_port + 1}")
    return rewrite


def _start_relay(name: str, seconds: float | None, relay_port: int, rtp_port: int, phase_ms: float,
                 log_path: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.trace_relay", "--trace", name, "--listen-port", str(relay_port),
           "--forward-port", str(rtp_port), "--phase-ms", str(phase_ms), "--realtime", "--log", str(log_path)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    relay = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert relay.stdout is not None
    if relay.stdout.readline().strip() != "ready":
        relay.kill()
        raise RuntimeError(f"trace relay for {name} did not start")
    return relay


def _poll_until_done(relay: subprocess.Popen[str], leg: Any, deadline: float) -> list[tuple[float, dict[str, int]]]:
    """Sample the callee's jitter-buffer counters until the relay has finished and the buffer has drained."""
    samples: list[tuple[float, dict[str, int]]] = []
    drain_until: float | None = None
    while drain_until is None or time.monotonic() < drain_until:
        samples.append((time.monotonic(), _jbuf(leg.getStreamStat(0).jbuf)))
        if drain_until is None and relay.poll() is not None:
            drain_until = time.monotonic() + DRAIN_S
        if time.monotonic() > deadline:
            relay.kill()
            raise RuntimeError("trace replay through pjsua2 overran its deadline")
        time.sleep(STAT_POLL_S)
    return samples


def _measure(pj: Any, cls: dict[str, type], sip_port: int, name: str, seconds: float | None, phase_ms: float,
             tmp: Path) -> dict[str, Any]:
    """One call caller → relay → callee carrying one trace; returns the scored result."""
    relay_port = _free_port_pair()
    rtp_port = _free_port_pair()
    while rtp_port in (relay_port, relay_port + 1, relay_port - 1):
        rtp_port = _free_port_pair()
    relay = _start_relay(name, seconds, relay_port, rtp_port, phase_ms, tmp / f"relay-{name}.json")
    capture = cls["Capture"]()
    fmt = pj.MediaFormatAudio()
    fmt.type, fmt.clockRate, fmt.channelCount, fmt.bitsPerSample = pj.PJMEDIA_TYPE_AUDIO, 8000, 1, 16
    fmt.frameTimeUsec, fmt.avgBps, fmt.maxBps = 20000, 128000, 128000
    capture.createPort(f"capture-{name}", fmt)
    player = pj.AudioMediaPlayer()
    player.createPlayer(str(tmp / "tone.wav"), 0)  # loops
    callee = _account(pj, cls["Callee"](lambda acc, cid: cls["Leg"](
        acc, cid, lambda m: m.startTransmit(capture), _sdp_via(relay_port, rtp_port))),
        f"callee-{name}", sip_port, rtp_port)
    caller = _account(pj, pj.Account(), f"caller-{name}", sip_port, 0)
    out_leg = cls["Leg"](caller, pj.PJSUA_INVALID_ID, player.startTransmit)
    out_leg.makeCall(f"sip:callee-{name}@127.0.0.1:{sip_port}", pj.CallOpParam(True))
    if not out_leg.media_up.wait(10) or not callee.legs or not callee.legs[0].media_up.wait(10):
        relay.kill()
        raise RuntimeError("pjsua2 call through the relay did not come up")
    in_leg = callee.legs[0]
    trace = trace_slice(name, seconds)
    capture.recording = True
    if not capture.warm.wait(5):
        relay.kill()
        raise RuntimeError("the callee's conference bridge is not ticking")
    assert relay.stdin is not None and relay.stdout is not None
    relay.stdin.write(f"start {tick_grid(capture.frames[-GRID_TICKS:])!r}\n")
    relay.stdin.close()
    samples = _poll_until_done(relay, in_leg, time.monotonic() + trace[-1].send_time_s + 20)
    capture.recording = False
    log = json.loads((tmp / f"relay-{name}.json").read_text())
    if os.environ.get("PJMEDIA_JB_DUMP"):
        Path(os.environ["PJMEDIA_JB_DUMP"]).write_text(json.dumps({"log": log, "frames": [(t, f.hex()) for t, f in capture.frames]}))
    info = in_leg.getStreamInfo(0)
    jb_config = {k: getattr(info, k) for k in ("jbInit", "jbMinPre", "jbMaxPre", "jbMax")}
    pj.Endpoint.instance().hangupAllCalls()
    for leg in (out_leg, in_leg):
        leg.gone.wait(5)
    return _result(trace, log, capture.frames, samples) | {"pjmedia_jb_config": jb_config}


def _result(trace: list[TracePacket], log: dict[str, Any], frames: list[tuple[float, bytes]],
            samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
    result = score_playout(trace, log, frames)
    first, last = result.pop("first_last_played_s")
    timing = timing_quality(log, frames)
    result["pjmedia_jbuf"] = jbuf_delta(samples, first, last, 2 * len(trace))
    result["timing"] = timing
    result["ours_on_same_arrivals"] = ours_on_same_arrivals(trace, log, timing["tick_phase_ms"])
    result["slice"] = {"packets": len(trace), "seconds": round(len(trace) * 0.02, 3)}
    return result


HOW = (
    "pjmedia 2.15.1 (pjsua2-python) in one worker process: two local accounts call each other over SIP/UDP on "
    "127.0.0.1, PCMU 20 ms, null sound device, bridge at 8 kHz; pjmedia's jitter buffer at its defaults "
    "(adaptive, progressive discard; jbInit/jbMinPre/jbMaxPre/jbMax = -1). The callee's SDP answer points RTP "
    "at bench/trace_relay.py, which releases packet k at t0 + arrival_k of the trace (real time) or drops it, "
    "rewriting seq/ts to the trace's and stamping the payload with a per-10-ms marker. A sink port on the "
    "callee's bridge timestamps every played frame; markers identify which packet half played when. Metrics "
    "use jitter_quality's definitions but count in 10 ms halves (pjmedia's G.711 jitter buffer holds 10 ms "
    "frames): added delay = playout tick − relay release time; concealed-or-dropped = halves never played + "
    "halves inserted where no packet was missing, over all sent halves, network loss excluded. One ticker "
    "phase (measured_phase_ms) instead of our four; 'ours_on_same_arrivals' replays our buffer on the same "
    "realized arrivals at that phase. 'pjmedia_jbuf' is pjmedia's own view (avgDelayMsec is its buffer-level "
    "estimate, not playout − arrival; stats_conceal_or_drop_pct = (empty + discard) / sent 10 ms frames)."
)


def _worker(names: list[str], seconds: float | None, phase_ms: float) -> dict[str, Any]:
    """Runs in the child process: one endpoint, one call per trace, one after the other."""
    try:
        import pjsua2 as pj  # GPL-2.0: imported here only
    except ImportError as exc:
        raise RuntimeError(NOT_INSTALLED) from exc
    started = time.monotonic()
    realtime = try_realtime()  # before pjsua starts its threads, which inherit it
    cls = _classes(pj)
    ep, sip_port, _writer = _endpoint(pj, cls)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _write_tone(Path(tmp) / "tone.wav")
        for name in names:
            out[name] = _measure(pj, cls, sip_port, name, seconds, phase_ms, Path(tmp))
    out["realtime_sched"] = realtime
    out["how"] = HOW
    out["slice_s"] = seconds
    out["replay_seconds"] = round(time.monotonic() - started, 2)
    _ = ep  # the endpoint is not destroyed: pjsua2's teardown order can assert; the process exits instead
    return out


def run(seconds: float | None = None, phase_ms: float = PHASE_MS, timeout_s: float = 175.0) -> dict[str, Any]:
    """pjmedia's numbers for every trace (JSON-serialisable), measured in a child process."""
    if importlib.util.find_spec("pjsua2") is None:
        raise RuntimeError(NOT_INSTALLED)
    cmd = [sys.executable, "-m", "bench.pjmedia_jb", "--worker", "--phase-ms", str(phase_ms)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"pjsua2 worker failed (rc={proc.returncode}): {proc.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def _main(argv: list[str]) -> None:
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else None
    phase_ms = float(argv[argv.index("--phase-ms") + 1]) if "--phase-ms" in argv else PHASE_MS
    if "--worker" not in argv:
        print(json.dumps(run(seconds, phase_ms), indent=2))
        return
    try:
        result = _worker(list(TRACES), seconds, phase_ms)
    except Exception as exc:  # reported to the parent, which raises it
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip pjsua2's teardown (see _worker)


if __name__ == "__main__":
    _main(sys.argv[1:])
