"""Adaptive jitter buffer (pure): reorders RTP audio packets and plays them out by timestamp, one frame a pop.

Where packets sit on the timeline is worked out in jitterstream.py (the base class), the target delay in
jitterdelay.py. The delay changes only where that is safe, so frames never go out of order: it grows by not
advancing during silence or while a packet is missing (that frame is concealed anyway), and shrinks by
skipping silence or the hole of a missing packet; a received packet is dropped only once the excess delay
integrated over time outweighs one impaired frame (~4 s of waiting for silence when 20 ms too high).

Contract for the leg:
* `push(packet, arrival_time)` every packet of the audio payload type (not RFC 4733 events, not CN);
  `push_fields(...)` is the same for a header the caller has already unpacked (the pacer's fast path).
* `pop(now)` whenever the leg needs more audio: once per 20 ms tick for 20 ms packets. It always returns one
  frame, never stalls. AUDIO carries one packet's payload and lasts as long as that packet; CONCEALED and
  SILENCE stand for `frame_duration_ms` that the leg synthesises (PLC, comfort silence). A packet is due when
  its timestamp falls in the next frame slot, so playout follows timestamps whatever the ptime: with other
  ptimes the leg keeps decoded audio in a FIFO and pops while it holds less than one tick.
  `pop_payload(now)` is pop() without building a frame: the payload, or the FrameKind of a gap.
* Frame timestamps are positions on the playout timeline (RTP units mod 2^32): the packet's own timestamp
  until the first resync or SSRC change, continued after that so they never go backwards. AUDIO timestamps
  strictly increase; a frame inserted to grow the delay repeats the timestamp of the frame after it.
* A packet is late (dropped, counted) once its slot was concealed or skipped, or a later packet has played.
* After a talkspurt the buffer cannot tell silence from loss until the next packet arrives: it conceals up
  to `max_conceal_frames` (the PLC fades out meanwhile), then plays SILENCE. A gap before a packet with the
  marker bit, or whose sequence number follows the last played one, is silence, not loss.

CPU matters (hundreds of legs per process): buffered packets are plain tuples keyed by their timeline
position, the next in-sequence packet skips the general push logic, a due packet is played without
computing the excess delay, and statistics are appended per packet and folded in every 25 pops.
"""

from __future__ import annotations

import heapq
import math
from typing import Final, Literal

from trunkline.mediaserver.jitterdelay import DelayEstimator
from trunkline.mediaserver.jitterframes import FrameKind, JitterFrame, JitterStats
from trunkline.mediaserver.jitterstream import StreamTimeline
from trunkline.mediaserver.rtp import RtpPacket

__all__ = ["FrameKind", "JitterBuffer", "JitterFrame", "JitterStats"]

_PLAYED_MEMORY = 128  # at least this many recently played timestamps are kept (duplicates vs late packets)
_RETARGET_EVERY = 25  # pops between target recomputations, 0.5 s (also right after every late packet)
_NO_TS = -(1 << 62)  # before any timeline position
_heappush = heapq.heappush
_heappop = heapq.heappop


_SILENCE: Final = FrameKind.SILENCE
_CONCEALED: Final = FrameKind.CONCEALED
_Gap = Literal[FrameKind.CONCEALED, FrameKind.SILENCE]


# A buffered packet, keyed by its timeline position: (extended sequence number, payload, marker, arrival s)
_Entry = tuple[int, bytes, bool, float]


