"""One barge-in bench call over real SIP/RTP: its chain of trials (interrupt, backchannel or control over
each reply the agent starts), paced on the wall clock and scored by bench.barge_in_scoring."""

from __future__ import annotations

import random
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.agent_harness import DID, SPEECH_DBFS, AgentEar
from bench.barge_in_scoring import (
    STALL_WINDOW_NS,
    agent_call_ids,
    backchannel_outcome,
    first_halt,
    first_loud_sent,
    largest_stall_ms,
    last_loud_before,
    longest_quiet_ms,
    loud_offsets_ms,
    loud_run_before,
    onset_to_ms,
    reply_shape,
    send_stalls,
    server_events,
    spurt_start,
)
from bench.sip_caller import FRAME_S, RtpEndpoint, SipCaller
from bench.turn_latency import last_speech_ns

DELAY_S = (0.3, 0.9)  # the greeting's interruption: onset after the agent's first speech packet
LOUD_WAIT_S = 0.4  # the caller's speech waits at most this long for the agent to be mid-word (LOUD_FRAMES)
ANSWER_QUIET_NS = 300_000_000  # the answer to an interruption follows at least this much agent quiet
END_QUIET_S = 0.8  # a reply has ended when the agent is quiet this long...
END_QUIET_AFTER_BARGE_S = 2.5  # ...or this long after the server logged a barge-in (resume_cut comes later)
REPLY_TIMEOUT_S = 20.0


def progress(message: str) -> None:
    print(f"[barge_in {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
