"""The pacer tick (pure): for every leg, build one outbound packet and play out one inbound frame.

CPU is the constraint (200 legs in one process), so the loop over legs is written flat (few calls, few
attribute loads) and numpy work is batched: all G.711 payloads of a tick are decoded by one table lookup over
their concatenation, and outbound G.711 audio was encoded chunk by chunk when it was queued, so sending is a
bytes slice. Other codecs (G.722 is stateful, L16 is rare) go frame by frame, and so do packets longer or
shorter than 20 ms: the leg's FIFO pops as many as it takes to deliver exactly one 20 ms frame a tick.
After a loss the first real frame is delivered cross-faded with the concealment (RtpSession.good_frame).

Idle legs keep sending encoded silence, as most production gear does: it keeps NAT bindings and the peer's
inactivity timers alive, and the peer's jitter buffer never has to restart. A held leg sends nothing.
"""

from __future__ import annotations

from typing import Final

from trunkline.codecs.g711 import alaw_decode, ulaw_decode
from trunkline.logs import get_logger
from trunkline.mediaserver.jitterbuffer import FrameKind
from trunkline.mediaserver.rtp import RTP_HEADER
from trunkline.mediaserver.session import RtpSession

_SILENCE: Final = FrameKind.SILENCE
_CONCEALED: Final = FrameKind.CONCEALED
_DECODERS = (None, ulaw_decode, alaw_decode)  # indexed by RtpSession.batch_codec
_pack = RTP_HEADER.pack
log = get_logger("trunkline.media")


def run_tick(sessions: list[RtpSession], now: float, tick_index: int) -> list[bytes | None]:
    """One 20 ms step for all legs: the packet each leg must send now (None: send nothing), then playout of
    one inbound frame per leg. The engine calls the two halves itself, reading its sockets in between."""
    out = outbound_packets(sessions, tick_index)
    play_inbound(sessions, now)
    return out


def outbound_packets(sessions: list[RtpSession], tick_index: int) -> list[bytes | None]:
    """Build every leg's packet for this tick. Cheap (a slice and a header per leg), so the engine sends
    these first and each leg's packet leaves at the same offset into every tick: steady spacing."""
    out: list[bytes | None] = [None] * len(sessions)
    for i, s in enumerate(sessions):
        if s.held or s.remote is None:
            continue
        try:
            ts = (s.ts_base + tick_index * s.ts_step) & 0xFFFFFFFF
            if s.dtmf_tx:
                out[i] = _dtmf_packet(s, ts)
                continue
            if s.batch_codec:
                payload = s.outbound.next_payload()
            else:
                pcm = s.outbound.next_frame()
                payload = None if pcm is None else s.codec.encode(pcm)
            seq = s.seq
            s.seq = (seq + 1) & 0xFFFF
            if payload is None:  # idle: comfort silence; a marker only on the stream's very first packet
                second = s.idle_second
                # stateful codecs (G.722) keep their encoder state in step with what the peer decodes
                payload = s.silence_payload if s.batch_codec else s.codec.encode(s.silence_pcm)
                s.idle_second = s.payload_type
                s.audio_second = s.pt_marker  # the next audio starts a talkspurt
            else:
                second = s.audio_second
                if second != s.payload_type:  # this packet starts a talkspurt
                    s.audio_second = s.idle_second = s.payload_type
            out[i] = _pack(0x80, second, seq, ts, s.ssrc) + payload
        except Exception:  # a bug must cost one leg one frame, not every leg the tick
            _leg_failed(s)
    return out


def play_inbound(sessions: list[RtpSession], now: float) -> None:
    """Pop one frame per leg from its jitter buffer (or FIFO) and deliver it; G.711 decoded in one batch."""
    batch: tuple[list[RtpSession], ...] = ([], [], [])  # per batch codec: the legs with a payload...
    payloads: tuple[list[bytes], ...] = ([], [], [])  # ...and their payloads
    for s in sessions:
        try:
            if s.reframing:  # packets other than 20 ms: the leg's FIFO cuts exact frames
                s.reframe(now)
            else:
                got = s.jitter.pop_payload(now)
                if got is _SILENCE:
                    s.silence_frame()
                elif got is _CONCEALED:
                    s.concealed_frame()
                elif len(got) == s.batch_bytes:  # one G.711 frame: decoded below with all the others
                    batch[s.batch_codec].append(s)
                    payloads[s.batch_codec].append(got)
                else:
                    s.audio_payload(got, now)
            if s.dtmf_packets:
                s.poll_dtmf(now)
        except Exception:  # a bug must cost one leg one frame, not every leg the tick
            _leg_failed(s)
    for code in (1, 2):
        if batch[code]:
            try:
                _decode_batch(code, batch[code], payloads[code])
            except Exception:
                for s in batch[code]:
                    _leg_failed(s)


def _leg_failed(s: RtpSession) -> None:
    s.errors += 1
    if s.errors == 1:  # once per leg: the counter tells the rest
        log.exception("media.leg_tick_failed", ssrc=s.ssrc)


def _decode_batch(code: int, legs: list[RtpSession], payloads: list[bytes]) -> None:
    """Decode one tick's G.711 payloads (all one frame long) in one call; each leg gets a row view."""
    decode = _DECODERS[code]
    assert decode is not None
    pcm = decode(b"".join(payloads))
    pcm.flags.writeable = False  # consumers get views of this array
    for s, frame in zip(legs, pcm.reshape(len(legs), -1), strict=True):  # row views, made in C
        if s.concealing:
            s.good_frame(frame)
            continue
        # RtpSession.good_frame(), inlined
        s.recent.append(frame)
        s.frames_audio += 1
        inbound = s.inbound
        if len(inbound) == s.inbound_max:
            s.inbound_dropped += 1
        inbound.append(frame)


def _dtmf_packet(s: RtpSession, ts: int) -> bytes:
    event = s.dtmf_tx.popleft()
    if event.marker:
        s.dtmf_tx_ts = ts  # every packet of one event carries the event's start timestamp
    if event.end and (not s.dtmf_tx or s.dtmf_tx[0].marker):
        s.dtmf_sent += 1  # the last end packet of a key press
    s.audio_second = s.pt_marker  # audio after the event starts a new talkspurt
    pt = s.dtmf_payload_type
    assert pt is not None
    return s.packet(event.payload, event.marker, s.dtmf_tx_ts + event.timestamp_offset, pt)
