"""A carrier written with plain UDP sockets on 127.0.0.1, for SIP tests that must look at every byte: it sends
and answers SIP messages as text and exchanges RTP with a real socket (blocking; run it in a thread).

Only what the tests need: one dialog at a time, no retransmissions of our own (loopback does not lose),
compact header names understood when reading.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import time
from collections.abc import Callable

import numpy as np
from bench.sip_caller import SipMessage, parse_sip

from trunkline.codecs.registry import create_codec

RTP_PACK = struct.Struct("!BBHII")


def answer_sdp(rtp_port: int, pts: str, rtpmaps: tuple[str, ...]) -> str:
    """The caller's SDP answer (in the ACK) for a stream at 127.0.0.1:rtp_port."""
    lines = ["v=0", "o=carrier 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"m=audio {rtp_port} RTP/AVP {pts}", *rtpmaps, "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def media_line(sdp: str) -> tuple[int, list[int]]:
    """Port and payload types of the first audio m= line."""
    match = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+?)\r?$", sdp, re.M)
    assert match, sdp
    return int(match.group(1)), [int(pt) for pt in match.group(2).split()]


class RawCarrier:
    """The caller side of one call: INVITE (without SDP), ACK (with our answer), RTP, BYE; and replies."""

    def __init__(self, server_port: int, did: str = "+15550100") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)
        self.did = did
        self.call_id = secrets.token_hex(8) + "@carrier"
        self.from_tag = secrets.token_hex(4)
        self.to = f"<sip:{did}@127.0.0.1:{server_port}>"
        self.remote_target = f"sip:{did}@127.0.0.1:{server_port}"
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(
        self, method: str, cseq: int, uri: str, body: str = "", ctype: str = "", extra: tuple[str, ...] = ()
    ) -> None:
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:+15551234567@127.0.0.1:{self.port}>;tag={self.from_tag}",
            f"To: {self.to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:carrier@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
            *extra,
        ]
        if body:
            lines.append(f"Content-Type: {ctype or 'application/sdp'}")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.server)

    def expect(self, wanted: Callable[[SipMessage], bool], timeout_s: float = 10.0) -> SipMessage:
        """The next message `wanted` accepts; others (100, 180, retransmitted 200s) are skipped."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            msg = parse_sip(data)
            if wanted(msg):
                return msg
        raise AssertionError("no such SIP message before the timeout")

    def invite_without_sdp(self) -> SipMessage:
        """INVITE with no body; returns the 200 OK (our offer in its body) and learns the dialog."""
        return self.invite()

    def send_invite(self, sdp: str = "") -> None:
        """INVITE (an early offer when `sdp` is given), without waiting for the answer."""
        self.cseq = 1
        self._request("INVITE", 1, self.remote_target, sdp)

    def final_answer(self) -> SipMessage:
        """The final response to our INVITE."""
        return self.expect(lambda m: m.status is not None and m.status >= 200 and m.cseq_method == "INVITE")

    def invite(self, sdp: str = "") -> SipMessage:
        """INVITE (an early offer when `sdp` is given); returns the 200 OK and learns the dialog."""
        self.send_invite(sdp)
        ok = self.final_answer()
        assert ok.status == 200, ok.start
        self.to = ok.header("to") or self.to
        contact = re.search(r"<([^>]+)>", ok.header("contact") or "")
        assert contact, ok.headers
        self.remote_target = contact.group(1)
        return ok

    def ack(self, sdp: str | None) -> None:
        self._request("ACK", 1, self.remote_target, sdp or "")

    def bye(self) -> SipMessage:
        self.cseq += 1
        self._request("BYE", self.cseq, self.remote_target)
        return self.expect(lambda m: m.cseq_method == "BYE" and m.status is not None)

    def notify_refer(self, status_line: str, state: str) -> SipMessage:
        """In-dialog NOTIFY with a REFER's progress (RFC 3515 message/sipfrag); returns our final answer."""
        self.cseq += 1
        extra = ("Event: refer", f"Subscription-State: {state}")
        self._request("NOTIFY", self.cseq, self.remote_target, f"{status_line}\r\n", "message/sipfrag", extra)
        return self.expect(lambda m: m.cseq_method == "NOTIFY" and m.status is not None and m.status >= 200)

    def reply(self, request: SipMessage, code: int, reason: str) -> None:
        lines = [f"SIP/2.0 {code} {reason}"]
        lines += [f"{name}: {request.header(name)}" for name in ("via", "from", "to", "call-id", "cseq")]
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)


class RtpPeer:
    """The caller's RTP socket: sends one codec's packets every 20 ms and keeps every packet it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def close(self) -> None:
        self.sock.close()

    def exchange(
        self, target: tuple[str, int], codec_name: str, pt: int, pcm: np.ndarray, tail_s: float
    ) -> None:
        """Send `pcm` (at the codec's sample rate) in 20 ms packets paced in real time, then keep
        listening for `tail_s`; everything that arrives meanwhile is kept in `received`."""
        codec = create_codec(codec_name, 8000)
        step = codec.sample_rate_hz // 50
        seq, ts, start = 1000, 5000, time.monotonic()
        frames = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
        for n, frame in enumerate(frames):
            header = RTP_PACK.pack(0x80, pt | (0x80 if n == 0 else 0), seq + n, ts + n * 160, 0x1234)
            self.sock.sendto(header + codec.encode(frame), target)
            self._drain_until(start + (n + 1) * 0.02)
        self._drain_until(time.monotonic() + tail_s)

    def _drain_until(self, deadline: float) -> None:
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recvfrom(4096))
            except TimeoutError:
                return
        self.sock.setblocking(False)
        while True:
            try:
                self.received.append(self.sock.recvfrom(4096))
            except BlockingIOError:
                return

    def decoded(self, codec_name: str, source: tuple[str, int]) -> tuple[set[int], np.ndarray]:
        """Payload types seen from `source`, and its audio packets decoded in arrival order."""
        codec = create_codec(codec_name, 8000)
        pts, audio = set(), []
        for data, addr in self.received:
            if addr != source or len(data) < 12:
                continue
            pt = data[1] & 0x7F
            pts.add(pt)
            audio.append(codec.decode(data[12:]))
        return pts, np.concatenate(audio) if audio else np.zeros(0, dtype=np.int16)
