"""A minimal scripted caller for benchmarks: a SIP UAC (INVITE/ACK/BYE over UDP, PCMU offer) and an RTP
endpoint that sends a 20 ms frame every 20 ms like a phone (queued speech, else a seeded µ-law noise floor)
and stamps every received packet with the kernel's receive time (SO_TIMESTAMPNS), so the caller's own
Python scheduling does not blur the measured arrival times. 127.0.0.1 only; one call at a time.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import numpy as np

from trunkline.codecs.g711 import ulaw_encode

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
FRAME_SAMPLES = 160
FRAME_S = 0.020
PCMU = 0
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}


class SipError(RuntimeError):
    """The server did not answer the call as a UAS should (no answer, a failure status, unusable SDP)."""


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One RTP packet we sent: sequence number, wall-clock send time (ns) and its audio level."""

    seq: int
    at_ns: int
    level_dbfs: float


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """One RTP packet from the server: kernel receive time (ns, CLOCK_REALTIME) and its payload."""

    at_ns: int
    seq: int
    payload_type: int
    payload: bytes


def frame_dbfs(pcm: np.ndarray) -> float:
    """RMS level of a frame in dB relative to full scale (-120 for digital silence)."""
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20.0 * float(np.log10(rms / 32768.0)) if rms > 0.0 else -120.0


def noise_floor(seconds: float, level_dbfs: float, seed: int) -> np.ndarray:
    """Seeded white noise at `level_dbfs` RMS, 8 kHz int16: the line noise a phone sends between words."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(round(seconds * 8000)) * 32768.0 * 10 ** (level_dbfs / 20)
    return np.clip(np.round(noise), -32768, 32767).astype(np.int16)


class RtpEndpoint:
    """Symmetric PCMU RTP on an even local port: a paced sender thread and a kernel-stamped receiver."""

    def __init__(self, *, seed: int = 1, floor_dbfs: float = -60.0) -> None:
        self.sock = _bind_even_udp()
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        floor = noise_floor(10.0, floor_dbfs, seed)
        n = floor.size // FRAME_SAMPLES
        self._floor = [
            (ulaw_encode(f), frame_dbfs(f)) for f in floor[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        ]
        self._queue: deque[tuple[bytes, float]] = deque()
        self._lock = threading.Lock()
        self.sent: list[SentFrame] = []
        self.received: list[ReceivedPacket] = []
        self.bad_packets = 0
        self.late_sends = 0  # ticks the sender thread woke > 10 ms late (a busy box)
        self._remote: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ssrc = random.Random(seed).getrandbits(32)

    def start(self, remote: tuple[str, int]) -> None:
        self._remote = remote
        for target in (self._send_loop, self._recv_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"rtp-{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def play(self, pcm: np.ndarray) -> None:
        """Queue 8 kHz int16 audio; it leaves in 20 ms frames after whatever is queued already."""
        pad = (-pcm.size) % FRAME_SAMPLES
        frames = np.concatenate([pcm.astype(np.int16), np.zeros(pad, np.int16)]).reshape(-1, FRAME_SAMPLES)
        with self._lock:
            self._queue.extend((ulaw_encode(f), frame_dbfs(f)) for f in frames)

    @property
    def playing(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)
        self.sock.close()

    def _send_loop(self) -> None:
        assert self._remote is not None
        seq, ts = random.Random(self._ssrc).getrandbits(16), 0
        start = time.perf_counter()
        tick = 0
        while not self._stop.is_set():
            delay = start + tick * FRAME_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.010:
                self.late_sends += 1
            with self._lock:
                item = self._queue.popleft() if self._queue else None
            payload, level = item if item is not None else self._floor[tick % len(self._floor)]
            header = struct.pack("!BBHII", 0x80, PCMU, seq, ts, self._ssrc)
            at_ns = time.time_ns()
            try:
                self.sock.sendto(header + payload, self._remote)
            except OSError:
                return
            self.sent.append(SentFrame(seq, at_ns, level))
            seq, ts, tick = (seq + 1) & 0xFFFF, (ts + FRAME_SAMPLES) & 0xFFFFFFFF, tick + 1

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            except OSError:
                return
            at_ns = time.time_ns()
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    at_ns = sec * 1_000_000_000 + nsec
            if len(data) < 12 or data[0] >> 6 != 2:
                self.bad_packets += 1
                continue
            cc = data[0] & 0x0F
            self.received.append(ReceivedPacket(at_ns, struct.unpack("!H", data[2:4])[0], data[1] & 0x7F,
                                                data[12 + 4 * cc :]))  # fmt: skip


def _bind_even_udp() -> socket.socket:
    for _ in range(50):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        if sock.getsockname()[1] % 2 == 0:
            return sock
        sock.close()
    raise OSError("no even UDP port on 127.0.0.1")


# --- SIP ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SipMessage:
    """A parsed SIP message: start line, headers (lower-case full names, in order) and body."""

    start: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """The first value of a header, by any case of its full name."""
        return self.get(name.lower())

    @property
    def status(self) -> int | None:
        parts = self.start.split(" ", 2)
        return int(parts[1]) if self.start.startswith("SIP/2.0") and len(parts) > 1 else None

    @property
    def method(self) -> str | None:
        """The request's method (None for a response)."""
        return None if self.start.startswith("SIP/2.0") else self.start.split()[0]

    @property
    def cseq_method(self) -> str:
        return (self.get("cseq") or " ").split()[-1]


