"""Test harness for the SIP integration tests: the demo server as a real process, and SIPp runs.

The server under test is `python -m trunkline.sip.demo_call` (SIP + media + greeting/recording) with a
config written into the test's tmp dir; SIPp scenarios are written from small XML templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.peers.kamailio import free_udp_port
from tests.peers.sipp import free_udp_block

if TYPE_CHECKING:
    from trunkline.sip.service import SipService as SipServiceType

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
_rtp_base = [32000 + (os.getpid() % 200) * 100]
_rtp_lock = threading.Lock()


def rtp_range(size: int = 100) -> tuple[int, int]:
    """A fresh RTP port range for one server (ranges never overlap within a test run)."""
    with _rtp_lock:
        low = _rtp_base[0]
        _rtp_base[0] += size
        if _rtp_base[0] > 60000:
            _rtp_base[0] = 32000
    return low, low + size - 1


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]], trunks: list[dict[str, Any]]) -> Path:
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for trunk in trunks:
        lines.append("[[trunk]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in trunk.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DemoServer:
    """The demo server process under test."""

    workdir: Path
    greeting: Path
    trunks: list[dict[str, Any]]
    sip: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_udp_port)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    rtp_ports: int = 100

    @property
    def recordings(self) -> Path:
        return self.workdir / "state" / "recordings"

    def start(self, timeout_s: float = 20.0) -> None:
        low, high = rtp_range(self.rtp_ports)
        sip = {"listen_port": self.port, **self.sip}
        server = {
            "state_dir": "state",
            "greeting_wav": str(self.greeting),
            "drain_timeout_s": 5,
            "call_handler": "record",  # what trunkline.sip.demo_call runs (no process-wide call cap)
            **self.server,
        }
        cfg = write_config(
            self.workdir / "trunkline.toml",
            {"sip": sip, "media": {"rtp_port_min": low, "rtp_port_max": high}, "server": server},
            self.trunks,
        )
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trunkline.sip.demo_call", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        if not ready.wait(timeout_s):
            self.stop()
            raise RuntimeError("demo server did not start:\n" + "".join(self.output[-40:]))

    def _pump(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "TRUNKLINE-READY" in line:
                ready.set()

    def log_text(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, timeout_s: float, count: int = 1) -> bool:
        return wait_until(lambda: self.log_text().count(text) >= count, timeout_s)

    def summaries(self) -> list[dict[str, Any]]:
        if not self.recordings.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.recordings.glob("*.json"))]

    def wait_summaries(self, count: int, timeout_s: float) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.summaries()) >= count, timeout_s)
        return self.summaries()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: returns the exit status."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll a condition until it holds or the deadline passes (peers are separate processes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    errors: str
    stats: str


def run_sipp(
    workdir: Path,
    scenario: str,
    target: str,
    *,
    service: str = "+15550100",
    extra: list[str] | None = None,
    calls: int = 1,
    timeout_s: float = 60.0,
    name: str = "scn",
) -> SippResult:
    """Run a SIPp scenario (XML text) against `target` and wait for it to finish."""
    scn = workdir / f"{name}.xml"
    scn.write_text(scenario)
    err = workdir / f"{name}_errors.log"
    stat = workdir / f"{name}_stat.csv"
    port = free_udp_port()
    media_port = free_udp_block()  # apart from `port` (two free_udp_port() calls can return the same port)
    cmd = [
        SIPP,
        target,
        "-sf",
        str(scn),
        "-s",
        service,
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    cmd += ["-mp", str(media_port), "-nostdin", "-m", str(calls), "-trace_err", "-error_file", str(err)]
    cmd += ["-trace_stat", "-stf", str(stat), "-timeout", f"{int(timeout_s)}s", "-timeout_error"]
    cmd += ["-trace_msg", "-message_file", str(workdir / f"{name}_msg.log")]
    cmd += extra or []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 15, cwd=workdir)
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
    return SippResult(proc.returncode, proc.stdout + proc.stderr, read(err), read(stat))


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def greeting_wav() -> Path:
    """The demo greeting, synthesized with piper once per machine and cached in the temp dir."""
    import tempfile

    from trunkline.sip.demo_call import ensure_greeting

    return ensure_greeting(Path(tempfile.gettempdir()) / "trunkline-tests" / "greeting.wav")


@contextlib.asynccontextmanager
async def in_process_sip(
    tmp_path: Path, trunks: list[dict[str, Any]], on_call: Any, admit: Any = None, rtp_ports: int = 20
) -> AsyncIterator[tuple[SipServiceType, int]]:
    """SipService + MediaEngine in this process (answering at once) on a free port, `trunks` as the config's
    [[trunk]] tables; yields the service and its SIP port, and closes both at the end."""
    from trunkline.config.loader import parse_config
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.sip.service import SipService

    port = free_udp_port()
    low, high = rtp_range(rtp_ports)
    tables = {
        "sip": {"listen_port": port, "answer_delay_s": 0},
        "media": {"rtp_port_min": low, "rtp_port_max": high},
        "trunk": trunks,
    }
    config = parse_config(tables, "inline.toml", {}, tmp_path)
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    await engine.start()
    service = SipService()
    try:
        await service.start(asyncio.get_running_loop(), config, engine, on_call, admit=admit)
        yield service, port
    finally:
        await service.aclose()
        await engine.aclose()
