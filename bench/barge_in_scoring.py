"""The barge-in bench's pure helpers over the agent's packets (kernel receive ns, dBFS) and the caller's sent
frames: the caller's speech onset, where the agent's speech stops, pauses and restarts, how a reply met by a
backchannel is scored against a reference reply, and what the server logged for a call."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.agent_harness import SPEECH_DBFS
from bench.sip_caller import FRAME_S, SentFrame

OFFSET_WINDOW_MS = (300.0, 2300.0)  # a reply's trials: onset offsets, where the reference was loud...
LOUD_BEFORE_MS, LOUD_AHEAD_MS = 60.0, 200.0  # ...from this long before to this long after
LOUD_FRAMES = 3  # the agent is mid-word when its last packets were this many loud ones
STALL_MS = 60.0  # a caller send gap this long (vs 20 ms) is a stall; its burst can leave the server's
STALL_WINDOW_NS = 20_000_000_000  # jitter buffer holding excess delay for many seconds
FRAME_NS = round(FRAME_S * 1e9)
SILENT_DBFS = -119.0  # an agent packet of digital silence: the leg's queue was empty or paused
ABRUPT_DBFS = -50.0  # a silent run right after a packet this loud cut speech off (clauses fade out first)
HALT_FRAMES = 3  # a silent run this long after the onset is the agent halting
STOP_QUIET_NS = 600_000_000  # a halt this long (or longer) after a backchannel is a stop, not a pause
STOP_WINDOW_NS = 1_000_000_000  # a halt this soon after a backchannel's onset is caused by it
CUT_TOLERANCE_MS = 200.0  # less agent speech than the reference by more than this: the reply was cut
PAUSE_MARGIN_MS = 80.0  # a silent run longer than the reference's longest by this: a pause
PAUSE_MIN_MS = 100.0  # an abrupt silent run this long: a pause


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
