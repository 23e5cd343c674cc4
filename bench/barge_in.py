"""Barge-in at the RTP boundary, as a caller hears it: scripted callers over real SIP/RTP on 127.0.0.1
against one `trunkline serve` (agent handler, local whisper + piper, LLM = the OpenAI-compatible stub of
bench/agent_harness.py, whose reply "Sure, Tuesday at ten works. Anything else?" is ~2.6 s of audio).

Two calls at once (quick: one trial each), each a chain of trials starting while the agent speaks: at a seeded
offset into the reply where the call's reference reply was loud from 60 ms before to 200 ms after (not in
the gap after "Sure,"), sent once the agent's last 3 packets were loud (waiting up to 400 ms for that). The
greeting is interrupted first (300-900 ms in) and the answer plays out uninterrupted as the call's
reference reply; then each reply is (seeded order) either
* interrupted by a sentence (6 texts, half with a pause after the first word or two): onset → stop = send
  time of the caller's first frame above -45 dBFS → kernel receive time of the agent's last packet above
  -45 dBFS before the caller's last speech frame (0 when the agent was already quiet at the onset). Beside
  it: onset → first halt (the last loud packet before the first ≥ 60 ms run of digital silence that began
  after the onset), and whether the agent spoke again over the caller after halting (a pause that the
  policy resumed). The agent must answer (a new spurt after ≥ 300 ms of quiet), and that answer is the
  next trial's reply; or
* met by a backchannel ("Uh-huh.", "Yeah.", "Okay.", "Mm-hmm.", "Right.", "Mhm."; kind "control": the
  caller says nothing, scored alike), then played out (until the server logs the reply's end,
  agent.turn_latency, and the agent is quiet 0.8 s: a paused reply is not taken for an ended one), and a
  short prompt asks for the next reply. Against the reference: cut = ≥ 200 ms less agent speech (the reply
  was not finished); said_more = ≥ 200 ms more (it was cut, then said a sentence again or answered the
  backchannel); long_pause = a run of digital silence (the leg had nothing to send: paused or idle) ≥ 600 ms
  overlapping the 1 s after the onset; paused = such a run longer than the reference's longest by 80 ms, or
  an abrupt one (right after a loud packet) ≥ 100 ms; continued = none of these. False stop (the headline) =
  cut or said_more: the agent gave up or restarted its reply; paused or long_pause (it stopped, then went on
  where it was) is reported beside it.
The server logs at debug level; its lines for each call (matched by the agent's call_id) give per trial the
barge-in events (agent.barge_in reasons, agent.resume_cut, agent.backchannel_ignored) and the caller-side
decode times, as a cross-check, not used to score; the whole log is kept in bench/.cache/barge_in/. Our
sender's stalls (a 20 ms frame leaving ≥ 60 ms after the one before, then a burst) are reported per
interruption: they can leave the server's jitter buffer with excess delay, which adds to onset → stop.
Caller speech: piper joe, deterministic, cached in bench/.cache/barge_in/.
Run: python -m bench.barge_in [--quick]   (JSON on stdout, progress on stderr)
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent_harness import sigterm_as_exit, speech_clips, start_server, start_stub, stop_all
from bench.barge_in_call import TrialCall, progress
from bench.barge_in_scoring import rate_pct
from bench.report import Metric
from bench.turn_latency import percentiles

CACHE = Path(__file__).resolve().parent / ".cache" / "barge_in"
INTERRUPTIONS = (  # alternately with and without a pause after the first word or two
    "Wait, actually make it Wednesday.",
    "I would rather come in on Wednesday.",
    "Hold on, can we do Thursday instead?",
    "Can we make that Thursday afternoon instead?",
    "No, no, that is too early for me.",
    "Actually I need to check my calendar first.",
)
BACKCHANNELS = ("Uh-huh.", "Yeah.", "Okay.", "Mm-hmm.", "Right.", "Mhm.")
PROMPTS = ("Is Tuesday free?", "Book me in, please.", "I need a cleaning.", "Can I come in soon?")
TARGETS = {"p95": 150.0, "false_stop_pct": 5.0}
CALLS = 2  # concurrent calls against the one server
SERVER_LOG = "last-server.log"  # the last run's server log (debug level), in CACHE


# --- inputs ---------------------------------------------------------------------------------------------


def clips(texts: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(text, 8 kHz int16 speech) per text: turn_latency's piper synthesis, cached in CACHE."""
    return speech_clips(texts, CACHE)


def plan(interrupts: int, backchannels: int, controls: int, seed: int) -> list[str]:
    """The order of the reply trials: a seeded shuffle of "interrupt", "backchannel" and "control"."""
    kinds = ["interrupt"] * interrupts + ["backchannel"] * backchannels + ["control"] * controls
    random.Random(seed).shuffle(kinds)
    return kinds


