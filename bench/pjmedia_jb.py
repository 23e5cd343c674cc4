"""Comparator: the seeded jitter traces replayed through pjmedia's jitter buffer (pjsua2), scored like ours.

Two local pjsua2 accounts in one child process call each other over SIP on 127.0.0.1; the callee's SDP answer
points RTP at the impairing relay (bench/trace_relay.py), which replays a trace in real time and stamps each
packet with a marker. A sink port on the callee's conference bridge timestamps every frame the bridge pulls
from the call; finding the markers in that audio gives playout − arrival per packet and the 10 ms slots that
were concealed, dropped or inserted (see HOW). pjsua2 (GPL-2.0) is imported only here, lazily, and only in the
child process, whose teardown can assert without taking the benchmark harness down.

Run: python bench/pjmedia_jb.py [--seconds N]   (prints JSON; ~65 s, ~130 s if a replay is redone)
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import socket
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

try:
    from bench import jitter_quality
    from bench.trace_relay import score_playout, timing_quality, trace_slice, try_realtime
    from bench.traces import TRACES, TracePacket
except ImportError:  # run as a script: python bench/pjmedia_jb.py
    import jitter_quality  # type: ignore[no-redef]
    from trace_relay import score_playout, timing_quality, trace_slice, try_realtime  # type: ignore[no-redef]
    from traces import TRACES, TracePacket  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
NOT_INSTALLED = "pjsua2-python not installed: pip install 'trunkline[bench]'"
PHASE_MS = 7.5  # bridge ticks sit this far after the virtual send grid: the mean of our four replay phases
RATE_HZ = 8000
TICK_S = 0.020
GRID_TICKS = 25  # ticks watched before start, to learn the bridge's tick grid
DRAIN_S = 1.0
WORKER_BUDGET_S = 165.0
MAX_RELEASE_LATE_MS = 25.0
MAX_STALL_MS = 60.0
STAT_POLL_S = 0.02
JBUF_FIELDS = ("avgDelayMsec", "minDelayMsec", "maxDelayMsec", "devDelayMsec", "lost", "discard", "empty")

HOW = (
    "pjmedia 2.15.1 (pjsua2-python), one child process: per trace, two local accounts call each other "
    "over SIP/UDP on 127.0.0.1 (both traces at once, 4 calls); PCMU 20 ms, null sound device, bridge at 8"
    " kHz (no resampling), VAD off; jitter buffer at pjmedia's defaults (adaptive, progressive discard; "
    "jbInit/jbMinPre/jbMaxPre/jbMax = -1). The callee's SDP answer sends the caller's RTP to "
    "bench/trace_relay.py and makes the callee receive-only (else the caller latches onto its real port)."
    " The relay releases packet k at t0 + arrival_k of the trace in real time, or drops it, with the "
    "trace's seq/ts and a marker payload; t0 is anchored on the callee's bridge ticks so they fall "
    "tick_phase_ms after the virtual send grid (one phase; ours averages four). Relay and pjsua2 run "
    "SCHED_FIFO when permitted; a trace whose replay a stall disturbed (see timing.disturbed) is replayed"
    " once more and the discarded run reported. A sink port on the callee's bridge timestamps every "
    "played 20 ms frame. Scoring follows bench/jitter_quality.py in 10 ms halves (pjmedia's G.711 jitter "
    "buffer holds 10 ms frames and drops them singly): added delay = tick that played a packet - relay "
    "release time, without the constant delay line of pjmedia's concealer (decoder_delay_line_ms, "
    "reported apart); concealed-or-dropped = released halves never played + slots inserted where nothing "
    "was missing, over all sent halves; network loss excluded. ours_on_same_arrivals = our JitterBuffer "
    "on the arrivals the relay actually produced, at the same phase. pjmedia_jbuf = pjmedia's own "
    "counters, for reference only: avgDelayMsec is its buffer-level estimate, and the frames it drops to "
    "shrink are missing from its discard count."
)


# ---------------------------------------------------------------- pure helpers


def jbuf_delta(samples: list[tuple[float, dict[str, int]]], first: float, last: float) -> dict[str, Any]:
    """pjmedia's own counters from just before the first to just after the last played marker."""
    before = max((s for s in samples if s[0] <= first), key=lambda s: s[0], default=samples[0])[1]
    after = min((s for s in samples if s[0] >= last), key=lambda s: s[0], default=samples[-1])[1]
    return {
        "state_at_end": after,
        "delta_10ms_frames": {k: after[k] - before[k] for k in ("lost", "discard", "empty")},
    }


