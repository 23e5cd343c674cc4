"""Run SIPp 3.6.1 (Debian `sip-tester`) from tests: one scenario, one process, results parsed from its files.

Every run writes into its own work directory: the scenario, `-trace_stat` CSV (read back for the success
and failure counts), `-trace_msg` and `-trace_err` logs, and SIPp's screen output. SIPp always binds to
127.0.0.1 (`-i`, `-mi`) and gets `-nostdin` (it is not on a tty) and a global `-timeout`, so a stuck call
fails the run instead of hanging the test.
"""

from __future__ import annotations

import csv
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
LOOPBACK = "127.0.0.1"


def free_udp_port(even: bool = False) -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (`even` for RTP, whose RTCP takes port + 1)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if not even or (port % 2 == 0 and port < 65535):
            return port
    raise RuntimeError("no free UDP port found")


def free_udp_block(count: int = 4) -> int:
    """The even base of `count` consecutive UDP ports free on 127.0.0.1, outside the kernel's ephemeral range,
    so no socket bound to port 0 can take one between this check and the peer's bind (SIPp binds its audio
    RTP at -mp and, unasked, video at -mp + 2)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    first, last = (high + 1, 65536 - count) if 65536 - count - high > 64 else (10000, low - count)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(first + first % 2, last, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of UDP ports found")


def udp_bound(port: int) -> bool:
    """Whether some socket on this host is bound to UDP `port` (IPv4 or IPv6)."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(len(f := line.split()) > 1 and f[1].endswith(suffix) for line in lines):
            return True
    return False


def wait_until(condition: object, timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll `condition()` until it is true or `timeout_s` passes; the result of the last poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


@dataclass(frozen=True, slots=True)
class SippAuth:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class SippResult:
    """How a SIPp run ended: exit status (None if we had to kill it), call counts, its logs."""

    returncode: int | None
    successful: int
    failed: int
    created: int
    stats: dict[str, str]
    messages: str
    errors: str
    screen: str
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def describe(self) -> str:
        """Enough to debug a failed assertion: counts, errors and the tail of the message trace."""
        return (
            f"sipp rc={self.returncode} ok={self.successful} failed={self.failed} in {self.workdir}\n"
            f"errors:\n{self.errors[-3000:]}\nmessages:\n{self.messages[-4000:]}"
        )


@dataclass(slots=True)
class SippProcess:
    """One SIPp instance: a UAS if `remote` is None, else a UAC calling `remote`; start() launches it."""

    scenario_xml: str
    workdir: Path
    remote: tuple[str, int] | None = None
    local_port: int = 0
    media_port: int = 0
    calls: int = 1
    rate: float | None = None
    limit: int | None = None
    duration_ms: int | None = None
    service: str | None = None
    auth: SippAuth | None = None
    rtp_echo: bool = False
    trace_msg: bool = True
    timeout_s: float = 30.0
    extra_args: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def args(self) -> list[str]:
        """The SIPp command line for this run."""
        wd = self.workdir
        args = [SIPP, "-sf", str(wd / "scenario.xml"), "-i", LOOPBACK, "-mi", LOOPBACK]
        args += ["-p", str(self.local_port), "-mp", str(self.media_port), "-nostdin", "-m", str(self.calls)]
        args += ["-trace_stat", "-stf", str(wd / "stat.csv"), "-fd", "1"]
        args += ["-trace_err", "-error_file", str(wd / "errors.log")]
        args += ["-timeout", f"{max(1, round(self.timeout_s))}s", "-timeout_error"]
        if self.trace_msg:
            args += ["-trace_msg", "-message_file", str(wd / "messages.log")]
        if self.rate is not None:
            args += ["-r", f"{self.rate:g}", "-rp", "1000"]
        if self.limit is not None:
            args += ["-l", str(self.limit)]
        if self.duration_ms is not None:
            args += ["-d", str(self.duration_ms)]
        if self.service is not None:
            args += ["-s", self.service]
        if self.auth is not None:
            args += ["-au", self.auth.username, "-ap", self.auth.password]
        if self.rtp_echo:
            args.append("-rtp_echo")
        args += list(self.extra_args)
        if self.remote is not None:
            args.append(f"{self.remote[0]}:{self.remote[1]}")
        return args

    def start(self, ready_timeout_s: float = 5.0) -> SippProcess:
        """Write the scenario and launch SIPp; returns once its SIP port is bound."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.local_port = self.local_port or free_udp_port()
        self.media_port = self.media_port or free_udp_block()
        (self.workdir / "scenario.xml").write_text(self.scenario_xml)
        with open(self.workdir / "screen.log", "wb") as screen:
            self._proc = subprocess.Popen(
                self.args(),
                cwd=self.workdir,
                stdout=screen,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not wait_until(
            lambda: udp_bound(self.local_port) or self._proc.poll() is not None, ready_timeout_s
        ):
            self.stop()
            raise RuntimeError(f"SIPp did not bind 127.0.0.1:{self.local_port}")
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait for SIPp to finish its calls (killing it after `timeout_s` + 10 s) and read its results."""
        assert self._proc is not None, "start() first"
        try:
            returncode: int | None = self._proc.wait(timeout=(timeout_s or self.timeout_s) + 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            returncode = None
        return self._result(returncode)

    def stop(self) -> SippResult:
        """Ask SIPp to quit (SIGUSR1: stop placing calls and exit), kill it if it does not, read results."""
        if self._proc is None:
            return self._result(None)
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._result(self._proc.returncode)

    def __enter__(self) -> SippProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.stop()

    def _result(self, returncode: int | None) -> SippResult:
        stats = read_stats(self.workdir / "stat.csv")

        def count(name: str) -> int:
            value = stats.get(name, "0")
            return int(value) if value.isdigit() else 0

        return SippResult(
            returncode=returncode,
            successful=count("SuccessfulCall(C)"),
            failed=count("FailedCall(C)"),
            created=count("TotalCallCreated"),
            stats=stats,
            messages=_read(self.workdir / "messages.log"),
            errors=_read(self.workdir / "errors.log"),
            screen=_read(self.workdir / "screen.log"),
            workdir=self.workdir,
        )


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a `-trace_stat` CSV as {column: value}; empty if SIPp wrote none."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_sipp(scenario_xml: str, workdir: Path, **options: object) -> SippResult:
    """Run one SIPp to completion (see SippProcess for the options)."""
    proc = SippProcess(scenario_xml, workdir, **options)  # type: ignore[arg-type]
    proc.start()
    return proc.wait()
