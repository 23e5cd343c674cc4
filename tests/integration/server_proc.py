"""`trunkline serve` as a real subprocess for end-to-end tests, plus the operator CLI run against its state.

A `ServerProcess` owns a work directory with its own config (distinct SIP port and RTP range, so it can run
next to a server on 5060), state dir (embedded Postgres, recordings) and tenants dir (a copy of the committed
demo tenant plus whatever a test adds). Output is read line by line on two threads; `wait_for()` blocks on a
condition that those threads notify, so tests wait on log events instead of sleeping.

    with running_server(trunks=[...], greeting_wav=wav, tenants={"other": TOML}, env={...}) as srv:
        # started: "TRUNKLINE-READY" was printed (it raises with the output otherwise)
        srv.wait_for(r"sip\\.call_admitted")
        srv.calls_list("demo")        # `trunkline calls list --tenant demo --state-dir <its state>`
        assert srv.stop() == 0        # SIGTERM, wait for exit; idempotent
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.sip_server import rtp_range, write_config
from tests.peers.sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
COMMITTED_TENANTS = REPO / "tenants"
READY = "TRUNKLINE-READY"
STOPPED = "TRUNKLINE-STOPPED"
INTENT = """
[policy]
mode = "intents"

[[intents]]
name = "hours"
examples = ["what are your hours"]
reply = "We are open nine to five."
"""  # the smallest offline policy, for test tenants
DELTA_TOML = (  # a business whose plan allows one call at a time
    'display_name = "Delta"\nnumbers = ["+15550400"]\ngreeting = "Hello from Delta."\n'
    + INTENT
    + "\n[limits]\nmax_concurrent_calls = 1\n"
)


def trunkline_cmd(*args: str) -> list[str]:
    """The operator's `trunkline ...` command line, run with this interpreter."""
    return [sys.executable, "-m", "trunkline.cli", *args]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = REPO, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `trunkline ARGS` to completion; stdout and stderr are kept apart."""
    return subprocess.run(
        trunkline_cmd(*args),
        capture_output=True,
        text=True,
        env=dict(env if env is not None else os.environ),
        cwd=cwd,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class ServerProcess:
    """One `trunkline serve --config <workdir>/trunkline.toml` process and everything it printed."""

    workdir: Path
    config_path: Path
    sip_port: int
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # (stream, line) in arrival order
    returncode: int | None = None
    cli_outputs: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (args, stdout + stderr)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _pumps: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        workdir: Path,
        *,
        trunks: Sequence[Mapping[str, Any]],
        greeting_wav: Path,
        tenants: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        sip: Mapping[str, Any] | None = None,
        server: Mapping[str, Any] | None = None,
    ) -> ServerProcess:
        """Write the config and tenants dir (committed demo tenant + `tenants` {id: tenant.toml text})."""
        workdir.mkdir(parents=True, exist_ok=True)
        tenants_dir = workdir / "tenants"
        shutil.copytree(COMMITTED_TENANTS / "demo", tenants_dir / "demo")
        for tenant_id, text in (tenants or {}).items():
            (tenants_dir / tenant_id).mkdir(parents=True, exist_ok=True)
            (tenants_dir / tenant_id / "tenant.toml").write_text(text)
        port = int((sip or {}).get("listen_port", 0)) or free_udp_port()
        low, high = rtp_range(100)
        sections = {
            "sip": {"listen_host": "127.0.0.1", "listen_port": port, **(sip or {})},
            "media": {"rtp_host": "127.0.0.1", "rtp_port_min": low, "rtp_port_max": high},
            "log": {"level": "info"},
            "server": {
                "state_dir": "state",
                "tenants_dir": "tenants",
                "drain_timeout_s": 10,
                "greeting_wav": str(greeting_wav),
                # operator flows are checked with the trunk-check handler (greeting + recording), which
                # loads no models; the agent has its own end-to-end tests
                "call_handler": "record",
                **(server or {}),
            },
        }
        config = write_config(workdir / "trunkline.toml", sections, [dict(t) for t in trunks])
        base = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TRUNKLINE_DATABASE_ADMIN_URL")
        }
        return cls(workdir, config, port, {**base, **(env or {})})

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def tenants_dir(self) -> Path:
        return self.workdir / "tenants"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> None:
        """Launch the server; return once it printed TRUNKLINE-READY (raise with its output otherwise)."""
        self.process = subprocess.Popen(
            trunkline_cmd("serve", "--config", str(self.config_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.workdir,
        )
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            pump = threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            pump.start()
            self._pumps.append(pump)
        ready = self._wait(lambda: self._has_line("stdout", READY) or self._ended(), timeout_s)
        if not ready or not self._has_line("stdout", READY):
            self.kill()
            raise RuntimeError(f"trunkline serve did not become ready:\n{self.text()[-6000:]}")

    def signal(self, sig: signal.Signals) -> int:
        """Send `sig`; the index of the next output line (for `wait_for(..., after=...)`)."""
        assert self.process is not None
        mark = self.mark()
        self.process.send_signal(sig)
        return mark

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (once) and wait for exit and for all output; the exit status. Kills after `timeout_s`."""
        if self.process is None:
            raise RuntimeError("server was never started")
        if self.returncode is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
            for pump in self._pumps:
                pump.join(10)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL if still running; then wait for its last output."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        if self.returncode is None:
            self.returncode = self.process.wait(timeout=10)
        for pump in self._pumps:
            pump.join(10)

    # --- output ------------------------------------------------------------------------------------------

    def _pump(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append((name, line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait(self, predicate: Any, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    def _has_line(self, stream: str, text: str) -> bool:
        return any(s == stream and text in line for s, line in self.lines)

    def _ended(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def mark(self) -> int:
        """How many lines were printed so far."""
        with self._changed:
            return len(self.lines)

    def wait_for(self, pattern: str, timeout_s: float = 15.0, *, after: int = 0, count: int = 1) -> list[str]:
        """Block until `count` lines from index `after` on match regexp `pattern`; those lines.

        Raises AssertionError (with the recent output) on timeout or if the server exits first."""
        regexp = re.compile(pattern)

        def found() -> list[str]:
            return [line for _, line in self.lines[after:] if regexp.search(line)]

        done = self._wait(lambda: len(found()) >= count or self._ended(), timeout_s)
        with self._changed:
            hits = found()
        if not done or len(hits) < count:
            raise AssertionError(f"no {count} x /{pattern}/ in server output:\n{self.text(after)[-6000:]}")
        return hits

    def text(self, after: int = 0, stream: str | None = None) -> str:
        """Everything printed so far (from line `after`, optionally one stream only)."""
        with self._changed:
            return "\n".join(line for s, line in self.lines[after:] if stream is None or s == stream)

    # --- operator CLI against this server's state ---------------------------------------------------------

    def cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`trunkline ARGS` with the server's environment, from its work directory (output kept)."""
        result = run_cli(*args, env=self.env, cwd=self.workdir, timeout_s=timeout_s)
        self.cli_outputs.append((args, result.stdout + result.stderr))
        return result

    def calls_list(self, tenant: str) -> subprocess.CompletedProcess[str]:
        return self.cli("calls", "list", "--tenant", tenant, "--state-dir", str(self.state_dir))

    def calls_show(self, tenant: str, call_id: str) -> subprocess.CompletedProcess[str]:
        return self.cli("calls", "show", call_id, "--tenant", tenant, "--state-dir", str(self.state_dir))


@contextmanager
def running_server(**options: Any) -> Iterator[ServerProcess]:
    """A started server in a private work directory (see `ServerProcess.create` for the options); stopped
    and removed afterwards. Not under pytest's tmp dirs: pytest keeps those root-only (0700, re-applied when
    any pytest session starts) and, run as root, the embedded Postgres runs as the user `pgserver`."""
    workdir = Path(tempfile.mkdtemp(prefix="trunkline-e2e-"))
    try:
        server = ServerProcess.create(workdir, **options)
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class ListedCall:
    """One row of `trunkline calls list`."""

    call_id: str
    direction: str
    from_number: str
    to_number: str
    seconds: str
    end_reason: str


_ROW = re.compile(
    r"^(?P<id>[0-9a-f-]{36})\s+\S+ \S+\s+(?P<dir>\S+)\s+(?P<frm>\S+)\s+(?P<to>\S+)"
    r"\s+(?P<secs>\S+)\s+\d+\s+(?P<end>\S+)$"
)


def parse_calls_list(stdout: str) -> list[ListedCall]:
    """The rows of `calls list` output: every line after the header ("(no calls)" skipped; any other line
    is an error). Lines before the header are ignored (log lines that reach stdout; see the e2e test)."""
    lines = stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("CALL ID ")), None)
    if header is None:
        raise AssertionError(f"no calls list header in:\n{stdout}")
    rows = []
    for line in lines[header + 1 :]:
        if line == "(no calls)":
            continue
        match = _ROW.match(line)
        if match is None:
            raise AssertionError(f"unexpected calls list line: {line!r}")
        rows.append(
            ListedCall(match["id"], match["dir"], match["frm"], match["to"], match["secs"], match["end"])
        )
    return rows


def wait_for_calls(
    server: ServerProcess, tenant: str, predicate: Any, timeout_s: float = 20.0
) -> list[ListedCall]:
    """Run `calls list` until `predicate(rows)` holds (the store writes asynchronously after hang-up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = server.calls_list(tenant)
        assert result.returncode == 0, result.stderr
        rows = parse_calls_list(result.stdout)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
