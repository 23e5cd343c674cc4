"""How many simultaneous agent calls one `trunkline serve` process carries before callers feel it. For N =
1, 2, 4, 6, 8, 12 (stopping once p95 > 1.5 s or a turn goes unanswered), N scripted callers in this process
(a thread each, starts staggered over 2 s, fixed seed) call the agent (local whisper + piper, an instant
OpenAI-compatible LLM stub) over SIP/RTP on 127.0.0.1: greeting, 4 turns (a cached piper sentence, wait for
the reply to end, a 0.5-1.5 s pause), BYE; one warm-up turn first is discarded. Turn latency is measured on
the wire as in bench/turn_latency.py (caller's last frame above -45 dBFS → kernel receive time of the
agent's first packet above it; no reply in 20 s = unanswered), never from the server's interleaved log.
The figure is the largest N for which it and every smaller N had every call set up, every turn answered
and p95 within the limit; server CPU, load, hold lines and log warnings per level are in the raw results.
Run: python -m bench.agent_concurrency [--quick] [--levels 4,8] [--plot DIR] [--debug-log]   (JSON out)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent_harness import (
    DID,
    SPEECH_DBFS,
    STAGES,
    AgentEar,
    log_numbers,
    parse_turn_latency,
    process_cpu_s,
    sigterm_as_exit,
    start_server,
    start_stub,
    stop_all,
)
from bench.report import Metric
from bench.sip_caller import FRAME_S, RtpEndpoint, SipCaller
from bench.turn_latency import REPLY_TIMEOUT_S, first_speech_after, last_speech_ns, percentiles, utterances

LEVELS_FULL = (1, 2, 4, 6, 8, 12)
LEVELS_QUICK = (1, 2)
TURNS_PER_CALL = 4
STAGGER_S = 2.0  # call starts spread uniformly over this window
THINK_S = (0.5, 1.5)  # the caller's pause after the agent's reply, uniform
STOP_P95_MS = 1500.0  # no higher level once a level's p95 is above this (or a turn went unanswered)
TARGET_P95_MS = 600.0  # issue #4's turn-latency p95 target
SECOND_P95_MS = 1000.0
GREETING_TIMEOUT_S = 15.0
QUIET_S = 0.5  # the reply has ended: this long below the speech level once most of it was heard ...
LONG_QUIET_S = 2.5  # ... or this long whatever was heard (a reply cut short, or a slow second clause)
REPLY_SHARE = 0.8  # "most of it": this share of the warm-up reply's loud frames
DEFAULT_REPLY_FRAMES = 100  # loud 20 ms frames in a reply when the warm-up could not measure it
SEED = 4
HOW = __doc__.split("Run:")[0].strip() if __doc__ else ""
_LOG_EVENT = re.compile(r"\[(\w+)\s*\]\s+([a-z_]+\.[a-z_.]+)")
PROBLEM_LEVELS = frozenset({"warning", "error", "critical"})


def progress(message: str) -> None:
    print(f"[agent_concurrency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- pure helpers ---------------------------------------------------------------------------------------


def start_offsets(calls: int, seed: int, window_s: float = STAGGER_S) -> list[float]:
    """Seconds after the level's start at which each call dials: uniform over the window, seeded."""
    rng = random.Random(seed)
    return [round(rng.uniform(0.0, window_s), 3) for _ in range(calls)]


def reply_finished(quiet_s: float, loud_frames: int, expected_frames: int) -> bool:
    """The agent's reply has ended: quiet for QUIET_S after most of a reply, or for LONG_QUIET_S anyway."""
    return quiet_s >= LONG_QUIET_S or (quiet_s >= QUIET_S and loud_frames >= REPLY_SHARE * expected_frames)


