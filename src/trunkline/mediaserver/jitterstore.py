"""The jitter buffer's push half (pure): buffers received packets by timeline position, counts what it drops.

JitterBuffer (jitterbuffer.py) adds playout on top; the state both halves touch (the playout cursor, the
last played position) lives here. Where a packet sits on the timeline is StreamTimeline's business.
"""

from __future__ import annotations

import heapq

from trunkline.mediaserver.jitterdelay import DelayEstimator
from trunkline.mediaserver.jitterstream import StreamTimeline
from trunkline.mediaserver.rtp import RtpPacket

NO_TS = -(1 << 62)  # before any timeline position
_heappush = heapq.heappush
_heappop = heapq.heappop

# A buffered packet, keyed by its timeline position: (extended sequence number, payload, marker, arrival s)
Entry = tuple[int, bytes, bool, float]


class PacketStore(StreamTimeline):
    """Base class of JitterBuffer: the buffered packets, a dict keyed by position and a heap of positions."""

    __slots__ = (
        "_cursor",
        "_discarded",
        "_duplicate",
        "_est",
        "_gap_after",
        "_heap",
        "_last_ts",
        "_late",
        "_max_packets",
        "_overflow",
        "_played_ts",
        "_received",
        "_started",
        "_store",
        "_transits",
        "_until_retarget",
    )

    def __init__(
        self, clock_rate_hz: int, frame_samples: int, resync_s: float, max_packets: int, est: DelayEstimator
    ) -> None:
        super().__init__(clock_rate_hz, frame_samples, resync_s)
        self._max_packets = max_packets
        self._est = est
        self._transits = est.pending  # appended per packet, folded in by the estimator
        self._heap: list[int] = []
        self._store: dict[int, Entry] = {}
        self._started = False
        self._cursor = 0  # timeline position of the next slot to play
        self._last_ts = NO_TS  # timeline position of the last AUDIO frame
        self._gap_after = NO_TS - 1  # the cursor last moved past something (concealed, skipped) after it
        self._played_ts: list[int] = []  # recently played (or dropped) timestamps, oldest first
        self._until_retarget = 0  # pops until the next recomputation (0: not started yet)
        self._received = self._late = self._duplicate = self._overflow = self._discarded = 0

    def push(self, packet: RtpPacket, arrival_time: float) -> None:
        """Accept one packet that arrived at `arrival_time`; never raises on odd input, counts it instead."""
        self.push_fields(
            packet.ssrc, packet.sequence_number, packet.timestamp, packet.payload, packet.marker, arrival_time
        )

    def push_fields(
        self, ssrc: int, seq: int, timestamp: int, payload: bytes, marker: bool, arrival_time: float
    ) -> None:
        """push() for an unpacked header: the packet's SSRC, sequence number, timestamp, payload, marker."""
        self._received += 1
        step = self._pkt_samples
        if (
            ssrc != self._ssrc
            or seq != (self._max_seq + 1) & 0xFFFF
            or timestamp - self._max_raw != step  # (a timestamp wrap takes the general path)
            or self._seq_floor is not None
        ):
            self._push_general(ssrc, seq, timestamp, payload, marker, arrival_time)
            return
        # the next packet of the stream, one packet duration on (what _place() would conclude); newer
        # than anything buffered or played, so no duplicate, and late only if the cursor passed it
        ts = self._max_mapped = self._max_mapped + step
        ext_seq = self._max_seq = self._max_seq + 1
        self._max_raw = timestamp
        self._max_arrival = arrival_time
        self._pkt_candidate = step
        if ts < self._cursor:
            self._accept(ts, ext_seq, payload, marker, arrival_time)
            return
        self._transits.append(arrival_time - ts / self._clock)
        store = self._store
        store[ts] = (ext_seq, payload, marker, arrival_time)
        _heappush(self._heap, ts)
        if len(store) > self._max_packets:
            self._overflow_drop()

    def _push_general(
        self, ssrc: int, seq: int, timestamp: int, payload: bytes, marker: bool, arrival: float
    ) -> None:
        placed = self._place(ssrc, seq, timestamp, arrival)
        if placed is None:
            self._discarded += 1
            return
        ts, ext_seq, newest = placed
        if not newest and (ts in self._store or ts in self._played_ts):
            self._duplicate += 1
            return
        self._accept(ts, ext_seq, payload, marker, arrival)

    def _arrival_position(self, arrival: float) -> int:
        """Timeline position for a packet with no usable timestamp relation: typical transit, frame-aligned,
        after everything already mapped."""
        want = round((arrival - self._est.mean_s) * self._clock)
        if self._started:
            want = self._cursor + max(0, round((want - self._cursor) / self._frame)) * self._frame
        return max(want, self._max_mapped + self._pkt_samples)

    def _accept(self, ts: int, seq: int, payload: bytes, marker: bool, arrival: float) -> None:
        """Observe the transit of a packet that is no duplicate, then buffer it unless it is late."""
        self._transits.append(arrival - ts / self._clock)
        if self._started and ts < self._cursor and (self._gap_after == self._last_ts or ts <= self._last_ts):
            self._late += 1
            self._until_retarget = 1  # at the next pop
            return
        store = self._store
        store[ts] = (seq, payload, marker, arrival)
        _heappush(self._heap, ts)
        if len(store) > self._max_packets:
            self._overflow_drop()

    def _overflow_drop(self) -> None:
        """More than max_packets buffered: drop the oldest."""
        oldest = _heappop(self._heap)
        del self._store[oldest]
        self._overflow += 1
        self._est.fold()  # nobody pops: keep the pending transits bounded too
        if self._started:
            self._cursor = max(self._cursor, oldest + self._pkt_samples)
            self._gap_after = self._last_ts