def ours_on_same_arrivals(trace: list[TracePacket], log: dict[str, Any], phase_ms: float) -> dict[str, Any]:
    """Our JitterBuffer replayed on the arrivals the relay actually produced, at the same tick phase."""
    realized = [
        TracePacket(p.send_time_s, None if r is None else r - log["t0"], p.seq, p.ts)
        for p, r in zip(trace, log["released"], strict=False)
    ]
    frames, _ = jitter_quality._replay(realized, phase_ms)  # type: ignore[arg-type]
    return {
        k: round(v, 3) for k, v in jitter_quality._score(realized, frames).items() if not k.startswith("_")
    }


def tick_grid(frames: list[tuple[float, bytes]]) -> float:
    """A time at which the bridge ticked: callbacks run late, never early, so the earliest fits the grid."""
    return min(t - i * TICK_S for i, (t, _) in enumerate(frames)) + (len(frames) - 1) * TICK_S


# ---------------------------------------------------------------- pjsua2 (child process only)


def _free_port_pair(avoid: tuple[int, ...] = ()) -> int:
    """An even port p with p and p + 1 free on 127.0.0.1 (RTP + RTCP)."""
    for _ in range(200):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port % 2 or port > 65000 or port in avoid or port + 1 in avoid:
                continue
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def _write_tone(path: Path) -> None:
    """A 1 s 440 Hz tone for the caller's player (the relay replaces its audio with markers)."""
    tone = 8000 * np.sin(2 * np.pi * 440 * np.arange(RATE_HZ) / RATE_HZ)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(tone.astype("<i2").tobytes())


def _classes(pj: Any) -> dict[str, type]:
    """pjsua2 subclasses, defined after the lazy import. pjsua2 swallows exceptions raised in callbacks."""

    class Stderr(pj.LogWriter):
        def write(self, entry: Any) -> None:
            sys.stderr.write(entry.msg)

    class Capture(pj.AudioMediaPort):
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[tuple[float, bytes]] = []
            self.warm = threading.Event()  # enough ticks seen to know the bridge's tick grid

        def onFrameReceived(self, frame: Any) -> None:
            now = time.monotonic()
            audio = frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size
            self.frames.append((now, bytes(frame.buf)[: frame.size] if audio else b""))
            if len(self.frames) >= GRID_TICKS:
                self.warm.set()

    class Leg(pj.Call):
        def __init__(self, acc: Any, call_id: int, connect: Any, sdp_rewrite: Any = None) -> None:
            super().__init__(acc, call_id)
            self.connect, self.sdp_rewrite = connect, sdp_rewrite
            self.media_up, self.gone = threading.Event(), threading.Event()

        def onCallSdpCreated(self, prm: Any) -> None:
            if self.sdp_rewrite is not None:
                prm.sdp.wholeSdp = self.sdp_rewrite(prm.sdp.wholeSdp)

        def onCallMediaState(self, prm: Any) -> None:
            info = self.getInfo()  # keep it alive: .media is a view into it
            # a sendonly/recvonly call reports "hold" on one side; its stream runs all the same
            live = (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            )
            for i, media in enumerate(info.media):
                if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in live:
                    try:
                        self.connect(self.getAudioMedia(i))
                    except Exception:
                        traceback.print_exc()
                        return
                    self.media_up.set()

        def onCallState(self, prm: Any) -> None:
            if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.gone.set()

    class Callee(pj.Account):
        def __init__(self, make_leg: Any) -> None:
            super().__init__()
            self.make_leg = make_leg
            self.legs: list[Any] = []

        def onIncomingCall(self, prm: Any) -> None:
            self.legs.append(self.make_leg(self, prm.callId))
            op = pj.CallOpParam()
            op.statusCode = 200
            self.legs[-1].answer(op)

    return {"Stderr": Stderr, "Capture": Capture, "Leg": Leg, "Callee": Callee}


