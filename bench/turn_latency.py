"""Turn latency at the RTP boundary: a scripted caller over real SIP/RTP on 127.0.0.1 against `trunkline
serve` (agent handler, local whisper + piper, LLM = an OpenAI-compatible stub answering at once).

The caller (bench/sip_caller.py, this process) INVITEs with PCMU, sends a 20 ms frame every 20 ms (speech
from piper, else a -60 dBFS µ-law noise floor), waits for the greeting to end (agent audio quiet ≥ 500 ms),
then speaks one sentence per turn. Turn latency = kernel receive time of the first agent packet above
-45 dBFS after the caller's last frame above -45 dBFS − that last frame's send time. The reply must end
(quiet ≥ 500 ms) before the next turn. The first turn of the first call warms the models and is discarded.
CPU per turn = server process utime+stime (all threads, /proc/<pid>/stat) from the caller's first speech
frame to the end of the reply, minus the call's idle rate (1 s quiet window after the greeting) × that wall
time, scaled to 2 s of caller speech (also reported up to the first agent speech packet only, i.e. without
synthesizing the rest of the reply). Up to 8 replies, evenly spaced, are transcribed with faster-whisper
after the run (checks that the agent answered with the stub's words). The server's own `agent.turn_latency`
log lines (internal monotonic timestamps) are reported per stage as medians beside the wire numbers.
Run: python -m bench.turn_latency [--quick]   (JSON on stdout, progress on stderr)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent_harness import (
    DID,
    SPEECH_DBFS,
    STAGES,
    AgentEar,
    loop_share,
    model_costs,
    process_cpu_s,
    server_view,
    sigterm_as_exit,
    speech_clips,
    start_server,
    start_stub,
    stop_all,
    thread_cpu_s,
)
from bench.report import Metric
from bench.sip_caller import FRAME_S, RtpEndpoint, SentFrame, SipCaller

CACHE = Path(__file__).resolve().parent / ".cache" / "turn_latency"
MAX_TRANSCRIBED = 8  # replies checked with whisper (evenly spaced; each costs ~0.3-2 s of CPU)
REPLY_TIMEOUT_S = 20.0  # a late reply is a (bad) sample; none at all is an unanswered turn
SENTENCES = (
    "I'd like to book a cleaning on Tuesday at ten.",
    "Can you tell me your opening hours on Saturday?",
    "Do you take new patients with dental insurance?",
    "My tooth has been hurting since last night.",
    "Could I move my appointment to Friday morning?",
    "How much does a regular checkup usually cost?",
)
REPLY_WORDS = {"sure", "tuesday", "ten", "10", "works", "anything", "else"}
PIPECAT_MEDIAN_MS = 760.0
TARGETS = {"p50": 450.0, "p95": 600.0, "cpu": 0.6}


def progress(message: str) -> None:
    print(f"[turn_latency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- pure helpers ---------------------------------------------------------------------------------------


def last_speech_ns(
    sent: Sequence[SentFrame], since_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> int | None:
    """Send time of the last frame at or after `since_ns` whose level is above the threshold."""
    for frame in reversed(sent):
        if frame.at_ns < since_ns:
            return None
        if frame.level_dbfs > threshold_dbfs:
            return frame.at_ns
    return None


def first_speech_after(
    arrivals: Sequence[tuple[int, float]], after_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> int | None:
    """Arrival time of the first (at_ns, level) packet after `after_ns` above the threshold."""
    for at_ns, level in arrivals:
        if at_ns > after_ns and level > threshold_dbfs:
            return at_ns
    return None


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    arr = np.asarray(samples, dtype=np.float64)
    p50, p95, p99 = (round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": round(float(arr.mean()), 1)}


def cpu_per_2s(cpu_s: float, wall_s: float, idle_cpu_per_s: float, speech_s: float) -> float:
    """Extra CPU-seconds a turn cost above the call's idle media rate, per 2 s of caller speech."""
    return max(0.0, cpu_s - idle_cpu_per_s * wall_s) * 2.0 / max(speech_s, 1e-3)


def reply_heard(text: str) -> bool:
    """True when a transcript of the agent's reply has at least two of the stub reply's words."""
    return len(set(re.findall(r"[a-z0-9]+", text.lower())) & REPLY_WORDS) >= 2


# --- inputs ---------------------------------------------------------------------------------------------


def utterances() -> list[tuple[str, np.ndarray]]:
    """(text, 8 kHz int16 speech) per caller sentence, cached in bench/.cache/turn_latency/."""
    return speech_clips(SENTENCES, CACHE)


