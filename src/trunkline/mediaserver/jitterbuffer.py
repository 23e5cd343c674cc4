"""Adaptive jitter buffer (pure): reorders RTP audio packets and plays them out by timestamp, one frame a pop.

Delay. The target playout offset comes from the transit histogram in jitterdelay.py. The delay changes only
where that is safe, so frames never go out of order: it grows by not advancing during silence or while a
packet is missing (that frame is concealed anyway), and shrinks by skipping silence or the hole of a missing
packet; a received packet is dropped only once the excess delay integrated over time outweighs one impaired
frame (~4 s of waiting for silence when 20 ms too high).

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
position, and the next in-sequence packet of the current stream skips the general push logic.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass
from typing import Final, Literal

from trunkline.mediaserver.jitterdelay import DelayEstimator
from trunkline.mediaserver.rtp import RtpPacket, seq_delta, ts_delta

_MAX_DROPOUT = 3000  # RFC 3550 A.1: a bigger forward sequence jump means the sender restarted
_MAX_MISORDER = 100
_PLAYED_MEMORY = 128  # at least this many recently played timestamps are kept (duplicates vs late packets)
_RETARGET_EVERY = 5  # pops between target recomputations (also right after every late packet)
_EWMA = 1 / 64
_heappush = heapq.heappush
_heappop = heapq.heappop


class FrameKind(enum.Enum):
    """What the leg should play for one frame."""

    AUDIO = "audio"  # decode the payload
    CONCEALED = "concealed"  # a packet is missing: run packet-loss concealment
    SILENCE = "silence"  # not started, DTX / talkspurt gap, or after a long loss: comfort silence


_SILENCE: Final = FrameKind.SILENCE
_CONCEALED: Final = FrameKind.CONCEALED


@dataclass(frozen=True, slots=True)
class JitterFrame:
    """One pop's result; `payload` is empty unless kind is AUDIO."""

    kind: FrameKind
    payload: bytes
    timestamp: int
    marker: bool


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters. Every received packet is played, late, duplicate, overflow_dropped, discarded or buffered."""

    received: int
    played: int
    late: int
    lost: int
    concealed: int
    duplicate: int
    overflow_dropped: int
    discarded: int  # dropped to shrink the delay, or stragglers of a left SSRC / inconsistent timestamps
    buffered: int
    ssrc_changes: int
    resyncs: int
    current_delay_ms: float  # recent buffering delay (playout − arrival) of played packets
    mean_delay_ms: float  # the same averaged over all played packets
    target_delay_ms: float  # planned buffering delay of a typical packet


# A buffered packet, keyed by its timeline position: (extended sequence number, payload, marker, arrival s)
_Entry = tuple[int, bytes, bool, float]


class JitterBuffer:
    """Per-leg jitter buffer; time is passed in (monotonic seconds), nothing here reads a clock."""

    __slots__ = (
        "_clock",
        "_conceal_run",
        "_concealed",
        "_cursor",
        "_discarded",
        "_drop_cost",
        "_duplicate",
        "_est",
        "_estimator_args",
        "_excess_cost",
        "_frame",
        "_frame_s",
        "_gap_since_audio",
        "_heap",
        "_initial_s",
        "_k_target",
        "_last_marker",
        "_last_pop",
        "_last_seq",
        "_last_ts",
        "_late",
        "_max_arrival",
        "_max_conceal",
        "_max_delay_s",
        "_max_excess",
        "_max_mapped",
        "_max_packets",
        "_max_raw",
        "_max_seq",
        "_origin",
        "_overflow",
        "_pkt_candidate",
        "_pkt_samples",
        "_played",
        "_played_ts",
        "_prev_seq",
        "_prev_ssrc",
        "_received",
        "_resync_s",
        "_resyncs",
        "_seq_floor",
        "_shrunk",
        "_skipped",
        "_slot",
        "_ssrc",
        "_ssrc_changes",
        "_started",
        "_store",
        "_transits",
        "_until_retarget",
        "_wait_ewma",
        "_wait_sum",
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
        self._clock = clock_rate_hz
        self._frame = clock_rate_hz * frame_duration_ms // 1000
        self._frame_s = frame_duration_ms / 1000
        self._max_delay_s = max_delay_ms / 1000
        self._max_packets = max_packets
        self._initial_s = initial_delay_ms / 1000
        self._max_conceal = max_conceal_frames
        late_cost = late_cost_ms_per_pct * 100  # ms per unit share of late packets
        self._drop_cost = late_cost * self._frame_s  # ms·s: one impaired frame a second, for a second
        self._resync_s = max(1.0, 2 * self._max_delay_s)
        self._max_excess = math.ceil(self._max_delay_s / self._frame_s)  # beyond this, catch up at once
        self._estimator_args = (
            self._frame_s,
            min_delay_ms / 1000,
            self._max_delay_s,
            late_cost,
            forget_packets,
            shrink_margin_ms,
        )
        self._init_state()

    def _init_state(self) -> None:
        # stream: identity and the mapping of its sequence numbers and timestamps onto our timeline
        self._ssrc: int | None = None
        self._prev_ssrc: int | None = None
        self._prev_seq = 0  # highest sequence number seen from the previous SSRC
        self._seq_floor: int | None = None  # back on an SSRC we had left: its packets up to here were seen
        self._max_seq = self._max_raw = self._max_mapped = 0
        self._max_arrival = 0.0
        self._pkt_samples = self._frame
        self._pkt_candidate = 0
        # store and playout
        self._heap: list[int] = []
        self._store: dict[int, _Entry] = {}
        self._started = False
        self._cursor = 0
        self._last_seq: int | None = None
        self._last_ts = -math.inf  # timeline position of the last AUDIO frame
        self._last_marker = False
        self._slot = 0  # timeline position of the last gap frame
        self._gap_since_audio = False  # the cursor moved past something since then (concealed, skipped)
        self._conceal_run = 0
        self._played_ts: list[int] = []  # recently played (or dropped) timestamps, oldest first
        # estimator
        self._est = DelayEstimator(*self._estimator_args)
        self._transits = self._est.pending  # appended per packet, folded in by the estimator
        self._origin = 0.0  # playout offset at start (s), the estimator's k = 0
        self._k_target = 0  # the estimator's target offset (frames above the origin)
        self._until_retarget = 0  # pops until the next recomputation (0: not started yet)
        self._excess_cost = 0.0  # excess delay integrated over time (ms·s) since it was last in bounds
        self._last_pop: float | None = None
        # counters
        self._received = self._played = self._late = self._concealed = self._duplicate = 0
        self._overflow = self._discarded = self._shrunk = self._skipped = 0
        self._ssrc_changes = self._resyncs = 0
        self._waits: list[float] = []  # buffering delays of packets played since the last fold
        self._wait_sum = self._wait_ewma = 0.0

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
            or timestamp != (self._max_raw + step) & 0xFFFFFFFF
            or self._seq_floor is not None
        ):
            self._push_general(ssrc, seq, timestamp, payload, marker, arrival_time)
            return
        # the next packet of the stream, one packet duration on (what _push_general would conclude);
        # newer than anything buffered or played, so no duplicate, and late only if the cursor passed it
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
        if ssrc != self._ssrc and not self._switch_ssrc(ssrc, seq, timestamp, arrival):
            self._discarded += 1
            return
        d_seq = seq_delta(seq, self._max_seq & 0xFFFF)
        mapped = self._max_mapped + ts_delta(timestamp, self._max_raw)
        if d_seq > 0 or d_seq < -_MAX_MISORDER:
            mapped = self._advance(timestamp, d_seq, mapped, arrival)
            ext_seq = self._max_seq
        else:
            ext_seq = self._max_seq + d_seq
            drift = (mapped - self._max_mapped) / self._clock - (arrival - self._max_arrival)
            floor = self._seq_floor
            if d_seq < 0 and (
                mapped > self._max_mapped
                or abs(drift) > self._resync_s  # its timestamp does not fit: from before a resync
                or (floor is not None and seq_delta(seq, floor) <= 0)
            ):
                self._discarded += 1
                return
            if mapped in self._store or mapped in self._played_ts:
                self._duplicate += 1
                return
        self._accept(mapped, ext_seq, payload, marker, arrival)

    def _switch_ssrc(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> bool:
        """Follow a new SSRC (its timestamps are mapped onto our timeline). False for stragglers: packets of
        the SSRC just left that are not newer than the last one seen from it."""
        if self._ssrc is None:
            self._max_mapped = timestamp
        elif ssrc == self._prev_ssrc and seq_delta(seq, self._prev_seq) <= 0:
            return False
        else:
            self._ssrc_changes += 1
            self._seq_floor = self._prev_seq if ssrc == self._prev_ssrc else None
            self._prev_ssrc, self._prev_seq = self._ssrc, self._max_seq & 0xFFFF
            self._max_mapped = self._arrival_mapped(arrival)
            self._max_seq = (self._max_seq >> 16) + 2 << 16
            self._last_seq = None
        self._ssrc = ssrc
        self._max_seq = (self._max_seq & ~0xFFFF) | seq
        self._max_raw = timestamp
        self._max_arrival = arrival
        self._pkt_candidate = 0
        return True

    def _advance(self, timestamp: int, d_seq: int, mapped: int, arrival: float) -> int:
        """A packet newer than any so far (or a sequence restart): detect timestamp jumps, learn ptime."""
        restart = not 0 < d_seq <= _MAX_DROPOUT
        step = 1 if restart else d_seq
        d_ts = mapped - self._max_mapped
        if restart or mapped != self._max_mapped + step * self._pkt_samples:
            # a timestamp gap is fine (silence, loss) if it agrees with the arrival clock; otherwise resync
            drift = d_ts / self._clock - (arrival - self._max_arrival)
            if restart or d_ts <= 0 or abs(drift) > self._resync_s:
                self._resyncs += 1
                mapped = self._arrival_mapped(arrival)
                d_ts = 0
        if step == 1 and 0 < d_ts <= 6 * self._frame:
            if d_ts == self._pkt_candidate:  # the same spacing twice in a row: that is the ptime
                self._pkt_samples = d_ts
            self._pkt_candidate = d_ts
        self._max_seq += step
        if self._seq_floor is not None and seq_delta(self._max_seq & 0xFFFF, self._seq_floor) > _MAX_MISORDER:
            self._seq_floor = None
        self._max_raw = timestamp
        self._max_mapped = mapped
        self._max_arrival = arrival
        return mapped

    def _arrival_mapped(self, arrival: float) -> int:
        """Timeline position for a packet with no usable timestamp relation: typical transit, frame-aligned,
        after everything already mapped."""
        want = round((arrival - self._est.mean_s) * self._clock)
        if self._started:
            want = self._cursor + max(0, round((want - self._cursor) / self._frame)) * self._frame
        return max(want, self._max_mapped + self._pkt_samples)

    def _accept(self, ts: int, seq: int, payload: bytes, marker: bool, arrival: float) -> None:
        """Observe the transit of a packet that is no duplicate, then buffer it unless it is late."""
        self._transits.append(arrival - ts / self._clock)
        if self._started and ts < self._cursor and (self._gap_since_audio or ts <= self._last_ts):
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
            self._gap_since_audio = True

    # ------------------------------------------------------------------ pop

    def pop(self, now: float) -> JitterFrame:
        """The next frame to play at `now` (one per call, always)."""
        got = self.pop_payload(now)
        if isinstance(got, FrameKind):
            return JitterFrame(got, b"", self._slot & 0xFFFFFFFF, False)
        return JitterFrame(FrameKind.AUDIO, got, int(self._last_ts) & 0xFFFFFFFF, self._last_marker)

    def pop_payload(self, now: float) -> bytes | Literal[FrameKind.CONCEALED, FrameKind.SILENCE]:
        """pop() without the frame: the payload of an AUDIO frame, else FrameKind.CONCEALED or SILENCE."""
        n = self._until_retarget - 1
        if n <= 0:
            if self._started:
                self._retarget()
                n = _RETARGET_EVERY
            elif self._try_start(now):
                n = _RETARGET_EVERY - 1  # counting this pop
            else:
                self._slot = 0
                return _SILENCE
        self._until_retarget = n
        cursor = self._cursor
        # current playout offset minus the target, in frames (> 0: more delay than wanted)
        excess = round((now - cursor / self._clock - self._origin) / self._frame_s) - self._k_target
        if excess > 0:
            return self._pop_with_excess(now, excess)
        self._last_pop = now
        self._excess_cost = 0.0
        heap = self._heap
        if heap and heap[0] < cursor + self._frame:
            return self._play(heap[0], now)
        return self._fill_gap(now, excess)

    def _pop_with_excess(
        self, now: float, excess: int
    ) -> bytes | Literal[FrameKind.CONCEALED, FrameKind.SILENCE]:
        """pop() with more delay than the target: catch up, or shrink where that is safe (see _fill_gap)."""
        if excess > self._max_excess:
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
            return self._play(ts, now)
        return self._fill_gap(now, excess)

    def _retarget(self) -> None:
        """Every few pops: fold in the recent statistics, recompute the target."""
        self._est.retarget()
        self._k_target = self._est.k_target
        self._fold_waits()
        played = self._played_ts
        if len(played) > 2 * _PLAYED_MEMORY:
            del played[:-_PLAYED_MEMORY]

    def _try_start(self, now: float) -> bool:
        store = self._store
        if not store or now < min(e[3] for e in store.values()) + self._initial_s:
            return False
        self._started = True
        self._cursor = self._heap[0]
        self._origin = now - self._cursor / self._clock  # the playout offset at start: target k = 0
        clock = self._clock
        self._est.start(self._origin, [e[3] - ts / clock for ts, e in store.items()])
        return True

    def _catch_up(self, excess: int) -> int:
        """Far too much delay (pops stopped for a while, say): jump to the target, dropping what it skips."""
        self._cursor += excess * self._frame
        self._gap_since_audio = True
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

    def _play(self, ts: int, now: float) -> bytes:
        _heappop(self._heap)
        seq, payload, marker, arrival = self._store.pop(ts)
        end = ts + self._pkt_samples
        if end > self._cursor:
            self._cursor = end
        self._last_ts = ts
        self._last_marker = marker
        self._gap_since_audio = False
        last_seq = self._last_seq
        if last_seq is not None and seq > last_seq + 1:
            self._skipped += seq - last_seq - 1
        self._last_seq = seq
        self._conceal_run = 0
        self._waits.append(now - arrival)  # counted as played when folded in
        self._played_ts.append(ts)
        return payload

    def _fill_gap(self, now: float, excess: int) -> bytes | Literal[FrameKind.CONCEALED, FrameKind.SILENCE]:
        """Nothing is due: shrink by skipping the gap if wanted, else play silence or concealment."""
        silent = False
        if self._heap:
            ts = self._heap[0]
            if excess > 0:
                skip = min(excess, (ts - self._cursor) // self._frame)
                self._cursor += skip * self._frame
                self._gap_since_audio = True
                if ts < self._cursor + self._frame:
                    return self._play(ts, now)
                excess -= skip
            seq, _, marker, _ = self._store[ts]
            silent = marker or self._last_seq is None or seq == self._last_seq + 1
        self._slot = self._cursor
        self._gap_since_audio = True
        if excess >= 0:
            self._cursor += self._frame
        if not silent:
            self._conceal_run += 1
            if self._conceal_run <= self._max_conceal:
                self._concealed += 1
                return _CONCEALED
        return _SILENCE

    def _fold_waits(self) -> None:
        """Count the packets played since the last fold and their delays (kept apart to save per-pop work)."""
        played, total, ewma = self._played, self._wait_sum, self._wait_ewma
        for wait in self._waits:
            played += 1
            total += wait
            ewma += (wait - ewma) * (_EWMA if played > 64 else 1 / played)
        self._waits.clear()
        self._played, self._wait_sum, self._wait_ewma = played, total, ewma

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters and delays."""
        self._fold_waits()
        return JitterStats(
            received=self._received,
            played=self._played,
            late=self._late,
            lost=max(0, self._skipped - self._late - self._overflow - self._shrunk),
            concealed=self._concealed,
            duplicate=self._duplicate,
            overflow_dropped=self._overflow,
            discarded=self._discarded,
            buffered=len(self._store),
            ssrc_changes=self._ssrc_changes,
            resyncs=self._resyncs,
            current_delay_ms=1000 * self._wait_ewma,
            mean_delay_ms=1000 * self._wait_sum / self._played if self._played else 0.0,
            target_delay_ms=1000 * self._est.planned_delay_s(self._initial_s),
        )
