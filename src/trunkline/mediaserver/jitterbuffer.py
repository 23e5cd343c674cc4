"""Adaptive jitter buffer (pure): reorders RTP audio packets and plays them out by timestamp, one frame a pop.

Delay. Each packet's transit (arrival − RTP timestamp / clock) goes into an exponentially forgetting histogram
whose bins line up with the playout offsets a 20 ms pacer can realise. The target offset minimises
`delay + late_cost × share of packets later than it`: Gaussian jitter is covered to a high quantile, while
rare delay spikes are not worth a permanently higher delay. The target rises at once and falls only when that
clearly pays. The delay changes only where that is safe, so frames never go out of order: it grows by not
advancing during silence or while a packet is missing (that frame is concealed anyway), and shrinks by
skipping silence or the hole of a missing packet; a received packet is dropped only once the excess delay
integrated over time outweighs one impaired frame (~4 s of waiting for silence when 20 ms too high).

Contract for the leg:
* `push(packet, arrival_time)` every packet of the audio payload type (not RFC 4733 events, not CN).
* `pop(now)` whenever the leg needs more audio: once per 20 ms tick for 20 ms packets. It always returns one
  frame, never stalls. AUDIO carries one packet's payload and lasts as long as that packet; CONCEALED and
  SILENCE stand for `frame_duration_ms` that the leg synthesises (PLC, comfort silence). A packet is due when
  its timestamp falls in the next frame slot, so playout follows timestamps whatever the ptime: with other
  ptimes the leg keeps decoded audio in a FIFO and pops while it holds less than one tick.
* Frame timestamps are positions on the playout timeline (RTP units mod 2^32): the packet's own timestamp
  until the first resync or SSRC change, continued after that so they never go backwards. AUDIO timestamps
  strictly increase; a frame inserted to grow the delay repeats the timestamp of the frame after it.
* A packet is late (dropped, counted) once its slot was concealed or skipped, or a later packet has played.
* After a talkspurt the buffer cannot tell silence from loss until the next packet arrives: it conceals up
  to `max_conceal_frames` (the PLC fades out meanwhile), then plays SILENCE. A gap before a packet with the
  marker bit, or whose sequence number follows the last played one, is silence, not loss.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass

from trunkline.mediaserver.rtp import RtpPacket, seq_delta, ts_delta

_MAX_DROPOUT = 3000  # RFC 3550 A.1: a bigger forward sequence jump means the sender restarted
_MAX_MISORDER = 100
_PLAYED_MEMORY = 128  # recently played timestamps kept to tell duplicates from late packets
_RETARGET_EVERY = 5  # pops between target recomputations (also right after every late packet)
_MIN_SAMPLES = 25  # transit observations before the target may move
_BINS_PER_FRAME = 4
_EWMA = 1 / 64
_RANGE_MARGIN_S = 2.0  # histogram span beyond the delay bounds (clock drift, route changes)


class FrameKind(enum.Enum):
    """What the leg should play for one frame."""

    AUDIO = "audio"  # decode the payload
    CONCEALED = "concealed"  # a packet is missing: run packet-loss concealment
    SILENCE = "silence"  # not started, DTX / talkspurt gap, or after a long loss: comfort silence


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


@dataclass(slots=True)
class _Entry:
    ts: int  # position on the playout timeline (unwrapped RTP units)
    seq: int  # extended sequence number
    packet: RtpPacket
    arrival: float


class _TransitHistogram:
    """Exponentially forgetting histogram of transit times relative to `origin` (s), bins 1/4 frame wide.

    Forgetting grows the weight of each new sample instead of decaying every bin, so `add` is O(1).
    """

    def __init__(self, origin_s: float, frame_s: float, span_s: tuple[float, float], forget: float) -> None:
        self.origin = origin_s
        self._bin_s = frame_s / _BINS_PER_FRAME
        self._off = math.ceil(span_s[0] / self._bin_s)
        self._bins = [0.0] * (self._off + math.ceil(span_s[1] / self._bin_s) + 1)
        self._forget = forget
        self._weight = 1.0
        self.total = 0.0
        self._lo = len(self._bins)
        self._hi = -1

    def add(self, transit_s: float) -> None:
        i = math.ceil((transit_s - self.origin) / self._bin_s) + self._off
        if i < 0:
            i = 0
        elif i >= len(self._bins):
            i = len(self._bins) - 1
        if i < self._lo:
            self._lo = i
        if i > self._hi:
            self._hi = i
        w = self._weight = self._weight / self._forget
        self._bins[i] += w
        self.total += w
        if w > 1e12:
            self._bins = [b / self._weight for b in self._bins]
            self.total /= self._weight
            self._weight = 1.0

    @property
    def samples(self) -> float:
        """Effective number of samples (recent ones count fully, old ones fade)."""
        return self.total / self._weight

    def best_offset(
        self, k_lo: int, k_hi: int, frame_ms: float, cost: float, k_ref: int
    ) -> tuple[int, float]:
        """Offset k (frames above origin) in [k_lo, k_hi] minimising k·frame_ms + cost·P(late at k),
        and how much it saves over k_ref (0 when k_ref is out of range)."""
        bins = self._bins
        while self._hi > self._lo and bins[self._hi] < self.total * 1e-6:  # forgotten outliers
            bins[self._hi] = 0.0
            self._hi -= 1
        tail, i = 0.0, self._hi
        best_k, best, ref_cost = k_hi, math.inf, math.inf
        for k in range(k_hi, k_lo - 1, -1):
            edge = self._off + _BINS_PER_FRAME * k
            while i > edge and i >= self._lo:
                tail += bins[i]
                i -= 1
            value = k * frame_ms + cost * tail / self.total
            if value <= best:
                best, best_k = value, k
            if k == k_ref:
                ref_cost = value
        return best_k, (ref_cost - best if ref_cost < math.inf else 0.0)


class JitterBuffer:
    """Per-leg jitter buffer; time is passed in (monotonic seconds), nothing here reads a clock."""

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
        self._min_delay_s = min_delay_ms / 1000
        self._max_delay_s = max_delay_ms / 1000
        self._max_packets = max_packets
        self._initial_s = initial_delay_ms / 1000
        self._late_cost = late_cost_ms_per_pct * 100  # ms per unit share of late packets
        self._max_conceal = max_conceal_frames
        self._forget = 1 - 1 / forget_packets
        self._shrink_margin_ms = shrink_margin_ms
        self._drop_cost = self._late_cost * self._frame_s  # ms·s: one impaired frame a second, for a second
        self._resync_s = max(1.0, 2 * self._max_delay_s)
        self._max_excess = math.ceil(self._max_delay_s / self._frame_s)  # beyond this, catch up at once
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
        self._gap_since_audio = False  # the cursor moved past something since then (concealed, skipped)
        self._conceal_run = 0
        self._recent: dict[int, None] = {}  # recently played timestamps, oldest first
        # estimator
        self._hist: _TransitHistogram | None = None
        self._origin = 0.0
        self._r_mean = 0.0  # mean transit (s), EWMA
        self._observed = 0
        self._k_target = 0
        self._retarget_due = False
        self._pops = 0
        self._excess_cost = 0.0  # excess delay integrated over time (ms·s) since it was last in bounds
        self._last_pop: float | None = None
        # counters
        self._received = self._played = self._late = self._concealed = self._duplicate = 0
        self._overflow = self._discarded = self._shrunk = self._skipped = 0
        self._ssrc_changes = self._resyncs = 0
        self._wait_sum = self._wait_ewma = 0.0

    # ------------------------------------------------------------------ push

    def push(self, packet: RtpPacket, arrival_time: float) -> None:
        """Accept one packet that arrived at `arrival_time`; never raises on odd input, counts it instead."""
        self._received += 1
        if packet.ssrc != self._ssrc and not self._switch_ssrc(packet, arrival_time):
            self._discarded += 1
            return
        d_seq = seq_delta(packet.sequence_number, self._max_seq & 0xFFFF)
        mapped = self._max_mapped + ts_delta(packet.timestamp, self._max_raw)
        if d_seq > 0 or d_seq < -_MAX_MISORDER:
            mapped = self._advance(packet, d_seq, mapped, arrival_time)
            ext_seq = self._max_seq
        else:
            ext_seq = self._max_seq + d_seq
            drift = (mapped - self._max_mapped) / self._clock - (arrival_time - self._max_arrival)
            floor = self._seq_floor
            if d_seq < 0 and (
                mapped > self._max_mapped
                or abs(drift) > self._resync_s  # its timestamp does not fit: from before a resync
                or (floor is not None and seq_delta(packet.sequence_number, floor) <= 0)
            ):
                self._discarded += 1
                return
        self._place(_Entry(mapped, ext_seq, packet, arrival_time))

    def _switch_ssrc(self, packet: RtpPacket, arrival: float) -> bool:
        """Follow a new SSRC (its timestamps are mapped onto our timeline). False for stragglers: packets of
        the SSRC just left that are not newer than the last one seen from it."""
        if self._ssrc is None:
            self._max_mapped = packet.timestamp
        elif packet.ssrc == self._prev_ssrc and seq_delta(packet.sequence_number, self._prev_seq) <= 0:
            return False
        else:
            self._ssrc_changes += 1
            self._seq_floor = self._prev_seq if packet.ssrc == self._prev_ssrc else None
            self._prev_ssrc, self._prev_seq = self._ssrc, self._max_seq & 0xFFFF
            self._max_mapped = self._arrival_mapped(arrival)
            self._max_seq = (self._max_seq >> 16) + 2 << 16
            self._last_seq = None
        self._ssrc = packet.ssrc
        self._max_seq = (self._max_seq & ~0xFFFF) | packet.sequence_number
        self._max_raw = packet.timestamp
        self._max_arrival = arrival
        self._pkt_candidate = 0
        return True

    def _advance(self, packet: RtpPacket, d_seq: int, mapped: int, arrival: float) -> int:
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
        self._max_raw = packet.timestamp
        self._max_mapped = mapped
        self._max_arrival = arrival
        return mapped

    def _arrival_mapped(self, arrival: float) -> int:
        """Timeline position for a packet with no usable timestamp relation: typical transit, frame-aligned,
        after everything already mapped."""
        want = round((arrival - self._r_mean) * self._clock)
        if self._started:
            want = self._cursor + max(0, round((want - self._cursor) / self._frame)) * self._frame
        return max(want, self._max_mapped + self._pkt_samples)

    def _place(self, entry: _Entry) -> None:
        if entry.ts in self._store or entry.ts in self._recent:
            self._duplicate += 1
            return
        transit = entry.arrival - entry.ts / self._clock
        self._observed += 1
        self._r_mean += (transit - self._r_mean) * (_EWMA if self._observed > 64 else 1 / self._observed)
        if self._hist is not None:  # before playout starts, the buffered packets are the observations
            self._hist.add(transit)
        if self._started and entry.ts < self._cursor and (self._gap_since_audio or entry.ts <= self._last_ts):
            self._late += 1
            self._retarget_due = True
            return
        self._store[entry.ts] = entry
        heapq.heappush(self._heap, entry.ts)
        if len(self._store) > self._max_packets:
            oldest = self._store.pop(heapq.heappop(self._heap))
            self._overflow += 1
            if self._started:
                self._cursor = max(self._cursor, oldest.ts + self._pkt_samples)
                self._gap_since_audio = True

    # ------------------------------------------------------------------ pop

    def pop(self, now: float) -> JitterFrame:
        """The next frame to play at `now` (one per call, always)."""
        if not self._started and not self._try_start(now):
            return JitterFrame(FrameKind.SILENCE, b"", 0, False)
        self._pops += 1
        if self._retarget_due or self._pops % _RETARGET_EVERY == 0:
            self._retarget()
        # current playout offset minus the target, in frames (> 0: more delay than wanted)
        excess = round((now - self._cursor / self._clock - self._origin) / self._frame_s) - self._k_target
        if excess > self._max_excess:
            excess = self._catch_up(excess)
        if excess > 0 and self._last_pop is not None:
            self._excess_cost += excess * self._frame_s * 1000 * (now - self._last_pop)
        elif excess <= 0:
            self._excess_cost = 0.0
        self._last_pop = now
        nxt = self._store[self._heap[0]] if self._heap else None
        if nxt is not None and nxt.ts < self._cursor + self._frame:
            return self._play(self._maybe_shrink_by_drop(nxt), now)
        return self._fill_gap(nxt, now, excess)

    def _try_start(self, now: float) -> bool:
        if not self._store or now < min(e.arrival for e in self._store.values()) + self._initial_s:
            return False
        self._started = True
        self._cursor = self._heap[0]
        span = (_RANGE_MARGIN_S, self._max_delay_s + _RANGE_MARGIN_S)
        self._origin = now - self._cursor / self._clock  # the playout offset at start: target k = 0
        self._hist = _TransitHistogram(self._origin, self._frame_s, span, self._forget)
        for e in self._store.values():
            self._hist.add(e.arrival - e.ts / self._clock)
        return True

    def _retarget(self) -> None:
        self._retarget_due = False
        hist = self._hist
        if hist is None or hist.samples < _MIN_SAMPLES:
            return
        base = self._r_mean - hist.origin
        k_lo = math.ceil((self._min_delay_s + base) / self._frame_s)
        k_hi = max(k_lo, math.floor((self._max_delay_s + base) / self._frame_s))
        k, gain_ms = hist.best_offset(k_lo, k_hi, self._frame_s * 1000, self._late_cost, self._k_target)
        if k > self._k_target or gain_ms > self._shrink_margin_ms:
            self._k_target = k

    def _catch_up(self, excess: int) -> int:
        """Far too much delay (pops stopped for a while, say): jump to the target, dropping what it skips."""
        self._cursor += excess * self._frame
        self._gap_since_audio = True
        while self._heap and self._heap[0] < self._cursor:
            del self._store[heapq.heappop(self._heap)]
            self._discarded += 1
            self._shrunk += 1
        return 0

    def _maybe_shrink_by_drop(self, nxt: _Entry) -> _Entry:
        """Last resort when too much delay has lasted too long: drop `nxt` if its successor can play now."""
        heap = self._heap
        if self._excess_cost < self._drop_cost or len(heap) < 2:
            return nxt
        second = min(heap[1:3])
        if second != nxt.ts + self._pkt_samples:
            return nxt
        heapq.heappop(heap)
        del self._store[nxt.ts]
        self._remember(nxt.ts)
        self._discarded += 1
        self._shrunk += 1
        self._excess_cost = 0.0
        return self._store[second]

    def _play(self, entry: _Entry, now: float) -> JitterFrame:
        heapq.heappop(self._heap)
        del self._store[entry.ts]
        end = entry.ts + self._pkt_samples
        if end > self._cursor:
            self._cursor = end
        self._last_ts = entry.ts
        self._gap_since_audio = False
        if self._last_seq is not None and entry.seq > self._last_seq + 1:
            self._skipped += entry.seq - self._last_seq - 1
        self._last_seq = entry.seq
        self._played += 1
        self._conceal_run = 0
        wait = now - entry.arrival
        self._wait_sum += wait
        self._wait_ewma += (wait - self._wait_ewma) * (_EWMA if self._played > 64 else 1 / self._played)
        self._remember(entry.ts)
        return JitterFrame(FrameKind.AUDIO, entry.packet.payload, entry.ts & 0xFFFFFFFF, entry.packet.marker)

    def _fill_gap(self, nxt: _Entry | None, now: float, excess: int) -> JitterFrame:
        """Nothing is due: shrink by skipping the gap if wanted, else play silence or concealment."""
        silent = False
        if nxt is not None:
            if excess > 0:
                skip = min(excess, (nxt.ts - self._cursor) // self._frame)
                self._cursor += skip * self._frame
                self._gap_since_audio = True
                if nxt.ts < self._cursor + self._frame:
                    return self._play(nxt, now)
                excess -= skip
            silent = nxt.packet.marker or self._last_seq is None or nxt.seq == self._last_seq + 1
        slot = self._cursor
        self._gap_since_audio = True
        if excess >= 0:
            self._cursor += self._frame
        if not silent:
            self._conceal_run += 1
            if self._conceal_run <= self._max_conceal:
                self._concealed += 1
                return JitterFrame(FrameKind.CONCEALED, b"", slot & 0xFFFFFFFF, False)
        return JitterFrame(FrameKind.SILENCE, b"", slot & 0xFFFFFFFF, False)

    def _remember(self, ts: int) -> None:
        self._recent[ts] = None
        if len(self._recent) > _PLAYED_MEMORY:
            del self._recent[next(iter(self._recent))]

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters and delays."""
        hist = self._hist
        planned = (
            self._initial_s if hist is None else hist.origin + self._k_target * self._frame_s - self._r_mean
        )
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
            target_delay_ms=1000 * planned,
        )