# --- one call -------------------------------------------------------------------------------------------


def run_turn(ear: AgentEar, server: Any, speech: np.ndarray, idle_rate: float) -> dict[str, Any]:
    """Speak one utterance; the wire latency, CPU cost, internal breakdown and the reply's audio."""
    pid = server.process.pid
    rtp, mark = ear.rtp, server.mark()
    threads0 = thread_cpu_s(pid)
    cpu0, wall0, since_ns = process_cpu_s(pid), time.monotonic(), time.time_ns()
    rtp.play(speech)
    ear.wait(lambda: not rtp.playing, len(speech) / 8000 + 5.0)
    time.sleep(2 * FRAME_S)  # the last queued frame has left
    last_ns = last_speech_ns(rtp.sent, since_ns)
    assert last_ns is not None, "the utterance has no frame above the speech level"
    answered = ear.wait(lambda: first_speech_after(ear.levels, last_ns) is not None, REPLY_TIMEOUT_S)
    first_ns = first_speech_after(ear.levels, last_ns) if answered else None
    cpu_heard, wall_heard = process_cpu_s(pid) - cpu0, time.monotonic() - wall0
    ear.wait_quiet(30.0)
    with contextlib.suppress(AssertionError):  # logged once the reply has played (none: unanswered)
        server.wait_for(r"agent\.turn_latency", timeout_s=5.0 if answered else 0.5, after=mark)
    ear.wait_quiet(30.0)  # a pause between clauses longer than QUIET_S was not the end of the reply
    cpu, wall = process_cpu_s(pid) - cpu0, time.monotonic() - wall0
    by_thread = loop_share(pid, threads0, thread_cpu_s(pid))
    turn: dict[str, Any] = {
        "latency_ms": None if first_ns is None else round((first_ns - last_ns) / 1e6, 1),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_s_per_2s": round(cpu_per_2s(cpu, wall, idle_rate, len(speech) / 8000), 3),
        "cpu_s_by_thread": by_thread,
        # up to the first agent speech packet: VAD, ASR, LLM client, first clause's TTS (not the reply)
        "cpu_s_per_2s_to_first_audio": round(
            cpu_per_2s(cpu_heard, wall_heard, idle_rate, len(speech) / 8000), 3
        ),
    }
    turn.update(server_view(server.text(after=mark).splitlines()))
    if first_ns is not None:
        turn["reply_ulaw"] = b"".join(p.payload for p in rtp.received if p.at_ns >= first_ns)
    return turn


def run_call(server: Any, utts: list[tuple[str, np.ndarray]], turns: int, seed: int) -> dict[str, Any]:
    """One call: greeting, idle window, `turns` turns, BYE."""
    caller = SipCaller(("127.0.0.1", server.sip_port))
    rtp = RtpEndpoint(seed=seed)
    ear = AgentEar(rtp)
    try:
        dialog = caller.call(DID, rtp.port)
        rtp.start(dialog.remote_rtp)
        if not ear.wait(lambda: ear.last_loud_ns > 0, 15.0):
            raise RuntimeError("no greeting audio from the agent")
        ear.wait_quiet(30.0)
        cpu0, wall0, first = process_cpu_s(server.process.pid), time.monotonic(), len(ear.levels)
        time.sleep(1.0)
        idle = (process_cpu_s(server.process.pid) - cpu0) / (time.monotonic() - wall0)
        ear.update()
        quiet_dbfs = max((lvl for _, lvl in ear.levels[first:]), default=None)
        out = []
        for k in range(turns):
            text, pcm = utts[(seed + k) % len(utts)]
            turn = run_turn(ear, server, pcm, idle)
            turn["text"] = text
            out.append(turn)
            progress(f"  turn {k + 1}/{turns}: {turn['latency_ms']} ms, {turn['cpu_s_per_2s']} CPU-s/2 s")
        caller.hangup(dialog)
        return {"idle_cpu_per_s": round(idle, 4), "turns": out, "late_sends": rtp.late_sends,
                "agent_quiet_dbfs_max": quiet_dbfs}  # fmt: skip
    finally:
        rtp.close()
        caller.close()


# --- the run --------------------------------------------------------------------------------------------


