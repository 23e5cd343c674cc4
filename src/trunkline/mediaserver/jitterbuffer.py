"""Adaptive jitter buffer (pure): reorders RTP audio packets and plays them out by timestamp, one frame a pop.

Where packets sit on the timeline is worked out in jitterstream.py, how they are buffered in jitterstore.py
(the base classes), the target delay in jitterdelay.py. The delay changes only where that is safe, so frames
never go out of order: it grows by not advancing during silence or while a packet is missing (that frame is
concealed anyway), and shrinks by skipping silence or the hole of a missing packet. In continuous
audio (a phone line never sends silence) it drops a packet whose successor is contiguous, only if the excess
is at least that packet (less 5 ms of tick jitter: a 40 ms packet's own granularity is no excess, and a drop
never lands clearly below the target), and only once the excess in frames, cubed and integrated over time,
reaches `shed_after_s`: one frame too many waits that long, n frames 1/n³ of it (ten go in ~0.2 s). Nothing
is dropped in the first `shed_after_s` of playout, while the target rests on little data; but at the start,
packets that would keep even the fastest one waiting more than the initial delay plus two packets (a
start-of-call burst) are skipped: nothing has played yet, so that is not heard.

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
from trunkline.mediaserver.jitterstore import NO_TS, PacketStore

__all__ = ["FrameKind", "JitterBuffer", "JitterFrame", "JitterStats"]

_PLAYED_MEMORY = 128  # at least this many recently played timestamps are kept (duplicates vs late packets)
_RETARGET_EVERY = 25  # pops between target recomputations, 0.5 s (also right after every late packet)
_RETARGET_EARLY = 5  # the same while the estimator still lacks samples (the first target comes sooner)
_START_GUARD_PACKETS = 2  # a start skips packets only beyond the initial delay plus this many packets
_heappop = heapq.heappop


_SILENCE: Final = FrameKind.SILENCE
_CONCEALED: Final = FrameKind.CONCEALED
_Gap = Literal[FrameKind.CONCEALED, FrameKind.SILENCE]


class JitterBuffer(PacketStore):
    """Per-leg jitter buffer; time is passed in (monotonic seconds), nothing here reads a clock."""

    __slots__ = (
        "_conceal_after",
        "_conceal_run",
        "_concealed",
        "_frame_s",
        "_initial_s",
        "_k_target",
        "_last_marker",
        "_last_pop",
        "_last_seq",
        "_max_conceal",
        "_max_excess",
        "_origin",
        "_shed_after_s",
        "_shed_cost",
        "_shed_from",
        "_shed_tol_s",
        "_shrink_at",
        "_shrunk",
        "_skipped",
        "_slot",
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
        shed_after_s: float = 1.0,
    ) -> None:
        if clock_rate_hz <= 0 or frame_duration_ms <= 0 or max_packets < 2:
            raise ValueError("clock rate and frame duration must be positive and max_packets at least 2")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}")
        max_delay_s = max_delay_ms / 1000
        frame_s = frame_duration_ms / 1000
        late_cost = late_cost_ms_per_pct * 100  # ms per unit share of late packets
        est = DelayEstimator(
            frame_s, min_delay_ms / 1000, max_delay_s, late_cost, forget_packets, shrink_margin_ms
        )
        frame = clock_rate_hz * frame_duration_ms // 1000
        super().__init__(clock_rate_hz, frame, max(1.0, 2 * max_delay_s), max_packets, est)
        self._frame_s = frame_s
        self._initial_s = max(initial_delay_ms, min_delay_ms) / 1000  # start no lower than the floor
        self._max_conceal = max_conceal_frames
        self._max_excess = math.ceil(max_delay_s / frame_s)  # beyond this, catch up at once
        self._shed_after_s = shed_after_s  # one frame of excess delay is shed after this long
        self._shed_tol_s = frame_s / 4  # an excess this short of a whole packet counts as one (tick jitter)
        self._waits = est.waits  # the buffering delay of each played packet, folded in by the estimator
        self._last_seq: int | None = None
        self._last_marker = False
        self._slot = 0  # timeline position of the last gap frame
        # Holds the _last_ts of its moment (like _gap_after), so playing a packet resets it untouched:
        self._conceal_after = NO_TS - 1  # the current run of concealed frames started after it
        self._conceal_run = 0
        self._origin = 0.0  # playout offset at start (s), the estimator's k = 0
        self._k_target = 0  # the estimator's target offset (frames above the origin)
        self._shrink_at = 0.0  # an offset (now − cursor, s) from which the delay is above the target
        self._shed_cost = 0.0  # (frames of excess)³ integrated over time (s) since last in bounds
        self._shed_from = 0.0  # no packet is dropped to shrink the delay before this time
        self._last_pop: float | None = None
        # counters (also in StreamTimeline and PacketStore; the delays are in the estimator)
        self._concealed = self._shrunk = self._skipped = 0

    def _stream_changed(self) -> None:
        self._last_seq = None  # sequence numbers of different streams say nothing about loss

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
            self._shed_cost = 0.0
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
        ready = self._est.retarget()
        self._set_target(self._est.k_target)
        played = self._played_ts
        if len(played) > 2 * _PLAYED_MEMORY:
            del played[:-_PLAYED_MEMORY]
        return _RETARGET_EVERY if ready else _RETARGET_EARLY

    def _pop_special(self, now: float) -> int | _Gap:
        """pop() with more delay than the target, or nothing due: catch up, shrink where that is safe, or fill
        the gap. Returns the timestamp of the packet to play, or the kind of gap frame."""
        # the current playout offset minus the target (> 0: more delay than wanted), in s and whole frames
        excess_s = now - self._cursor / self._clock - self._origin - self._k_target * self._frame_s
        excess = int((excess_s / self._frame_s + 0.5) // 1)
        if excess <= 0:
            self._shed_cost = 0.0
        elif excess > self._max_excess:
            excess = self._catch_up(excess)
            self._shed_cost = 0.0
        else:
            if (excess_s + self._shed_tol_s) * self._clock < self._pkt_samples:
                self._shed_cost = 0.0  # less than a packet: dropping one would play below the target
            elif self._last_pop is not None and now >= self._shed_from:
                self._shed_cost += excess * excess * excess * (now - self._last_pop)
        self._last_pop = now
        heap = self._heap
        if heap and heap[0] < self._cursor + self._frame:
            ts = heap[0]
            if self._shed_cost >= self._shed_after_s and len(heap) > 1:
                ts = self._shrink_by_drop(ts)
            return ts
        return self._fill_gap(excess)

    def _try_start(self, now: float) -> bool:
        store = self._store
        if not store or now < min(e[3] for e in store.values()) + self._initial_s:
            return False
        self._started = True
        clock = self._clock
        order = sorted(store)
        # a start-of-call burst: skip the packets that would leave even the fastest one waiting too long
        keep_s = min(e[3] - ts / clock for ts, e in store.items()) + self._initial_s
        keep_s += _START_GUARD_PACKETS * self._pkt_samples / clock
        skip = 0
        while skip + 1 < len(order) and now - order[skip + 1] / clock >= keep_s:
            skip += 1
        for ts in order[:skip]:
            self._drop_head(ts)
        self._cursor = self._heap[0]
        self._origin = now - self._cursor / clock  # the playout offset at start: target k = 0
        self._shed_from = now + self._shed_after_s  # the first targets rest on little data
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
        """Too much delay for too long: drop packet `ts` if its successor can play now; returns the packet to
        play."""
        heap = self._heap
        second = min(heap[1:3])
        if second != ts + self._pkt_samples:
            return ts
        self._drop_head(ts)
        self._shed_cost = 0.0
        return second

    def _drop_head(self, ts: int) -> None:
        """Drop the oldest buffered packet, `ts`, to shrink the delay."""
        _heappop(self._heap)
        del self._store[ts]
        self._played_ts.append(ts)
        self._discarded += 1
        self._shrunk += 1

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