# --- the run --------------------------------------------------------------------------------------------


def summarise(calls: list[dict[str, Any]], started: float, server_start_s: float) -> dict[str, Any]:
    """The run's numbers over all calls' trials."""
    trials = [t for c in calls for t in c["trials"]]
    stops = [t for t in trials if t["kind"] == "interrupt" and t.get("onset_to_stop_ms") is not None]
    samples = [t["onset_to_stop_ms"] for t in stops]
    halts = [t["onset_to_first_halt_ms"] for t in stops if t.get("onset_to_first_halt_ms") is not None]
    bcs = [t for t in trials if t["kind"] == "backchannel" and "outcome" in t]
    outcomes = {
        k: sum(t["outcome"] == k for t in bcs)
        for k in ("continued", "paused", "long_pause", "said_more", "cut")
    }
    false_stops = len(bcs) - outcomes["continued"]
    bc_halts = [t["halt_ms"] for t in bcs if t["outcome"] != "continued"]
    controls = [t for t in trials if t["kind"] == "control" and "outcome" in t]
    loud = [t["onset_to_stop_ms"] for t in stops if t.get("agent_loud_at_onset")]
    steady = [t["onset_to_stop_ms"] for t in stops if not t.get("caller_stall_ms")]
    return {
        **percentiles(samples),
        "samples_ms": samples,
        "first_halt": {k.replace("_ms", ""): v for k, v in percentiles(halts).items()} | {"unit": "ms"},
        "interrupt_trials": sum(t["kind"] == "interrupt" for t in trials),
        "interrupts_measured": len(samples),
        "interrupts_answered": sum(bool(t["answered"]) for t in stops),
        "spoke_again_over_caller": sum(bool(t["spoke_again_over_caller"]) for t in stops),
        "agent_quiet_at_onset": sum(bool(t["agent_quiet_at_onset"]) for t in stops),
        # the agent's last 3 packets before the onset were loud: it was mid-word
        "agent_loud_at_onset": len(loud),
        "loud_onset": {k.replace("_ms", ""): v for k, v in percentiles(loud).items()} | {"unit": "ms"},
        # no caller send stall (≥ 60 ms) in the 20 s before the onset
        "interrupts_without_stall": len(steady),
        "without_stall": {k.replace("_ms", ""): v for k, v in percentiles(steady).items()} | {"unit": "ms"},
        "backchannel_trials": len(bcs),
        "backchannel_outcomes": outcomes,
        "false_stops": false_stops,
        "false_stop_pct": rate_pct(false_stops, len(bcs)),
        "reply_cut_pct": rate_pct(outcomes["cut"] + outcomes["said_more"], len(bcs)),
        "backchannel_pause_pct": rate_pct(outcomes["paused"] + outcomes["long_pause"], len(bcs)),
        "backchannels_loud_at_onset": sum(bool(t.get("agent_loud_at_onset")) for t in bcs),
        "backchannel_halt_ms_p50": round(float(np.median(bc_halts)), 1) if bc_halts else None,
        # silent caller, same scoring: halts the detector finds without a backchannel (TTS underruns)
        "control_trials": len(controls),
        "control_halts": sum(t["outcome"] != "continued" for t in controls),
        "server_interrupts_on_backchannels": sum(bool(t.get("barge_in")) for t in bcs),
        "trial_errors": sum("error" in t for t in trials),
        "reference_replies": [c["reference_reply"] for c in calls],
        "per_trial": trials,
        "caller_late_sends": sum(c["late_sends"] for c in calls),
        "caller_send_stalls_ms": [g for c in calls for g in c["send_stalls_ms"]],
        "calls": len(calls),
        "server_start_s": round(server_start_s, 1),
        "duration_s": round(time.monotonic() - started, 1),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "how": __doc__.split("Run:")[0].strip() if __doc__ else "",
    }


def run_calls(
    server: Any, audio: dict[str, list[tuple[str, np.ndarray]]], plans: list[list[str]]
) -> list[Any]:
    """Start the calls one after another (each finds its call_id), then run their trials at once; a call's
    result, or its error as {"error": ...}."""
    import threading

    calls = [TrialCall(server, audio, seed=7 + k) for k in range(len(plans))]
    results: list[Any] = [None] * len(calls)

    def one(k: int, greeting: int) -> None:
        try:
            results[k] = calls[k].run(greeting, plans[k])
        except Exception as exc:  # one broken call does not lose the other's trials
            results[k] = {"error": f"{type(exc).__name__}: {exc}"}
            calls[k].progress(f"failed: {results[k]['error']}")

    claimed: set[str] = set()
    threads = []
    try:
        for k, call in enumerate(calls):
            greeting = call.start(claimed)
            threads.append(threading.Thread(target=one, args=(k, greeting), daemon=True))
            threads[-1].start()
        for thread in threads:
            thread.join()
    finally:
        for call in calls:
            call.close()
    return results