def level_summary(calls: int, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One level's row from its calls' results (a call without `turns` never got a greeting)."""
    turns = [t for r in results for t in r.get("turns", [])]
    samples = [t["latency_ms"] for t in turns if t["latency_ms"] is not None]
    pct = percentiles(samples)
    return {
        "calls": calls,
        "calls_failed": sum(1 for r in results if r.get("error")),
        "turns": len(turns),
        "unanswered": len(turns) - len(samples),
        "p50_ms": pct["p50_ms"],
        "p95_ms": pct["p95_ms"],
        "max_ms": round(max(samples), 1) if samples else None,
        # with few turns (4 at N=1) the p95 is about the worst turn: these say how many turns were slow
        "over_600ms": sum(1 for ms in samples if ms > TARGET_P95_MS),
        "over_1000ms": sum(1 for ms in samples if ms > SECOND_P95_MS),
        "samples_ms": samples,
    }


def level_ok(level: dict[str, Any], p95_limit_ms: float) -> bool:
    """Every call set up, every turn answered, and the turn p95 within the limit."""
    p95 = level.get("p95_ms")
    return (
        not level.get("calls_failed")
        and not level.get("unanswered")
        and level.get("turns", 0) > 0
        and p95 is not None
        and p95 <= p95_limit_ms
    )


def max_calls_within(levels: Sequence[dict[str, Any]], p95_limit_ms: float) -> int:
    """The largest N such that it and every smaller level measured met the limit (0: not even one call).
    A pass above a failed level (noise) does not count: the figure is for sizing a cap."""
    best = 0
    for level in sorted(levels, key=lambda lv: lv["calls"]):
        if not level_ok(level, p95_limit_ms):
            break
        best = level["calls"]
    return best


def should_stop(level: dict[str, Any]) -> bool:
    """Higher levels are not worth running: p95 above STOP_P95_MS, or a turn unanswered, or no turn."""
    p95 = level.get("p95_ms")
    return bool(level.get("unanswered")) or p95 is None or p95 > STOP_P95_MS


def log_events(lines: Sequence[str], levels: frozenset[str] | None = None) -> dict[str, int]:
    """{event name: count} of the server's log lines (console rendering), optionally only at `levels`."""
    found = (m.groups() for line in lines if (m := _LOG_EVENT.search(line)))
    counts = Counter(event for level, event in found if levels is None or level in levels)
    return dict(sorted(counts.items()))


def log_problems(lines: Sequence[str]) -> dict[str, int]:
    """{event name: count} of the server's warning/error/critical log lines."""
    return log_events(lines, PROBLEM_LEVELS)


def problem_examples(lines: Sequence[str], limit_chars: int = 400) -> dict[str, str]:
    """The first line of each warning/error event (to quote in a report)."""
    out: dict[str, str] = {}
    for line in lines:
        m = _LOG_EVENT.search(line)
        if m and m.group(1) in PROBLEM_LEVELS and m.group(2) not in out:
            out[m.group(2)] = line[:limit_chars]
    return out


def stage_spread(lines: Sequence[str]) -> dict[str, list[float]]:
    """{stage: [p50, p95] ms} over the server's `agent.turn_latency` lines (each line is one turn's own
    monotonic marks, so interleaved calls do not mix; not matched to our wire turns)."""
    marks = [parse_turn_latency(line) for line in lines if "agent.turn_latency" in line]
    out = {}
    for stage in STAGES:
        if values := [m[stage] for m in marks if stage in m]:
            out[stage] = [round(float(np.percentile(values, q)), 1) for q in (50, 95)]
    return out


def decode_spread(lines: Sequence[str]) -> dict[str, Any]:
    """At debug level (`--debug-log`): whisper decodes started, and audio end → transcript ms [p50, p95]
    (queueing on the ASR worker included) of final and speculative decodes; {} at info level."""
    started = sum(1 for line in lines if "agent.decode_started" in line)
    done: dict[str, list[float]] = {"final": [], "speculative": []}
    for line in lines:
        if "agent.decoded" in line and "decode_ms" in (numbers := log_numbers(line)):
            done["final" if "final=True" in line else "speculative"].append(numbers["decode_ms"])
    spread = {k: [round(float(np.percentile(v, q)), 1) for q in (50, 95)] for k, v in done.items() if v}
    return {"started": started, "ms_p50_p95": spread} if started else {}


# --- one call -------------------------------------------------------------------------------------------


class ReplyWatch:
    """Counts the agent's loud packets from `first_ns` on, scanning each new packet once."""

    def __init__(self, ear: AgentEar, first_ns: int) -> None:
        self.ear, self.first_ns, self.loud, self._seen = ear, first_ns, 0, 0

    def finished(self, expected_frames: int) -> bool:
        levels = self.ear.levels
        for at_ns, level in levels[self._seen :]:
            self.loud += at_ns >= self.first_ns and level > SPEECH_DBFS
        self._seen = len(levels)
        now = time.time_ns()
        if not levels or now - levels[-1][0] > 300_000_000:  # packets must still be coming
            return False
        return reply_finished((now - self.ear.last_loud_ns) / 1e9, self.loud, expected_frames)


def take_turn(ear: AgentEar, speech: np.ndarray, expected_frames: int) -> dict[str, Any]:
    """Speak one utterance and wait for the reply to end; its wire latency and loud reply frames."""
    rtp = ear.rtp
    since_ns = time.time_ns()
    rtp.play(speech)
    ear.wait(lambda: not rtp.playing, len(speech) / 8000 + 5.0)
    time.sleep(2 * FRAME_S)  # the last queued frame has left
    last_ns = last_speech_ns(rtp.sent, since_ns)
    if last_ns is None:
        raise RuntimeError("the utterance has no frame above the speech level")
    ear.wait(lambda: first_speech_after(ear.levels, last_ns) is not None, REPLY_TIMEOUT_S)
    first_ns = first_speech_after(ear.levels, last_ns)
    if first_ns is None:
        return {"latency_ms": None, "reply_frames": 0}
    watch = ReplyWatch(ear, first_ns)
    ear.wait(lambda: watch.finished(expected_frames), 30.0)
    return {"latency_ms": round((first_ns - last_ns) / 1e6, 1), "reply_frames": watch.loud}


def run_call(
    sip_port: int, utts: list[tuple[str, np.ndarray]], seed: int, turns: int, expected_frames: int
) -> dict[str, Any]:
    """One call: greeting, `turns` turns with a seeded think pause after each reply, BYE. Errors (no
    greeting, a refused INVITE) are returned in `error`, with the turns taken so far."""
    caller, rtp = SipCaller(("127.0.0.1", sip_port)), RtpEndpoint(seed=seed)
    ear, rng = AgentEar(rtp), random.Random(seed)
    out: dict[str, Any] = {"seed": seed, "error": "", "turns": [], "late_sends": 0}
    try:
        dialog = caller.call(DID, rtp.port)
        rtp.start(dialog.remote_rtp)
        if not ear.wait(lambda: ear.last_loud_ns > 0, GREETING_TIMEOUT_S):
            out["error"] = "no greeting audio from the agent"
            caller.hangup(dialog)
            return out
        greeting = ReplyWatch(ear, 0)
        ear.wait(lambda: greeting.finished(0), 30.0)
        for k in range(turns):
            text, pcm = utts[(seed + k) % len(utts)]
            out["turns"].append(take_turn(ear, pcm, expected_frames) | {"text": text})
            if k < turns - 1:
                time.sleep(rng.uniform(*THINK_S))
        caller.hangup(dialog)
    except Exception as exc:  # a failed call is a data point of its level
        out["error"] = repr(exc)
    finally:
        out["late_sends"] = rtp.late_sends
        rtp.close()
        caller.close()
    return out


# --- one level ------------------------------------------------------------------------------------------


def place_level(
    server: Any,
    utts: list[tuple[str, np.ndarray]],
    calls: int,
    expected_frames: int,
    turns: int = TURNS_PER_CALL,
) -> dict[str, Any]:
    """`calls` concurrent calls (one thread each, staggered starts); the level's summary row."""
    pid, mark = server.process.pid, server.mark()
    results: list[dict[str, Any]] = [{} for _ in range(calls)]
    offsets = start_offsets(calls, SEED * 1000 + calls)
    t0 = time.monotonic()

    def caller(i: int) -> None:
        time.sleep(max(0.0, t0 + offsets[i] - time.monotonic()))
        results[i] = run_call(
            server.sip_port, utts, seed=100 * calls + i, turns=turns, expected_frames=expected_frames
        )

    cpu0, own0, wall0 = process_cpu_s(pid), process_cpu_s(os.getpid()), time.monotonic()
    threads = [threading.Thread(target=caller, args=(i,), name=f"caller-{i}") for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - wall0
    with contextlib.suppress(AssertionError):  # the server's call teardown, logged after our BYEs
        server.wait_for(r"sip\.call_ended", timeout_s=5.0, after=mark, count=calls)
    cores = os.cpu_count() or 1
    row = level_summary(calls, results)
    row |= {
        "server_cpu_pct": round(100 * (process_cpu_s(pid) - cpu0) / (wall * cores), 1),
        "caller_cpu_pct": round(100 * (process_cpu_s(os.getpid()) - own0) / (wall * cores), 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(wall, 1),
        "caller_late_sends": sum(r.get("late_sends", 0) for r in results),
        "call_errors": [r["error"] for r in results if r.get("error")],
        "server_log_problems": log_problems(lines := server.text(after=mark).splitlines()),
        "server_events": log_events(lines),
        "server_stage_ms_p50_p95": stage_spread(lines),
        "server_decodes": decode_spread(lines),
        "reply_frames_min": min(
            (t["reply_frames"] for r in results for t in r.get("turns", []) if t["latency_ms"] is not None),
            default=None,
        ),
    }
    events = row["server_events"]
    row["server_turns_heard"] = events.get("agent.turn_heard", 0)  # > turns: a sentence split in two
    row["hold_lines"] = events.get("agent.hold_line", 0)  # "One moment." after 1 s without a reply
    row["barge_ins"] = events.get("agent.barge_in", 0)
    return row


def warm_up(server: Any, utts: list[tuple[str, np.ndarray]]) -> tuple[int, dict[str, Any]]:
    """One call with one turn (discarded: it warms the models); the reply's loud frames for later turns."""
    call = run_call(server.sip_port, utts, seed=SEED, turns=1, expected_frames=DEFAULT_REPLY_FRAMES)
    frames = [t["reply_frames"] for t in call["turns"] if t["latency_ms"] is not None]
    return (frames[0] if frames and frames[0] >= 20 else DEFAULT_REPLY_FRAMES), call


def run_levels(
    utts: list[tuple[str, np.ndarray]], levels: Sequence[int], debug_log: bool = False
) -> dict[str, Any]:
    """Start the stub and the server, warm up, run the levels in order (stopping early), stop all."""
    stub, stub_port = start_stub()
    workdir = Path(tempfile.mkdtemp(prefix="trunkline-bench-conc-"))
    server, rows = None, []
    out: dict[str, Any] = {}
    try:
        progress("starting trunkline serve (embedded Postgres, whisper, piper)")
        t0 = time.monotonic()
        server = start_server(workdir, stub_port, debug_log)
        out["server_start_s"] = round(time.monotonic() - t0, 1)
        progress("warm-up call (1 turn, discarded)")
        expected, warm = warm_up(server, utts)
        out["warm_up"] = {
            "reply_frames_expected": expected,
            "error": warm["error"],
            "latency_ms": [t["latency_ms"] for t in warm["turns"]],
        }
        for n in levels:
            progress(f"{n} concurrent call(s), load average {os.getloadavg()}")
            row = place_level(server, utts, n, expected)
            rows.append(row)
            progress(
                f"  p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, max {row['max_ms']} ms, "
                f"unanswered {row['unanswered']}/{row['turns']}, failed calls {row['calls_failed']}, "
                f"server CPU {row['server_cpu_pct']} %, hold lines {row['hold_lines']}, "
                f"barge-ins {row['barge_ins']}, log problems {row['server_log_problems']}"
            )
            if should_stop(row):
                progress("  stopping: p95 above the stop limit or a turn went unanswered")
                break
    finally:
        if server is not None:
            lines = server.text().splitlines()
            out["server_log_problems_total"] = log_problems(lines)
            out["server_log_problem_examples"] = problem_examples(lines)
        stop_all(server, stub, workdir)
    return out | {"levels": rows}


# --- the run --------------------------------------------------------------------------------------------


def run(
    quick: bool = False, *, levels: Sequence[int] | None = None, debug_log: bool = False
) -> dict[str, Any]:
    """Full: levels 1, 2, 4, 6, 8, 12 (stopping early); quick: 1 and 2; or the given `levels`. 4 turns
    per call."""
    started = time.monotonic()
    progress(f"load average {os.getloadavg()}; caller sentences (piper, cached)")
    utts = utterances()
    with sigterm_as_exit():
        out = run_levels(utts, levels or (LEVELS_QUICK if quick else LEVELS_FULL), debug_log)
    rows = out["levels"]
    return out | {
        "max_calls_p95_within_600ms": max_calls_within(rows, TARGET_P95_MS),
        "max_calls_p95_within_1000ms": max_calls_within(rows, SECOND_P95_MS),
        "levels_run": [lv["calls"] for lv in rows],
        "turns_per_call": TURNS_PER_CALL,
        "cores": os.cpu_count(),
        "quick": quick,
        "duration_s": round(time.monotonic() - started, 1),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "how": HOW,
    }


def _level_line(result: dict[str, Any]) -> str:
    return "; ".join(
        f"N={lv['calls']}: p50 {lv['p50_ms']} / p95 {lv['p95_ms']} ms, {lv['unanswered']} unanswered, "
        f"server CPU {lv['server_cpu_pct']} %"
        for lv in result.get("levels", [])
    )


def metrics(result: dict[str, Any]) -> list[Metric]:
    err, how = result.get("error", ""), result.get("how", HOW)
    rows = []
    for limit, key in (
        (TARGET_P95_MS, "max_calls_p95_within_600ms"),
        (SECOND_P95_MS, "max_calls_p95_within_1000ms"),
    ):
        rows.append(
            Metric(
                metric_id=f"agent_calls_p95_{limit:.0f}ms",
                title=f"Concurrent agent calls with turn p95 ≤ {limit:.0f} ms",
                unit="calls",
                value=result.get(key),
                target="sizing figure (no target)",
                passed=None,
                how=how
                if limit == TARGET_P95_MS
                else f"As above, with a {limit:.0f} ms p95 limit. Levels: " + _level_line(result),
                error=err,
                extra=result if limit == TARGET_P95_MS else {},
            )
        )
    return rows


def main(argv: list[str]) -> int:
    levels = [int(n) for n in argv[argv.index("--levels") + 1].split(",")] if "--levels" in argv else None
    result = run(quick="--quick" in argv, levels=levels, debug_log="--debug-log" in argv)
    if "--plot" in argv:
        from bench.plots import agent_concurrency

        agent_concurrency(Path(argv[argv.index("--plot") + 1]), result)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from trunkline.logs import configure_logging

    configure_logging()  # log lines to stderr: stdout is the JSON
    sys.exit(main(sys.argv[1:]))