def transcribe_replies(turns: list[dict[str, Any]]) -> None:
    """Set `reply_text` and `replied` on each turn: the first 3 s of what the caller heard after the
    latency mark, through the server's own whisper path (LocalWhisper, fitted window)."""
    import asyncio

    from trunkline.codecs.g711 import ulaw_decode
    from trunkline.pipeline.asr import LocalWhisper
    from trunkline.pipeline.models import BoundedPool

    async def transcribe() -> None:
        asr = LocalWhisper(BoundedPool("asr", 1, 8), cpu_threads=2, fitted_window=True)
        for turn in turns:
            audio = turn.pop("reply_ulaw", b"")[: 8000 * 3]
            turn["reply_text"] = (await asr.transcribe(ulaw_decode(audio), 8000)).text if audio else ""
            turn["replied"] = reply_heard(turn["reply_text"])

    with contextlib.redirect_stdout(sys.stderr):
        asyncio.run(transcribe())


def _median(values: Sequence[float], ndigits: int = 1) -> float | None:
    return round(float(np.median(values)), ndigits) if values else None


def _thread_medians(turns: list[dict[str, Any]]) -> dict[str, float]:
    names = {name for t in turns for name in t["cpu_s_by_thread"]}
    medians = {
        n: round(float(np.median([t["cpu_s_by_thread"].get(n, 0.0) for t in turns])), 3) for n in names
    }
    return {n: v for n, v in sorted(medians.items(), key=lambda kv: -kv[1]) if v > 0}


def summarise(calls: list[dict[str, Any]], started: float, server_start_s: float) -> dict[str, Any]:
    turns = [t for c in calls for t in c["turns"]]
    samples = [t["latency_ms"] for t in turns if t["latency_ms"] is not None]
    answered = [t for t in turns if t["latency_ms"] is not None]
    cpu = [t["cpu_s_per_2s"] for t in answered]
    internal = {
        stage: round(float(np.median(vals)), 1)
        for stage in STAGES
        if (vals := [t["internal_ms"][stage] for t in turns if stage in t.get("internal_ms", {})])
    }
    return {
        **percentiles(samples),
        "samples_ms": samples,
        "turns": len(turns),
        "turns_unanswered": len(turns) - len(samples),
        "replied_ok": sum(1 for t in turns if t.get("replied")),
        "replies_transcribed": sum(1 for t in turns if "replied" in t),
        "calls": len(calls),
        "cpu_s_per_2s_turn_p50": round(float(np.median(cpu)), 3) if cpu else None,
        "cpu_s_per_2s_samples": cpu,
        "idle_cpu_per_s": [c["idle_cpu_per_s"] for c in calls],
        "internal_ms_p50": internal,
        "cpu_s_per_2s_to_first_audio_p50": _median([t["cpu_s_per_2s_to_first_audio"] for t in answered], 3),
        "cpu_s_by_thread_p50": _thread_medians(turns),
        # wire latency minus the server's own end-of-speech → first-packet-out: jitter buffer, the VAD's
        # placement of the end of speech, the pacer, loopback
        "wire_minus_internal_ms_p50": _median(
            [
                t["latency_ms"] - t["internal_ms"]["first_rtp_out"]
                for t in answered
                if "first_rtp_out" in t["internal_ms"]
            ]
        ),
        # speculative decodes are logged at debug level only (`--debug-log`); None otherwise
        "server_decodes_per_turn_p50": _median([t["server_decodes"] for t in turns])
        if any(t["server_decodes"] for t in turns)
        else None,
        "server_decode_done_ms_p50": _median([ms for t in turns for ms in t["server_decode_ms"]]),
        "internal_note": "server's own monotonic stage marks (agent.turn_latency) from its VAD's end of "
        "speech; not the headline",
        "per_turn": [{k: v for k, v in t.items() if k != "reply_ulaw"} for t in turns],
        "caller_late_sends": sum(c["late_sends"] for c in calls),
        "agent_quiet_dbfs_max": max((c["agent_quiet_dbfs_max"] or -120.0) for c in calls),
        "server_start_s": round(server_start_s, 1),
        "duration_s": round(time.monotonic() - started, 1),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "comparator": f"Pipecat 1.14, same models, instant LLM: ~{PIPECAT_MEDIAN_MS:.0f} ms median "
        "(ARCHITECTURE.md reference figure, not rerun: pipecat-ai is not installable offline here)",
        "how": __doc__.split("Run:")[0].strip() if __doc__ else "",
    }