class JitterBuffer(StreamTimeline):
    """Per-leg jitter buffer; time is passed in (monotonic seconds), nothing here reads a clock."""

    __slots__ = (
        "_conceal_after",
        "_conceal_run",
        "_concealed",
        "_cursor",
        "_discarded",
        "_drop_cost",
        "_duplicate",
        "_est",
        "_excess_cost",
        "_frame_s",
        "_gap_after",
        "_heap",
        "_initial_s",
        "_k_target",
        "_last_marker",
        "_last_pop",
        "_last_seq",
        "_last_ts",
        "_late",
        "_max_conceal",
        "_max_excess",
        "_max_packets",
        "_origin",
        "_overflow",
        "_played_ts",
        "_received",
        "_shrink_at",
        "_shrunk",
        "_skipped",
        "_slot",
        "_started",
        "_store",
        "_transits",
        "_until_retarget",
        "_waits",
    )

    def __init__(
        self,
        clock_rate_hz: int = 8000,
        frame_duration_ms: int = 20,
        min_delay_ms: float = 0.0,
        max_delay_ms: float = 400.0,
        max_packets: int = 64,
        *,
        initial_delay_ms: float = 40.0,
        late_cost_ms_per_pct: float = 40.0,
        max_conceal_frames: int = 3,
        forget_packets: int = 1500,
        shrink_margin_ms: float = 10.0,
    ) -> None:
        if clock_rate_hz <= 0 or frame_duration_ms <= 0 or max_packets < 2:
            raise ValueError("clock rate and frame duration must be positive and max_packets at least 2")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}")
        max_delay_s = max_delay_ms / 1000
        super().__init__(clock_rate_hz, clock_rate_hz * frame_duration_ms // 1000, max(1.0, 2 * max_delay_s))
        self._frame_s = frame_s = frame_duration_ms / 1000
        self._max_packets = max_packets
        self._initial_s = max(initial_delay_ms, min_delay_ms) / 1000  # start no lower than the floor
        self._max_conceal = max_conceal_frames
        late_cost = late_cost_ms_per_pct * 100  # ms per unit share of late packets
        self._drop_cost = late_cost * frame_s  # ms·s: one impaired frame a second, for a second
        self._max_excess = math.ceil(max_delay_s / frame_s)  # beyond this, catch up at once
        est = DelayEstimator(
            frame_s, min_delay_ms / 1000, max_delay_s, late_cost, forget_packets, shrink_margin_ms
        )
        self._est = est
        self._transits = est.pending  # appended per packet, folded in by the estimator
        self._waits = est.waits  # likewise the buffering delay of each played packet
        # store and playout
        self._heap: list[int] = []
        self._store: dict[int, _Entry] = {}
        self._started = False
        self._cursor = 0
        self._last_seq: int | None = None
        self._last_ts = _NO_TS  # timeline position of the last AUDIO frame
        self._last_marker = False
        self._slot = 0  # timeline position of the last gap frame
        # Both hold the _last_ts of their moment, so playing a packet resets them without touching them:
        self._gap_after = _NO_TS - 1  # the cursor last moved past something (concealed, skipped) after it
        self._conceal_after = _NO_TS - 1  # the current run of concealed frames started after it
        self._conceal_run = 0
        self._played_ts: list[int] = []  # recently played (or dropped) timestamps, oldest first
        self._origin = 0.0  # playout offset at start (s), the estimator's k = 0
        self._k_target = 0  # the estimator's target offset (frames above the origin)
        self._shrink_at = 0.0  # an offset (now − cursor, s) from which the delay is above the target
        self._until_retarget = 0  # pops until the next recomputation (0: not started yet)
        self._excess_cost = 0.0  # excess delay integrated over time (ms·s) since it was last in bounds
        self._last_pop: float | None = None
        # counters (the stream's are in StreamTimeline, the delays in the estimator)
        self._received = self._late = self._concealed = self._duplicate = 0
        self._overflow = self._discarded = self._shrunk = self._skipped = 0

    # ------------------------------------------------------------------ push

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

    def _stream_changed(self) -> None:
        self._last_seq = None  # sequence numbers of different streams say nothing about loss

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

    # ------------------------------------------------------------------ pop

    def pop(self, now: float) -> JitterFrame:
        """The next frame to play at `now` (one per call, always)."""
        got = self.pop_payload(now)
        if isinstance(got, FrameKind):
            slot = (self._slot + self._ts_base) & 0xFFFFFFFF if self._started else 0
            return JitterFrame(got, b"", slot, False)
        return JitterFrame(
            FrameKind.AUDIO, got, (self._last_ts + self._ts_base) & 0xFFFFFFFF, self._last_marker
        )

    def pop_payload(self, now: float) -> bytes | _Gap:
        """pop() without the frame: the payload of an AUDIO frame, else FrameKind.CONCEALED or SILENCE."""
        n = self._until_retarget - 1
        if n <= 0:
            n = self._on_schedule(now)
            if not n:
                return _SILENCE
        self._until_retarget = n
        cursor = self._cursor
        heap = self._heap
        if now - cursor / self._clock >= self._shrink_at or not heap or heap[0] >= cursor + self._frame:
            got = self._pop_special(now)
            if got is _SILENCE or got is _CONCEALED:
                return got
            ts = got
        else:  # the plain case: the next packet is due and the delay is not above target
            self._last_pop = now
            self._excess_cost = 0.0
            ts = heap[0]
        # play packet ts
        _heappop(heap)
        seq, payload, marker, arrival = self._store.pop(ts)
        end = ts + self._pkt_samples
        if end > self._cursor:
            self._cursor = end
        self._last_ts = ts
        self._last_marker = marker
        last_seq = self._last_seq
        if last_seq is not None and seq > last_seq + 1:
            self._skipped += seq - last_seq - 1
        self._last_seq = seq
        self._waits.append(now - arrival)  # counted as played when folded in
        self._played_ts.append(ts)
        return payload

    def _set_target(self, k: int) -> None:
        self._k_target = k
        self._shrink_at = self._origin + (k + 0.5) * self._frame_s  # where the excess rounds to 1 frame

    def _on_schedule(self, now: float) -> int:
        """Every few pops: start playout, or fold in the recent statistics and recompute the target; returns
        the pops until the next time (0: not started)."""
        if not self._started:
            return _RETARGET_EVERY - 1 if self._try_start(now) else 0  # counting this pop
        self._est.retarget()
        self._set_target(self._est.k_target)
        played = self._played_ts
        if len(played) > 2 * _PLAYED_MEMORY:
            del played[:-_PLAYED_MEMORY]
        return _RETARGET_EVERY

    def _pop_special(self, now: float) -> int | _Gap:
        """pop() with more delay than the target, or nothing due: catch up, shrink where that is safe, or fill
        the gap. Returns the timestamp of the packet to play, or the kind of gap frame."""
        # the current playout offset minus the target, in whole frames (> 0: more delay than wanted)
        offset = (now - self._cursor / self._clock - self._origin) / self._frame_s
        excess = int((offset + 0.5) // 1) - self._k_target
        if excess <= 0:
            self._excess_cost = 0.0
        elif excess > self._max_excess:
            excess = self._catch_up(excess)
            self._excess_cost = 0.0
        elif self._last_pop is not None:
            self._excess_cost += excess * self._frame_s * 1000 * (now - self._last_pop)
        self._last_pop = now
        heap = self._heap
        if heap and heap[0] < self._cursor + self._frame:
            ts = heap[0]
            if self._excess_cost >= self._drop_cost and len(heap) > 1:
                ts = self._shrink_by_drop(ts)
            return ts
        return self._fill_gap(excess)

    def _try_start(self, now: float) -> bool:
        store = self._store
        if not store or now < min(e[3] for e in store.values()) + self._initial_s:
            return False
        self._started = True
        self._cursor = self._heap[0]
        self._origin = now - self._cursor / self._clock  # the playout offset at start: target k = 0
        clock = self._clock
        self._est.start(self._origin, [e[3] - ts / clock for ts, e in store.items()])
        self._set_target(0)
        return True

    def _catch_up(self, excess: int) -> int:
        """Far too much delay (pops stopped for a while, say): jump to the target, dropping what it skips."""
        self._cursor += excess * self._frame
        self._gap_after = self._last_ts
        while self._heap and self._heap[0] < self._cursor:
            del self._store[_heappop(self._heap)]
            self._discarded += 1
            self._shrunk += 1
        return 0

    def _shrink_by_drop(self, ts: int) -> int:
        """Last resort when too much delay has lasted too long: drop packet `ts` if its successor can play
        now; returns the packet to play."""
        heap = self._heap
        second = min(heap[1:3])
        if second != ts + self._pkt_samples:
            return ts
        _heappop(heap)
        del self._store[ts]
        self._played_ts.append(ts)
        self._discarded += 1
        self._shrunk += 1
        self._excess_cost = 0.0
        return second

    def _fill_gap(self, excess: int) -> int | _Gap:
        """Nothing is due: shrink by skipping the gap if wanted (returns the packet then due), else play
        silence or concealment."""
        silent = False
        if self._heap:
            ts = self._heap[0]
            if excess > 0:
                skip = min(excess, (ts - self._cursor) // self._frame)
                self._cursor += skip * self._frame
                self._gap_after = self._last_ts
                if ts < self._cursor + self._frame:
                    return ts
                excess -= skip
            seq, _, marker, _ = self._store[ts]
            silent = marker or self._last_seq is None or seq == self._last_seq + 1
        self._slot = self._cursor
        self._gap_after = self._last_ts
        if excess >= 0:
            self._cursor += self._frame
        if not silent:
            if self._conceal_after != self._last_ts:  # a new run
                self._conceal_after = self._last_ts
                self._conceal_run = 0
            self._conceal_run += 1
            if self._conceal_run <= self._max_conceal:
                self._concealed += 1
                return _CONCEALED
        return _SILENCE

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters and delays."""
        played, current_delay_s, mean_delay_s = self._est.played()
        return JitterStats(
            received=self._received,
            played=played,
            late=self._late,
            lost=max(0, self._skipped - self._late - self._overflow - self._shrunk),
            concealed=self._concealed,
            duplicate=self._duplicate,
            overflow_dropped=self._overflow,
            discarded=self._discarded,
            buffered=len(self._store),
            ssrc_changes=self._ssrc_changes,
            resyncs=self._resyncs,
            current_delay_ms=1000 * current_delay_s,
            mean_delay_ms=1000 * mean_delay_s,
            target_delay_ms=1000 * self._est.planned_delay_s(self._initial_s),
        )
