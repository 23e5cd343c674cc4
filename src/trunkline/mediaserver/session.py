"""One RTP leg's media state (pure): symmetric-RTP source check, parse, receive stats, jitter buffer, DTMF,
inbound frame queue, outbound queue and packetizer. No sockets, no clock: the adapter passes datagrams and
`now` in and sends the bytes the pacer tick (tick.py) builds.

Per packet only the unavoidable happens: an audio packet with a plain 12-octet header is unpacked here (no
RtpPacket is built) and goes straight to the jitter buffer; its receive statistics are logged and folded in
by `fold_stats()`. Inbound frames are always 20 ms: packets of other durations go through a FIFO.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from trunkline.codecs.base import Codec, CodecError
from trunkline.codecs.reframe import Reframer
from trunkline.mediaserver.dtmf import DtmfDigit, TelephoneEventDecoder, TelephoneEventFrame, encode_digit
from trunkline.mediaserver.jitterbuffer import FrameKind, JitterBuffer, JitterStats
from trunkline.mediaserver.outbound import OutboundQueue
from trunkline.mediaserver.plc import Concealer
from trunkline.mediaserver.rtp import PLAIN_FIRST_OCTET, RTP_HEADER, RtpPacket, RtpParseError, parse_rtp
from trunkline.mediaserver.rtpstats import ReceiveStats

Address = tuple[Any, ...]  # (host, port) or an IPv6 (host, port, flowinfo, scope_id)
COMFORT_NOISE_PT = 13
FRAME_MS = 20
BATCH_CODECS = {"PCMU": 1, "PCMA": 2}  # codecs the tick decodes and encodes for all legs in one call
# decoded packets kept for the concealer: > its history (3 longest pitch periods + a correlation window,
# ~64 ms) even with 10 ms packets
_PLC_HISTORY_PACKETS = 8
_unpack_header = RTP_HEADER.unpack_from
_SILENCE: Final = FrameKind.SILENCE
_CONCEALED: Final = FrameKind.CONCEALED


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
    frames_audio: int  # packets decoded into inbound audio (one 20 ms frame each with 20 ms packets)
    frames_concealed: int  # 20 ms frames of packet-loss concealment
    frames_silence: int  # 20 ms frames of silence (not started, talkspurt gaps, long losses)
    inbound_dropped: int  # frames dropped (oldest first) because the consumer was slow
    outbound_underruns: int
    dtmf_sent: int
    rtcp_received: int
    errors: int  # exceptions in this leg's media path (bugs): counted, the leg goes on


class RtpSession:
    """Everything one leg needs between the socket and the pacer; every method is O(1) per packet or frame."""

    __slots__ = (
        "_last_received_at",
        "_may_learn",
        "_received",
        "_rx_stats",
        "audio_second",
        "batch_bytes",
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
        "idle_second",
        "inbound",
        "inbound_dropped",
        "inbound_max",
        "jitter",
        "malformed",
        "outbound",
        "outbound_max_s",
        "payload_type",
        "plc",
        "pt_marker",
        "ready",
        "recent",
        "reframer",
        "reframing",
        "remote",
        "rtcp_received",
        "rx_log",
        "sample_rate_hz",
        "send_errors",
        "sent",
        "seq",
        "silence_payload",
        "silence_pcm",
        "ssrc",
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
        self.remote = remote
        self._may_learn = learn_remote
        self.outbound_max_s = outbound_max_s
        self.inbound: deque[np.ndarray] = deque(maxlen=inbound_max_frames)
        self.inbound_max = inbound_max_frames
        self.dtmf_in: list[DtmfDigit] = []
        self.dtmf_tx: deque[TelephoneEventFrame] = deque()
        self.dtmf_tx_ts = 0
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)
        self.ts_base = rng.getrandbits(32)
        self.held = False
        self._last_received_at: float | None = None
        self._received = self.dtmf_packets = self.comfort_noise = 0
        self.malformed = self.foreign_source = self.unknown_payload_type = self.decode_errors = 0
        self.sent = self.send_errors = self.dtmf_sent = self.rtcp_received = self.errors = 0
        self.frames_audio = self.frames_concealed = self.frames_silence = self.inbound_dropped = 0
        self._use_codec(codec, payload_type, dtmf_payload_type, jitter)

    def _use_codec(
        self, codec: Codec, payload_type: int, dtmf_payload_type: int | None, jitter: JitterBuffer | None
    ) -> None:
        """Everything that depends on the codec, its payload types and its rates."""
        self.codec = codec
        self.payload_type = payload_type
        self.pt_marker = payload_type | 0x80
        self.clock_rate_hz = codec.rtp_clock_rate_hz
        self.sample_rate_hz = codec.sample_rate_hz
        self.frame_samples = codec.sample_rate_hz * FRAME_MS // 1000
        self.ts_step = codec.rtp_clock_rate_hz * FRAME_MS // 1000
        name = codec.name.upper()
        self.batch_codec = BATCH_CODECS.get(name, 0)  # G.711: decoded/encoded for all legs at once
        self.batch_bytes = self.frame_samples if self.batch_codec else -1  # a payload the tick batches
        self.silence_pcm = np.zeros(self.frame_samples, dtype=np.int16)
        self.silence_pcm.flags.writeable = False
        self.silence_payload = codec.encode(self.silence_pcm)
        self.dtmf_payload_type = dtmf_payload_type
        self.dtmf_decoder = TelephoneEventDecoder(clock_rate_hz=self.clock_rate_hz)
        self._rx_stats = ReceiveStats(self.clock_rate_hz)
        # (seq, timestamp, arrival) of every valid packet not yet folded into the statistics: an append is
        # the cheapest per-packet step; fold_stats() (the engine, once a second; any read) does the rest
        self.rx_log: list[tuple[int, int, float]] = []
        self.jitter = jitter or JitterBuffer(self.clock_rate_hz, FRAME_MS)
        self.plc = Concealer(self.sample_rate_hz, self.frame_samples)
        # The concealer only needs history when a loss starts: keep the last real frames (references, no
        # copies) and feed them in then, instead of paying for good() on every frame (see _conceal()).
        self.recent: deque[np.ndarray] = deque(maxlen=_PLC_HISTORY_PACKETS)
        self.concealing = False
        # packets of other durations than 20 ms go through a FIFO that cuts exact 20 ms frames (reframe())
        self.reframer = Reframer(self.frame_samples)
        self.ready: deque[np.ndarray] = deque()
        self.reframing = False
        encoder = codec.encode if self.batch_codec else None  # G.711: encode each chunk once as queued
        self.outbound = OutboundQueue(self.sample_rate_hz, self.frame_samples, self.outbound_max_s, encoder)
        # the second header octet of our next audio / idle packet: with the marker bit at a talkspurt's
        # start, and on the stream's first packet (also after hold)
        self.audio_second = self.idle_second = self.pt_marker

    def set_codec(
        self,
        codec: Codec,
        payload_type: int,
        dtmf_payload_type: int | None = None,
        jitter: JitterBuffer | None = None,
    ) -> None:
        """Switch codec before any media flowed: our offer listed several codecs and the answer chose one.
        The silence frames played out meanwhile are dropped. Raises RuntimeError once media has flowed."""
        if self.received or self.sent or self.outbound.queued_samples or self.held:
            raise RuntimeError("a leg's codec can only change before media flows")
        self.inbound.clear()
        self._use_codec(codec, payload_type, dtmf_payload_type, jitter)

    # ------------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the socket: drop (and count) foreign or malformed ones, route the rest."""
        if addr != self.remote and not self._accept_source(addr):
            return
        try:
            first, second, seq, ts, ssrc = _unpack_header(data)
        except struct.error:  # shorter than the fixed header
            self.malformed += 1
            return
        if first != PLAIN_FIRST_OCTET or second | 0x80 != self.pt_marker:
            self._receive_other(data, addr, now)
            return
        # the common case, parsed here exactly as parse_rtp() would: audio with a plain 12-octet header
        if self._may_learn:
            self._learn(addr)
        self.rx_log.append((seq, ts, now))
        self.jitter.push_fields(ssrc, seq, ts, data[12:], second > 0x7F, now)

    def _receive_other(self, data: bytes, addr: Address, now: float) -> None:
        """Any other datagram: a full parse, then DTMF, comfort noise or (with an odd header) audio."""
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self.malformed += 1
            return
        if self._may_learn:
            self._learn(addr)
        self.rx_log.append((packet.sequence_number, packet.timestamp, now))
        if packet.payload_type == self.payload_type:
            self.jitter.push(packet, now)
        else:
            self._other_payload(packet, now)

    def _learn(self, addr: Address) -> None:
        """The first valid packet fixes the remote (NAT); later strangers are dropped."""
        self._may_learn = False
        self.remote = addr

    @property
    def received(self) -> int:
        """Valid RTP packets accepted from the remote, of any payload type."""
        return self._received + len(self.rx_log)

    @property
    def last_received_at(self) -> float | None:
        """When the last valid RTP packet arrived (for an inactivity watchdog)."""
        log = self.rx_log
        return log[-1][2] if log else self._last_received_at

    @property
    def rx_stats(self) -> ReceiveStats:
        """RFC 3550 receive statistics, up to date."""
        self.fold_stats()
        return self._rx_stats

    def fold_stats(self) -> None:
        """Fold the per-packet log into the receive statistics; call now and then (once a second) to keep the
        log short."""
        log = self.rx_log
        if log:
            self._rx_stats.update_all(log)
            self._received += len(log)
            self._last_received_at = log[-1][2]
            log.clear()

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

    # ------------------------------------------------------------------ playout (called by the pacer tick)

    def good_frame(self, pcm: np.ndarray) -> None:
        """A decoded 20 ms frame: deliver it; remember it for concealment, or cross-fade it after a loss."""
        if self.concealing:
            pcm = self._end_concealment(pcm)
        else:
            self.recent.append(pcm)
        self.frames_audio += 1
        inbound = self.inbound
        if len(inbound) == self.inbound_max:
            self.inbound_dropped += 1
        inbound.append(pcm)

    def audio_payload(self, payload: bytes, now: float) -> None:
        """Decode one AUDIO payload (codecs the tick does not batch, or an odd size) and play it out."""
        pcm = self._decode(payload)
        if pcm is None:
            self.concealed_frame()
        elif pcm.size == self.frame_samples:
            self.good_frame(pcm)
        else:  # not a 20 ms packet: from now on the FIFO cuts exact frames
            self.ready.extend(self.reframer.push(self._audio(pcm)))
            self.reframe(now)

    def concealed_frame(self) -> None:
        """A missing frame: deliver what the concealer makes of it."""
        self.deliver(self._conceal())

    def silence_frame(self) -> None:
        """Nothing to play (not started, a talkspurt gap, a long loss): deliver silence."""
        self.frames_silence += 1
        self.deliver(self.silence_pcm)

    def reframe(self, now: float) -> None:
        """Packets other than 20 ms: pop while the FIFO holds less than a frame, then deliver one 20 ms frame
        (`reframing` stays True while the FIFO holds audio)."""
        ready = self.ready
        while not ready:
            got = self.jitter.pop_payload(now)
            if got is _SILENCE:
                self.frames_silence += 1
                pcm = self.silence_pcm
            elif got is _CONCEALED:
                pcm = self._conceal()
            else:
                decoded = self._decode(got)
                pcm = self._conceal() if decoded is None else self._audio(decoded)
            ready.extend(self.reframer.push(pcm))
        self.deliver(ready.popleft())
        self.reframing = bool(ready) or self.reframer.pending_samples > 0

    def deliver(self, pcm: np.ndarray) -> None:
        """Queue one inbound frame for the consumer, dropping the oldest if it is not keeping up."""
        inbound = self.inbound
        if len(inbound) == self.inbound_max:
            self.inbound_dropped += 1
        inbound.append(pcm)

    def _decode(self, payload: bytes) -> np.ndarray | None:
        try:
            return self.codec.decode(payload)
        except CodecError:
            self.decode_errors += 1
            return None

    def _audio(self, pcm: np.ndarray) -> np.ndarray:
        """good_frame() without delivering: the (cross-faded) audio of one decoded packet."""
        if self.concealing:
            pcm = self._end_concealment(pcm)
        else:
            self.recent.append(pcm)
        self.frames_audio += 1
        return pcm

    def _conceal(self) -> np.ndarray:
        """One concealed frame; the concealer gets the recent real audio as history when a loss starts (it
        only needs history then, so good() is not paid for on every frame)."""
        plc = self.plc
        if not self.concealing:
            self.concealing = True
            for pcm in self.recent:
                plc.good(pcm)
            self.recent.clear()
        self.frames_concealed += 1
        return plc.conceal()

    def _end_concealment(self, pcm: np.ndarray) -> np.ndarray:
        """The first real audio after a loss, overlap-added with the continued synthetic signal (what
        plays)."""
        self.concealing = False
        return self.plc.good(pcm)  # the concealer has it as history now: not for `recent`

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
            self.audio_second = self.idle_second = self.pt_marker
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