def parse_sip(data: bytes) -> SipMessage:
    """A SIP message from one datagram (headers folded onto one line are not expected from our server)."""
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    return SipMessage(lines[0], tuple(headers), body)


def sdp_audio_target(body: str) -> tuple[str, int]:
    """(address, port) of the first audio stream in an SDP body."""
    host, port = None, None
    for line in body.splitlines():
        if line.startswith("c=IN IP4 ") and host is None:
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
            break
    if host is None or port is None:
        raise SipError(f"no audio address in SDP answer: {body!r}")
    return host, port


def _uri_of(header: str) -> str:
    return header[header.index("<") + 1 : header.index(">")] if "<" in header else header.split(";")[0]


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_to: str  # the To header value from the 200 (with the callee's tag)
    target: str  # the callee's Contact URI
    remote_rtp: tuple[str, int]
    cseq: int = 1


class SipCaller:
    """Places calls to a SIP server on 127.0.0.1; requests the server sends us are answered 200."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.responses: queue.Queue[SipMessage] = queue.Queue()
        self.requests: list[SipMessage] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="sip-reader")
        self._reader.start()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2.0)
        self.sock.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data.strip():
                continue
            msg = parse_sip(data)
            if msg.status is not None:
                self.responses.put(msg)
            else:
                self.requests.append(msg)
                if not msg.start.startswith("ACK"):
                    self._send(self._reply(msg, "200 OK"), addr)

    def _send(self, text: str, addr: tuple[str, int] | None = None) -> None:
        self.sock.sendto(text.encode(), addr or self.server)

    def _reply(self, req: SipMessage, status: str) -> str:
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {v}" for v in req.all("via")]
        for name in ("from", "to", "call-id", "cseq"):
            lines.append(f"{name.title()}: {req.get(name) or ''}")
        return "\r\n".join([*lines, "Content-Length: 0", "", ""])

    def _request(self, method: str, uri: str, dialog: Dialog, to: str, extra: list[str], body: str) -> str:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:bench@127.0.0.1:{self.port}>;tag={dialog.local_tag}",
            f"To: {to}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} {method}",
            f"Contact: <sip:bench@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
            *extra,
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        return "\r\n".join(lines)

    def _transaction(self, text: str, call_id: str, method: str, timeout_s: float) -> SipMessage:
        """Send (retransmitting per RFC 3261 timer A until a response) and wait for the final response."""
        deadline = time.monotonic() + timeout_s
        resend, interval, provisional = time.monotonic(), 0.5, False
        while time.monotonic() < deadline:
            if not provisional and time.monotonic() >= resend:
                self._send(text)
                resend, interval = time.monotonic() + interval, min(interval * 2, 4.0)
            try:
                msg = self.responses.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.get("call-id") != call_id or not (msg.get("cseq") or "").endswith(method):
                continue
            assert msg.status is not None
            if msg.status >= 200:
                return msg
            provisional = True
        raise SipError(f"no final response to {method} within {timeout_s} s")

    def call(self, user: str, rtp_port: int, timeout_s: float = 15.0) -> Dialog:
        """INVITE sip:user@server with a PCMU offer; ACK the 200; the dialog (raises SipError otherwise)."""
        host, port = self.server
        dialog = Dialog(f"{uuid.uuid4().hex}@127.0.0.1", uuid.uuid4().hex[:10], "", "", ("", 0))
        uri = f"sip:{user}@{host}:{port}"
        sdp = (
            f"v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )
        invite = self._request("INVITE", uri, dialog, f"<{uri}>", ["Content-Type: application/sdp"], sdp)
        final = self._transaction(invite, dialog.call_id, "INVITE", timeout_s)
        if final.status != 200:
            raise SipError(f"INVITE answered {final.start}")
        dialog.remote_to = final.get("to") or f"<{uri}>"
        dialog.target = _uri_of(final.get("contact") or uri)
        dialog.remote_rtp = sdp_audio_target(final.body)
        self._send(self._request("ACK", dialog.target, dialog, dialog.remote_to, [], ""))
        return dialog

    def hangup(self, dialog: Dialog, timeout_s: float = 5.0) -> int | None:
        """BYE; the status of its final response (None if the server had already hung up or never answers)."""
        if any(r.start.startswith("BYE") and r.get("call-id") == dialog.call_id for r in self.requests):
            return None
        dialog.cseq += 1
        bye = self._request("BYE", dialog.target, dialog, dialog.remote_to, [], "")
        try:
            return self._transaction(bye, dialog.call_id, "BYE", timeout_s).status
        except SipError:
            return None
