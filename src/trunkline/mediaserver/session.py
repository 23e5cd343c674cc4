"""One RTP leg's media state (pure): symmetric-RTP source check, parse, receive stats, jitter buffer, DTMF,
inbound frame queue, outbound queue and packetizer. No sockets, no clock: the adapter passes datagrams and
`now` in and sends the bytes the pacer tick (tick.py) builds.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from trunkline.codecs.base import Codec
from trunkline.mediaserver.dtmf import DtmfDigit, TelephoneEventDecoder, TelephoneEventFrame, encode_digit
from trunkline.mediaserver.jitterbuffer import JitterBuffer, JitterStats
from trunkline.mediaserver.outbound import OutboundQueue
from trunkline.mediaserver.plc import Concealer
from trunkline.mediaserver.rtp import RtpPacket, RtpParseError, parse_rtp
from trunkline.mediaserver.rtpstats import ReceiveStats

Address = tuple[Any, ...]  # (host, port) or an IPv6 (host, port, flowinfo, scope_id)
RTP_HEADER = struct.Struct("!BBHII")
COMFORT_NOISE_PT = 13
FRAME_MS = 20
BATCH_CODECS = {"PCMU": 1, "PCMA": 2}  # codecs the tick decodes and encodes for all legs in one call
_PLC_HISTORY_FRAMES = 4  # > the concealer's history (3 longest pitch periods + a correlation window, ~64 ms)


@dataclass(frozen=True, slots=True)
class SessionCounters:
    """Per-leg datagram and frame counters (a snapshot)."""

    received: int  # RTP packets accepted from the remote
    audio_packets: int
    dtmf_packets: int
    comfort_noise: int
    malformed: int  # not RTP (RtpParseError): counted and dropped
    foreign_source: int  # from an address other than the remote: counted and dropped
    unknown_payload_type: int
    decode_errors: int
    sent: int  # packets the kernel accepted
    send_errors: int
    frames_audio: int  # inbound frames decoded from packets
    frames_concealed: int
    frames_silence: int
    inbound_dropped: int  # frames dropped (oldest first) because the consumer was slow
    outbound_underruns: int
    dtmf_sent: int
    rtcp_received: int
    errors: int  # exceptions in this leg's media path (bugs): counted, the leg goes on


class RtpSession:
    """Everything one leg needs between the socket and the pacer; every method is O(1) per packet or frame."""

    __slots__ = (
        "_may_learn",
        "batch_codec",
        "clock_rate_hz",
        "codec",
        "comfort_noise",
        "concealing",
        "decode_errors",
        "dtmf_decoder",
        "dtmf_in",
        "dtmf_packets",
        "dtmf_payload_type",
        "dtmf_sent",
        "dtmf_tx",
        "dtmf_tx_ts",
        "errors",
        "foreign_source",
        "frame_samples",
        "frames_audio",
        "frames_concealed",
        "frames_silence",
        "held",
        "inbound",
        "inbound_dropped",
        "inbound_max",
        "jitter",
        "last_received_at",
        "malformed",
        "marker_next",
        "outbound",
        "payload_type",
        "plc",
        "pt_marker",
        "received",
        "recent",
        "remote",
        "rtcp_received",
        "rx_stats",
        "sample_rate_hz",
        "send_errors",
        "sent",
        "seq",
        "silence_payload",
        "silence_pcm",
        "ssrc",
        "talking",
        "ts_base",
        "ts_step",
        "unknown_payload_type",
    )

    def __init__(
        self,
        codec: Codec,
        payload_type: int,
        *,
        remote: Address | None = None,
        learn_remote: bool = False,
        dtmf_payload_type: int | None = None,
        jitter: JitterBuffer | None = None,
        inbound_max_frames: int = 50,
        outbound_max_s: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.codec = codec
        self.payload_type = payload_type
        self.pt_marker = payload_type | 0x80
        self.clock_rate_hz = codec.rtp_clock_rate_hz
        self.sample_rate_hz = codec.sample_rate_hz
        self.frame_samples = codec.sample_rate_hz * FRAME_MS // 1000
        self.ts_step = codec.rtp_clock_rate_hz * FRAME_MS // 1000
        name = codec.name.upper()
        self.batch_codec = BATCH_CODECS.get(name, 0)  # G.711: decoded/encoded for all legs at once
        self.silence_pcm = np.zeros(self.frame_samples, dtype=np.int16)
        self.silence_pcm.flags.writeable = False
        self.silence_payload = codec.encode(self.silence_pcm)
        self.remote = remote
        self._may_learn = learn_remote
        self.dtmf_payload_type = dtmf_payload_type
        self.dtmf_decoder = TelephoneEventDecoder(clock_rate_hz=self.clock_rate_hz)
        self.rx_stats = ReceiveStats(self.clock_rate_hz)
        self.jitter = jitter or JitterBuffer(self.clock_rate_hz, FRAME_MS)
        self.plc = Concealer(self.sample_rate_hz, self.frame_samples)
        # The concealer only needs history when a loss starts: keep the last real frames (references, no
        # copies) and feed them in then, instead of paying for good() on every frame (see good_frame()).
        self.recent: deque[np.ndarray] = deque(maxlen=_PLC_HISTORY_FRAMES)
        self.concealing = False
        encoder = codec.encode if self.batch_codec else None  # G.711: encode each chunk once as queued
        self.outbound = OutboundQueue(self.sample_rate_hz, self.frame_samples, outbound_max_s, encoder)
        self.inbound: deque[np.ndarray] = deque(maxlen=inbound_max_frames)
        self.inbound_max = inbound_max_frames
        self.dtmf_in: list[DtmfDigit] = []
        self.dtmf_tx: deque[TelephoneEventFrame] = deque()
        self.dtmf_tx_ts = 0
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)
        self.ts_base = rng.getrandbits(32)
        self.talking = False
        self.marker_next = True  # the first packet of the stream starts a talkspurt
        self.held = False
        self.last_received_at: float | None = None
        self.received = self.dtmf_packets = self.comfort_noise = 0
        self.malformed = self.foreign_source = self.unknown_payload_type = self.decode_errors = 0
        self.sent = self.send_errors = self.dtmf_sent = self.rtcp_received = self.errors = 0
        self.frames_audio = self.frames_concealed = self.frames_silence = self.inbound_dropped = 0

    # ------------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the socket: drop (and count) foreign or malformed ones, route the rest."""
        if addr != self.remote and not self._accept_source(addr):
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self.malformed += 1
            return
        if self._may_learn:  # the first valid packet fixes the remote (NAT); later strangers are dropped
            self._may_learn = False
            self.remote = addr
        self.received += 1
        self.last_received_at = now
        self.rx_stats.update(packet.sequence_number, packet.timestamp, now)
        if packet.payload_type == self.payload_type:
            self.jitter.push(packet, now)
        else:
            self._other_payload(packet, now)

    def _accept_source(self, addr: Address) -> bool:
        """False (and counted) for a stranger; IPv6 addresses come back as 4-tuples: compare host and port."""
        remote = self.remote
        if remote is not None and len(addr) > 2 and addr[0] == remote[0] and addr[1] == remote[1]:
            return True
        if self._may_learn:
            return True
        self.foreign_source += 1
        return False

    def _other_payload(self, packet: RtpPacket, now: float) -> None:
        pt = packet.payload_type
        if pt == self.dtmf_payload_type:
            self.dtmf_packets += 1
            digits = self.dtmf_decoder.push(packet, now)
            if digits:
                self.dtmf_in.extend(digits)
        elif pt == COMFORT_NOISE_PT:
            self.comfort_noise += 1
        else:
            self.unknown_payload_type += 1

    def poll_dtmf(self, now: float) -> None:
        """Report a DTMF event whose end packets were all lost, once its timeout passes."""
        deadline = self.dtmf_decoder.next_deadline()
        if deadline is not None and now >= deadline:
            self.dtmf_in.extend(self.dtmf_decoder.poll(now))

    def good_frame(self, pcm: np.ndarray) -> None:
        """A decoded frame: remember it for concealment; right after a loss the concealer cross-fades it."""
        if self.concealing:
            self.concealing = False
            pcm = self.plc.good(pcm)
        else:
            self.recent.append(pcm)
        self.frames_audio += 1
        inbound = self.inbound
        if len(inbound) == self.inbound_max:
            self.inbound_dropped += 1
        inbound.append(pcm)

    def concealed_frame(self) -> None:
        """A missing frame: prime the concealer with the recent real frames once, then synthesise."""
        plc = self.plc
        if not self.concealing:
            self.concealing = True
            for pcm in self.recent:
                plc.good(pcm)
            self.recent.clear()
        self.frames_concealed += 1
        self.deliver(plc.conceal())

    def silence_frame(self) -> None:
        """Nothing to play (not started, a talkspurt gap, a long loss): deliver silence."""
        self.frames_silence += 1
        self.deliver(self.silence_pcm)

    def deliver(self, pcm: np.ndarray) -> None:
        """Queue one inbound frame for the consumer, dropping the oldest if it is not keeping up."""
        inbound = self.inbound
        if len(inbound) == self.inbound_max:
            self.inbound_dropped += 1
        inbound.append(pcm)

    # ------------------------------------------------------------------ send

    def set_remote(self, remote: Address | None, learn: bool = False) -> None:
        """Where to send and whom to accept from (re-INVITE); `learn` re-arms learning from a first packet."""
        self.remote = remote
        self._may_learn = learn

    def hold(self) -> None:
        """Stop sending RTP altogether (peer's a=sendonly/inactive, or our hold), keeping the position."""
        self.held = True
        self.outbound.pause()

    def unhold(self) -> None:
        """Resume sending; the next packet carries the marker bit."""
        if self.held:
            self.held = False
            self.marker_next = True
            self.outbound.resume()

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Queue an RFC 4733 key press; it replaces audio on the wire for its duration."""
        if self.dtmf_payload_type is None:
            raise ValueError("no telephone-event payload type was negotiated for this leg")
        self.dtmf_tx.extend(encode_digit(digit, duration_ms, self.clock_rate_hz, FRAME_MS))

    def packet(self, payload: bytes, marker: bool, timestamp: int, payload_type: int) -> bytes:
        """The next RTP packet of our stream (sequence numbers continue across silence, DTMF and hold)."""
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        second = payload_type | 0x80 if marker else payload_type
        return RTP_HEADER.pack(0x80, second, seq, timestamp & 0xFFFFFFFF, self.ssrc) + payload

    # ------------------------------------------------------------------ stats

    def counters(self) -> SessionCounters:
        """A snapshot of the datagram and frame counters."""
        return SessionCounters(
            received=self.received,
            audio_packets=self.received - self.dtmf_packets - self.comfort_noise - self.unknown_payload_type,
            dtmf_packets=self.dtmf_packets,
            comfort_noise=self.comfort_noise,
            malformed=self.malformed,
            foreign_source=self.foreign_source,
            unknown_payload_type=self.unknown_payload_type,
            decode_errors=self.decode_errors,
            sent=self.sent,
            send_errors=self.send_errors,
            frames_audio=self.frames_audio,
            frames_concealed=self.frames_concealed,
            frames_silence=self.frames_silence,
            inbound_dropped=self.inbound_dropped,
            outbound_underruns=self.outbound.underruns,
            dtmf_sent=self.dtmf_sent,
            rtcp_received=self.rtcp_received,
            errors=self.errors,
        )

    def jitter_stats(self) -> JitterStats:
        """The jitter buffer's counters and delays."""
        return self.jitter.stats