def run(quick: bool = False) -> dict[str, Any]:
    """Full: two calls at once, each greeting + 6 interrupts + 6 backchannels (+ 1 control in the first);
    quick: two calls, each greeting + one trial (an interrupt, a backchannel)."""
    started = time.monotonic()
    progress(f"load average {os.getloadavg()}; caller speech (piper, cached)")
    audio = {"interrupt": clips(INTERRUPTIONS), "backchannel": clips(BACKCHANNELS), "prompt": clips(PROMPTS)}
    if quick:
        plans = [["interrupt"], ["backchannel"]][:CALLS]
    else:
        plans = [plan(6, 6, 1 if k == 0 else 0, seed=7 + k) for k in range(CALLS)]
    stub, stub_port = start_stub()
    workdir = Path(tempfile.mkdtemp(prefix="trunkline-bench-bargein-"))
    server, results = None, []
    with sigterm_as_exit():
        try:
            progress("starting trunkline serve (embedded Postgres, whisper, piper)")
            t0 = time.monotonic()
            server = start_server(workdir, stub_port, debug_log=True)
            server_start_s = time.monotonic() - t0
            results = run_calls(server, audio, plans)
        finally:
            if server is not None:
                CACHE.mkdir(parents=True, exist_ok=True)
                (CACHE / SERVER_LOG).write_text(server.text())
            stop_all(server, stub, workdir)
    progress("done")
    calls = [r for r in results if r is not None and "error" not in r]
    if not calls:
        raise RuntimeError(f"no call completed: {results}")
    return summarise(calls, started, server_start_s) | {
        "call_errors": [r["error"] for r in results if r is not None and "error" in r],
        "server_log": str(CACHE / SERVER_LOG),
    }


def metrics(result: dict[str, Any]) -> list[Metric]:
    err, how = result.get("error", ""), result.get("how", "")
    p95, fs, cut = result.get("p95_ms"), result.get("false_stop_pct"), result.get("reply_cut_pct")
    n, answered = result.get("interrupts_measured"), result.get("interrupts_answered")
    return [
        Metric(
            metric_id="barge_in_stop_p95_ms",
            title="Barge-in p95 (caller speech onset → agent's last speech packet, on the wire)",
            unit="ms", value=p95, target=f"≤ {TARGETS['p95']:g} ms",
            passed=None if p95 is None else p95 <= TARGETS["p95"],
            how=f"{how}\n\np50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms over {n} "
            f"interruptions ({answered} answered, {result.get('agent_loud_at_onset')} with the agent "
            f"mid-word at the onset) in {result.get('calls')} concurrent calls; the agent halted then spoke "
            f"again over the caller in {result.get('spoke_again_over_caller')}; onset → first halt "
            f"{result.get('first_halt')}; without a caller send stall in the 20 s before "
            f"({result.get('interrupts_without_stall')}): {result.get('without_stall')}.",
            error=err, extra=result,
        ),
        Metric(
            metric_id="barge_in_false_stop_pct",
            title="Barge-in false stops on backchannels (the agent's reply cut or restarted)",
            unit="%", value=cut, target=f"≤ {TARGETS['false_stop_pct']:g} %",
            passed=None if cut is None else cut <= TARGETS["false_stop_pct"],
            how=f"cut or said_more in {result.get('backchannel_trials')} backchannels; outcomes "
            f"{result.get('backchannel_outcomes')}; control halts {result.get('control_halts')} of "
            f"{result.get('control_trials')}.",
            error=err,
        ),
        Metric(
            metric_id="barge_in_backchannel_pause_pct",
            title="Backchannels the agent paused for (then went on where it was)",
            unit="%", value=fs, target="report", passed=None,
            how=f"{result.get('false_stops')} of {result.get('backchannel_trials')} backchannels paused or "
            f"cut the agent's audio ({result.get('backchannel_pause_pct')} % paused, then went on); median "
            f"silence {result.get('backchannel_halt_ms_p50')} ms (the agent "
            "pauses after 100 ms of caller speech and waits for the transcript before it goes on).",
            error=err,
        ),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    result = run(quick="--quick" in argv)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from trunkline.logs import configure_logging

    configure_logging()  # log lines to stderr: stdout is the JSON
    sys.exit(main(sys.argv[1:]))