def run(quick: bool = False, *, debug_log: bool = False) -> dict[str, Any]:
    """Full: 5 calls x 5 turns (+1 warm-up turn); quick: 1 call x 4 turns (+1). `debug_log` runs the
    server at log level debug (its speculative decodes per turn are then counted)."""
    started = time.monotonic()
    progress(f"load average {os.getloadavg()}; caller sentences (piper, cached)")
    utts = utterances()
    with sigterm_as_exit():
        calls, server_start_s = place_calls(utts, (1, 4) if quick else (5, 5), debug_log)
    progress("model costs (the server's whisper and piper calls, run in this process)")
    costs = model_costs(utts)
    progress("transcribing the agent's replies")
    turns = [t for c in calls for t in c["turns"]]
    transcribe_replies(turns[:: max(1, -(-len(turns) // MAX_TRANSCRIBED))])
    for turn in turns:
        turn.pop("reply_ulaw", None)
    progress("done")
    return summarise(calls, started, server_start_s) | {"model_costs_here": costs}


def place_calls(
    utts: list[tuple[str, np.ndarray]], shape: tuple[int, int], debug_log: bool
) -> tuple[list[dict[str, Any]], float]:
    """Start the stub and the server, place `shape` = (calls, turns per call) calls one after another
    (plus one warm-up turn, discarded), stop everything; the calls and the server's start-up seconds."""
    calls_n, turns_n = shape
    stub, stub_port = start_stub()
    workdir = Path(tempfile.mkdtemp(prefix="trunkline-bench-turns-"))
    server, calls = None, []
    try:
        progress("starting trunkline serve (embedded Postgres, whisper, piper)")
        t0 = time.monotonic()
        server = start_server(workdir, stub_port, debug_log)
        server_start_s = time.monotonic() - t0
        for c in range(calls_n):
            progress(f"call {c + 1}/{calls_n}")
            call = run_call(server, utts, turns_n + (1 if c == 0 else 0), seed=c)
            if c == 0:
                call["turns"] = call["turns"][1:]  # the warm-up turn
            calls.append(call)
    finally:
        stop_all(server, stub, workdir)
    return calls, server_start_s


def metrics(result: dict[str, Any]) -> list[Metric]:
    err, how = result.get("error", ""), result.get("how", "")
    p50, p95, cpu = result.get("p50_ms"), result.get("p95_ms"), result.get("cpu_s_per_2s_turn_p50")
    heard = result.get("cpu_s_per_2s_to_first_audio_p50")
    n = len(result.get("samples_ms", []))
    return [
        Metric(
            metric_id="turn_latency_p50_ms",
            title="Turn latency p50 (last caller speech packet → first agent speech packet)",
            unit="ms", value=p50, target=f"≤ {TARGETS['p50']:g} ms",
            passed=None if p50 is None else p50 <= TARGETS["p50"],
            comparator="Pipecat 1.14, same models (reference figure, not rerun)",
            comparator_value=PIPECAT_MEDIAN_MS, how=how, error=err, extra=result,
        ),
        Metric(
            metric_id="turn_latency_p95_ms", title="Turn latency p95", unit="ms", value=p95,
            target=f"≤ {TARGETS['p95']:g} ms", passed=None if p95 is None else p95 <= TARGETS["p95"],
            how=f"p99 {result.get('p99_ms')} ms over {n} turns; internal stage medians (server log, "
            f"not the headline): {result.get('internal_ms_p50')}", error=err,
        ),
        Metric(
            metric_id="cpu_per_2s_turn_s",
            title="CPU per 2 s caller turn (server above idle media, up to the first agent audio)",
            unit="CPU-s", value=heard, target=f"≤ {TARGETS['cpu']:g} CPU-s",
            passed=None if heard is None else heard <= TARGETS["cpu"],
            how="median over turns of the server's CPU from the caller's first speech frame to the first "
            "agent speech packet (VAD, endpointing, speculative and final ASR decodes, the LLM client, the "
            "first clause's TTS), minus the call's idle rate from a 1 s quiet window, scaled to 2 s of "
            "speech",
            error=err,
        ),
        Metric(
            metric_id="cpu_per_2s_exchange_s",
            title="CPU per 2 s caller turn and the whole reply (~2.5 s of agent speech synthesized)",
            unit="CPU-s", value=cpu, target="report", passed=None,
            how="as above, but up to the end of the agent's reply: adds synthesizing the rest of the reply "
            "(piper costs ~0.2 CPU-s per second of speech here)", error=err,
        ),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    result = run(quick="--quick" in argv, debug_log="--debug-log" in argv)
    print(json.dumps({k: v for k, v in result.items() if k != "per_turn"} | {"per_turn": result["per_turn"]},
                     indent=1, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    from trunkline.logs import configure_logging

    configure_logging()  # log lines to stderr: stdout is the JSON
    sys.exit(main(sys.argv[1:]))
