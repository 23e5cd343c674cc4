"""Where an RTP stream's packets sit on one continuous timeline (pure): the jitter buffer's stream half.

Sequence numbers are extended past their 16-bit wrap and timestamps unwrapped past 2^32, counting from the
first packet's timestamp (small numbers keep the per-packet arithmetic cheap). An SSRC change, a sequence
restart, or a timestamp jump the arrival clock does not confirm continues the timeline after everything
placed so far, at a position the subclass derives from the arrival time, so positions never go backwards.
The packet duration (ptime) is learnt from the timestamp spacing of consecutive packets.
"""

from __future__ import annotations

from trunkline.mediaserver.rtp import seq_delta, ts_delta

MAX_DROPOUT = 3000  # RFC 3550 A.1: a bigger forward sequence jump means the sender restarted
MAX_MISORDER = 100


class StreamTimeline:
    """Base class of JitterBuffer. `_place()` maps one packet; subclasses say where a packet without a usable
    timestamp relation goes (`_arrival_position()`) and hear about a new stream (`_stream_changed()`).

    The subclass's per-packet fast path reads and advances `_max_*` itself for the next in-sequence packet.
    """

    __slots__ = (
        "_clock",
        "_frame",
        "_max_arrival",
        "_max_mapped",
        "_max_raw",
        "_max_seq",
        "_pkt_candidate",
        "_pkt_samples",
        "_prev_seq",
        "_prev_ssrc",
        "_resync_s",
        "_resyncs",
        "_seq_floor",
        "_ssrc",
        "_ssrc_changes",
        "_ts_base",
    )

    def __init__(self, clock_rate_hz: int, frame_samples: int, resync_s: float) -> None:
        self._clock = clock_rate_hz
        self._frame = frame_samples
        self._resync_s = resync_s  # a timestamp that disagrees with the arrival clock by more: a jump
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        self._ssrc: int | None = None
        self._prev_ssrc: int | None = None
        self._prev_seq = 0  # highest sequence number seen from the previous SSRC
        self._seq_floor: int | None = None  # back on an SSRC we had left: its packets up to here were seen
        self._max_seq = 0  # extended sequence number of the newest packet
        self._max_raw = 0  # its RTP timestamp
        self._max_mapped = 0  # its position
        self._max_arrival = 0.0
        self._ts_base = 0  # RTP timestamp of position 0
        self._pkt_samples = self._frame
        self._pkt_candidate = 0
        self._ssrc_changes = self._resyncs = 0

    @property
    def source_ssrc(self) -> int | None:
        """The SSRC of the stream being played (None before its first packet); RTCP reports on it."""
        return self._ssrc

    def _arrival_position(self, arrival: float) -> int:
        """Position for a packet whose timestamp cannot be related to the timeline (after `_max_mapped`)."""
        raise NotImplementedError

    def _stream_changed(self) -> None:
        """A new SSRC took over."""

    def _place(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> tuple[int, int, bool] | None:
        """(position, extended sequence number, newest so far) of one packet, or None to discard it: a
        straggler of an SSRC just left, or an older packet whose timestamp does not fit."""
        if ssrc != self._ssrc and not self._switch_ssrc(ssrc, seq, timestamp, arrival):
            return None
        d_seq = seq_delta(seq, self._max_seq & 0xFFFF)
        mapped = self._max_mapped + ts_delta(timestamp, self._max_raw)
        if d_seq > 0 or d_seq < -MAX_MISORDER:
            return self._advance(timestamp, d_seq, mapped, arrival), self._max_seq, True
        drift = (mapped - self._max_mapped) / self._clock - (arrival - self._max_arrival)
        floor = self._seq_floor
        if d_seq < 0 and (
            mapped > self._max_mapped
            or abs(drift) > self._resync_s  # its timestamp does not fit: from before a resync
            or (floor is not None and seq_delta(seq, floor) <= 0)
        ):
            return None
        return mapped, self._max_seq + d_seq, False

    def _switch_ssrc(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> bool:
        """Follow a new SSRC (its timestamps are mapped onto our timeline). False for stragglers: packets of
        the SSRC just left that are not newer than the last one seen from it."""
        if self._ssrc is None:
            self._ts_base = timestamp
            self._max_mapped = 0
        elif ssrc == self._prev_ssrc and seq_delta(seq, self._prev_seq) <= 0:
            return False
        else:
            self._ssrc_changes += 1
            self._seq_floor = self._prev_seq if ssrc == self._prev_ssrc else None
            self._prev_ssrc, self._prev_seq = self._ssrc, self._max_seq & 0xFFFF
            self._max_mapped = self._arrival_position(arrival)
            self._max_seq = (self._max_seq >> 16) + 2 << 16
            self._stream_changed()
        self._ssrc = ssrc
        self._max_seq = (self._max_seq & ~0xFFFF) | seq
        self._max_raw = timestamp
        self._max_arrival = arrival
        self._pkt_candidate = 0
        return True

    def _advance(self, timestamp: int, d_seq: int, mapped: int, arrival: float) -> int:
        """A packet newer than any so far (or a sequence restart): detect timestamp jumps, learn ptime."""
        restart = not 0 < d_seq <= MAX_DROPOUT
        step = 1 if restart else d_seq
        d_ts = mapped - self._max_mapped
        if restart or mapped != self._max_mapped + step * self._pkt_samples:
            # a timestamp gap is fine (silence, loss) if it agrees with the arrival clock; otherwise resync
            drift = d_ts / self._clock - (arrival - self._max_arrival)
            if restart or d_ts <= 0 or abs(drift) > self._resync_s:
                self._resyncs += 1
                # room for the packets between (they may still come, and must play before this one)
                mapped = max(self._arrival_position(arrival), self._max_mapped + step * self._pkt_samples)
                d_ts = 0
        if step == 1 and 0 < d_ts <= 6 * self._frame:
            if d_ts == self._pkt_candidate:  # the same spacing twice in a row: that is the ptime
                self._pkt_samples = d_ts
            self._pkt_candidate = d_ts
        self._max_seq += step
        if self._seq_floor is not None and seq_delta(self._max_seq & 0xFFFF, self._seq_floor) > MAX_MISORDER:
            self._seq_floor = None
        self._max_raw = timestamp
        self._max_mapped = mapped
        self._max_arrival = arrival
        return mapped