def _endpoint(pj: Any, cls: dict[str, type]) -> tuple[Any, int, Any]:
    """One endpoint: SIP/UDP on 127.0.0.1, null sound device, 8 kHz bridge, PCMU only, default jbuf."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    writer = cls["Stderr"]()  # pjsua's console log would go to stdout, which carries our JSON
    cfg.logConfig.writer, cfg.logConfig.level, cfg.logConfig.consoleLevel = writer, 2, 2
    cfg.uaConfig.maxCalls, cfg.uaConfig.threadCnt = 4, 1
    med = cfg.medConfig  # jbInit/jbMinPre/jbMaxPre/jbMax/jbDiscardAlgo stay at pjmedia's defaults
    med.clockRate, med.sndClockRate, med.noVad, med.ptime, med.audioFramePtime = (
        RATE_HZ,
        RATE_HZ,
        True,
        20,
        20,
    )
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


def _sdp_via(relay_port: int, rtp_port: int) -> Any:
    """Rewrite the callee's SDP answer: RTP and RTCP to the relay, and receive-only (if the callee sent RTP,
    the caller's symmetric-RTP latching would switch to the callee's real port, bypassing the relay)."""

    def rewrite(sdp: str) -> str:
        sdp = sdp.replace(f"m=audio {rtp_port} ", f"m=audio {relay_port} ").replace(
            "a=sendrecv", "a=recvonly"
        )
        return sdp.replace(f"a=rtcp:{rtp_port + 1}", f"a=rtcp:{relay_port + 1}")

    return rewrite


def _start_relay(
    name: str, seconds: float | None, ports: tuple[int, int], log: Path
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.trace_relay", "--trace", name, "--listen-port", str(ports[0])]
    cmd += ["--forward-port", str(ports[1]), "--phase-ms", str(PHASE_MS), "--realtime", "--log", str(log)]
    cmd += [] if seconds is None else ["--seconds", str(seconds)]
    relay = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if relay.stdout is None or relay.stdout.readline().strip() != "ready":
        relay.kill()
        raise RuntimeError(f"trace relay for {name} did not start")
    return relay


def _call(
    pj: Any, cls: dict[str, type], sip_port: int, name: str, ports: tuple[int, int], wav: Path
) -> dict[str, Any]:
    """The caller plays a WAV into a call whose RTP reaches the callee via the relay; the callee's bridge
    feeds a capture port."""
    capture = cls["Capture"]()
    fmt = pj.MediaFormatAudio()
    fmt.type, fmt.clockRate, fmt.channelCount, fmt.bitsPerSample = pj.PJMEDIA_TYPE_AUDIO, RATE_HZ, 1, 16
    fmt.frameTimeUsec, fmt.avgBps, fmt.maxBps = 20000, 128000, 128000
    capture.createPort(f"capture-{name}", fmt)
    player = pj.AudioMediaPlayer()
    player.createPlayer(str(wav), 0)  # loops
    rewrite = _sdp_via(*ports)
    callee = cls["Callee"](lambda acc, cid: cls["Leg"](acc, cid, lambda m: m.startTransmit(capture), rewrite))
    _account(pj, callee, f"callee-{name}", sip_port, ports[1])
    caller = _account(pj, pj.Account(), f"caller-{name}", sip_port, 0)
    out_leg = cls["Leg"](caller, pj.PJSUA_INVALID_ID, player.startTransmit)
    out_leg.makeCall(f"sip:callee-{name}@127.0.0.1:{sip_port}", pj.CallOpParam(True))
    if not out_leg.media_up.wait(10) or not callee.legs or not callee.legs[0].media_up.wait(10):
        raise RuntimeError("pjsua2 call through the relay did not come up")
    if not capture.warm.wait(5):
        raise RuntimeError("the callee's conference bridge is not ticking")
    return {
        "capture": capture,
        "player": player,
        "accounts": (callee, caller),
        "legs": (out_leg, callee.legs[0]),
    }


def _replay(runs: dict[str, dict[str, Any]], deadline: float) -> None:
    """Start every relay on the bridge's tick grid; sample each callee's jitter-buffer counters until every
    relay has finished and the buffers have drained."""
    for r in runs.values():
        r["relay"].stdin.write(f"start {tick_grid(r['call']['capture'].frames[-GRID_TICKS:])!r}\n")
        r["relay"].stdin.close()
    drain_until: float | None = None
    while drain_until is None or time.monotonic() < drain_until:
        for r in runs.values():
            jbuf = r["call"]["legs"][1].getStreamStat(0).jbuf
            r["samples"].append((time.monotonic(), {k: int(getattr(jbuf, k)) for k in JBUF_FIELDS}))
        if drain_until is None and all(r["relay"].poll() is not None for r in runs.values()):
            drain_until = time.monotonic() + DRAIN_S
        if time.monotonic() > deadline:
            raise RuntimeError("trace replay through pjsua2 overran its deadline")
        time.sleep(STAT_POLL_S)


def _session(
    pj: Any,
    cls: dict[str, type],
    sip_port: int,
    names: list[str],
    seconds: float | None,
    tmp: Path,
    attempt: int,
) -> dict[str, Any]:
    """One call per trace, all at once (two traces = the wheel's 4-call limit), each through its own relay."""
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            relay_port = _free_port_pair()
            ports = (relay_port, _free_port_pair(avoid=(relay_port, relay_port + 1)))
            log = tmp / f"relay-{name}-{attempt}.json"
            runs[name] = {"trace": trace_slice(name, seconds), "log": log, "samples": []}
            runs[name]["relay"] = _start_relay(name, seconds, ports, log)
            runs[name]["call"] = _call(pj, cls, sip_port, f"{name}-{attempt}", ports, tmp / "tone.wav")
        longest = max(r["trace"][-1].send_time_s for r in runs.values())
        _replay(runs, time.monotonic() + longest + 20)
        for r in runs.values():
            r["frames"] = list(r["call"]["capture"].frames)  # a copy: the bridge appends until hang-up
            info = r["call"]["legs"][1].getStreamInfo(0)
            r["jb_config"] = {k: getattr(info, k) for k in ("jbInit", "jbMinPre", "jbMaxPre", "jbMax")}
    finally:
        _teardown(pj, runs)
    return {name: _score(r) for name, r in runs.items()}


def _teardown(pj: Any, runs: dict[str, dict[str, Any]]) -> None:
    for r in runs.values():
        if "relay" in r and r["relay"].poll() is None:
            r["relay"].kill()
        if "relay" in r:
            r["relay"].wait()
    pj.Endpoint.instance().hangupAllCalls()
    for r in runs.values():
        for leg in r.get("call", {}).get("legs", ()):
            leg.gone.wait(5)
        for acc in r.get("call", {}).get("accounts", ()):
            acc.shutdown()


def _score(r: dict[str, Any]) -> dict[str, Any]:
    trace, frames, log = r["trace"], r["frames"], json.loads(r["log"].read_text())
    result = score_playout(trace, log, frames)
    first, last = result.pop("first_last_played_s")
    timing = timing_quality(log, frames)
    result["timing"] = timing | {"disturbed": _disturbed(timing)}
    result["ours_on_same_arrivals"] = ours_on_same_arrivals(trace, log, timing["tick_phase_ms"])
    result["pjmedia_jbuf"] = jbuf_delta(r["samples"], first, last) | {"config": r["jb_config"]}
    result["slice"] = {"packets": len(trace), "seconds": round(len(trace) * TICK_S, 3)}
    return result


def _disturbed(timing: dict[str, Any]) -> str | None:
    """Why real time did not follow the trace (a stall of relay, sender or bridge), if it did not."""
    if timing["relay_release_late_ms_p50_p99_max"][2] > MAX_RELEASE_LATE_MS:
        return "relay released a packet late"
    if timing["sender_gap_ms_max"] > MAX_STALL_MS or timing["bridge_tick_ms_p1_p99_max"][2] > MAX_STALL_MS:
        return "the pjsua2 media clock stalled"
    return None


def _worker(seconds: float | None, names: list[str]) -> dict[str, Any]:
    """The child process: one endpoint; all traces at once; a trace whose replay was disturbed by a stall
    (this box is shared) is replayed once more if time allows, and the discarded run is reported."""
    try:
        import pjsua2 as pj  # GPL-2.0: imported here only
    except ImportError as exc:
        raise RuntimeError(NOT_INSTALLED) from exc
    started = time.monotonic()
    realtime = try_realtime()  # before pjsua starts its threads, which inherit it
    gc.disable()  # a collection holding the GIL would stall the bridge's Python sink, and with it the clock
    cls = _classes(pj)
    _ep, sip_port, _writer = _endpoint(pj, cls)  # never destroyed: pjsua2's teardown can assert
    with tempfile.TemporaryDirectory() as tmp:
        _write_tone(Path(tmp) / "tone.wav")
        out = _session(pj, cls, sip_port, names, seconds, Path(tmp), 0)
        again = [n for n in names if out[n]["timing"]["disturbed"]]
        gc.collect()
        if again and time.monotonic() - started + (seconds or 60.0) + 15 < WORKER_BUDGET_S:
            retried = _session(pj, cls, sip_port, again, seconds, Path(tmp), 1)
            for n in again:
                discarded = {k: out[n][k] for k in ("mean_added_delay_ms", "conceal_or_drop_pct", "timing")}
                out[n] = retried[n] | {"discarded_disturbed_run": discarded}
    return out | {
        "how": HOW,
        "realtime_sched": realtime,
        "slice_s": seconds,
        "replay_seconds": round(time.monotonic() - started, 2),
    }


def run(
    seconds: float | None = None, traces: tuple[str, ...] = tuple(TRACES), timeout_s: float = 175.0
) -> dict[str, Any]:
    """pjmedia's numbers per trace (JSON-serialisable), measured in a child process. `seconds` replays only
    the first N seconds of each trace (our side must then replay the same slice)."""
    if importlib.util.find_spec("pjsua2") is None:
        raise RuntimeError(NOT_INSTALLED)
    cmd = [sys.executable, "-m", "bench.pjmedia_jb", "--worker", "--traces", ",".join(traces)]
    cmd += [] if seconds is None else ["--seconds", str(seconds)]
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
    traces = argv[argv.index("--traces") + 1].split(",") if "--traces" in argv else list(TRACES)
    if "--worker" not in argv:
        print(json.dumps(run(seconds, tuple(traces)), indent=2))
        return
    try:
        result = _worker(seconds, traces)
    except Exception as exc:  # reported to the parent, which raises it
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip pjsua2's teardown (see _worker)


if __name__ == "__main__":
    _main(sys.argv[1:])
