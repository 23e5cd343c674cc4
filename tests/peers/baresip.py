"""Run baresip 1.0.0 headless as a caller: a WAV file as its microphone, what it hears recorded to WAV.

Each run gets its own config directory: SIP and RTP on 127.0.0.1 only (a DNS server of 127.0.0.1 so no
lookup can leave the host), modules `menu` (for `-e "/dial ..."`), `aufile` (microphone from a file),
`sndfile` (writes `dump-*-dec.wav` = heard, `dump-*-enc.wav` = sent), `g711`, `alsa` with the `null` device
as the speaker. baresip hangs up when the microphone file ends, so it is padded with silence and the call
is ended by `-t SECONDS` (baresip quits, sending BYE).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.peers.sipp import LOOPBACK, free_udp_port
from tests.peers.speech import pad, read_wav, write_wav

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
MODULE_PATH = "/usr/lib/baresip/modules"


@dataclass(frozen=True, slots=True)
class BaresipResult:
    """What happened: exit status (None if killed), whether the call got up, the two recordings, the log."""

    returncode: int | None
    established: bool
    heard: np.ndarray
    sent: np.ndarray
    sample_rate_hz: int
    log: str
    workdir: Path

    def describe(self) -> str:
        head = f"baresip rc={self.returncode} established={self.established} in {self.workdir}"
        return f"{head}\n{self.log[-3000:]}"


@dataclass(frozen=True, slots=True)
class BaresipCaller:
    """One call from baresip: `mic` (int16 at `sample_rate_hz`) is what it says; it runs `seconds`."""

    workdir: Path
    mic: np.ndarray
    sample_rate_hz: int = 8000
    seconds: int = 6
    sip_port: int = 0
    codecs: str = "PCMU/8000/1"
    user: str = "caller"

    def config_text(self, sip_port: int, rtp_base: int) -> str:
        lines = [
            "poll_method epoll",
            f"sip_listen {LOOPBACK}:{sip_port}",
            "call_local_timeout 30",
            "call_max_calls 1",
            "audio_player alsa,null",
            f"audio_source aufile,{self.workdir / 'mic.wav'}",
            "audio_alert alsa,null",
            f"ausrc_srate {self.sample_rate_hz}",
            f"auplay_srate {self.sample_rate_hz}",
            "ausrc_channels 1",
            "auplay_channels 1",
            f"rtp_ports {rtp_base}-{rtp_base + 19}",
            "rtcp_mux no",
            f"dns_server {LOOPBACK}:53",
            f"net_interface {LOOPBACK}",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module aufile.so",
            "module alsa.so",
            "module sndfile.so",
            "module_app account.so",
            "module_app menu.so",
            f"snd_path {self.workdir / 'recordings'}",
        ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> list[str]:
        """Write config, account and microphone file; the baresip command line (without the dial)."""
        cfg = self.workdir / "config"
        cfg.mkdir(parents=True, exist_ok=True)
        (self.workdir / "recordings").mkdir(exist_ok=True)
        sip_port = self.sip_port or free_udp_port()
        (cfg / "config").write_text(self.config_text(sip_port, free_udp_port(even=True) & ~1))
        account = f"<sip:{self.user}@{LOOPBACK}>;regint=0;audio_codecs={self.codecs}"
        (cfg / "accounts").write_text(account + "\n")
        mic = pad(self.mic, self.sample_rate_hz, after_s=self.seconds + 5)  # outlast the call
        write_wav(self.workdir / "mic.wav", mic, self.sample_rate_hz)
        return [BARESIP, "-f", str(cfg), "-t", str(self.seconds)]

    def call(self, uri: str, timeout_s: float | None = None) -> BaresipResult:
        """Dial `uri`, let baresip run for `seconds`, then collect the recordings."""
        args = [*self.prepare(), "-e", f"/dial {uri}"]
        log_path = self.workdir / "baresip.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                returncode: int | None = proc.wait(timeout=timeout_s or self.seconds + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                returncode = None
        text = log_path.read_text(errors="replace")
        heard, rate = _newest(self.workdir / "recordings", "dec", self.sample_rate_hz)
        sent, _ = _newest(self.workdir / "recordings", "enc", self.sample_rate_hz)
        return BaresipResult(returncode, "Call established" in text, heard, sent, rate, text, self.workdir)


def _newest(folder: Path, kind: str, default_rate_hz: int) -> tuple[np.ndarray, int]:
    """The samples of the latest `dump-*-{kind}.wav` (empty if baresip wrote none)."""
    files = sorted(folder.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)
    if not files or files[-1].stat().st_size <= 44:
        return np.zeros(0, dtype=np.int16), default_rate_hz
    return read_wav(files[-1])
