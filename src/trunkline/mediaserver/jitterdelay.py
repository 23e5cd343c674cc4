"""The jitter buffer's delay estimator (pure): transit statistics of one stream, the playout offset they
call for, and the buffering delay of the packets played.

Each packet's transit (arrival − RTP timestamp / clock) updates a running mean and, once playout has started,
an exponentially forgetting histogram whose bins line up with the playout offsets a 20 ms pacer can realise
(one frame wide: the choice only needs the weight beyond each offset, and wide bins keep its scan short).
The target offset k (frames above the offset playout started with) minimises
`k × frame + late_cost × share of packets later than k`: Gaussian jitter is covered to a high quantile, while
rare delay spikes are not worth a permanently higher delay. The target rises at once and falls only when that
clearly pays (by more than `shrink_margin_ms`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_MIN_SAMPLES = 25  # transit observations before the target may move
_BINS_PER_FRAME = 1  # bin edges at the realisable offsets; finer bins only lengthen the scan
_EWMA = 1 / 64
_RANGE_MARGIN_S = 2.0  # histogram span beyond the delay bounds (clock drift, route changes)
_FORGOTTEN = 1e-6  # bins at the edges holding less than this share of the weight are outliers long gone


class DelayEstimator:
    """Transit mean and histogram of one stream; `retarget()` moves `k_target`. Time is passed in.

    The caller appends each packet's transit to `pending`, and each played packet's buffering delay to
    `waits` (a list append is the cheapest per-packet step); they are folded in, in order, before anything
    reads the statistics."""

    __slots__ = (
        "_bin_s",
        "_bins",
        "_forget",
        "_frame_s",
        "_hi",
        "_late_cost",
        "_lo",
        "_max_delay_s",
        "_mean_s",
        "_min_delay_s",
        "_observed",
        "_off",
        "_played",
        "_shrink_margin_ms",
        "_total",
        "_wait_ewma",
        "_wait_sum",
        "_weight",
        "k_target",
        "origin_s",
        "pending",
        "waits",
    )

    def __init__(
        self,
        frame_s: float,
        min_delay_s: float,
        max_delay_s: float,
        late_cost_ms: float,
        forget_packets: int,
        shrink_margin_ms: float,
    ) -> None:
        self._frame_s = frame_s
        self._bin_s = frame_s / _BINS_PER_FRAME
        self._min_delay_s = min_delay_s
        self._max_delay_s = max_delay_s
        self._late_cost = late_cost_ms  # ms per unit share of late packets
        self._forget = 1 - 1 / forget_packets
        self._shrink_margin_ms = shrink_margin_ms
        self.pending: list[float] = []  # transits (s) of packets since the last fold: append one per packet
        self.waits: list[float] = []  # buffering delays (s) of packets played since the last fold
        self._played = 0
        self._wait_sum = self._wait_ewma = 0.0
        self._mean_s = 0.0  # mean transit, EWMA
        self._observed = 0
        self.origin_s = 0.0  # the playout offset at start (target k = 0), set by start()
        self.k_target = 0
        self._bins: list[float] | None = None  # None until playout starts
        self._off = math.ceil(_RANGE_MARGIN_S / self._bin_s)  # bin index of transit == origin
        self._weight = 1.0  # forgetting grows each new sample's weight instead of decaying every bin
        self._total = 0.0
        self._lo = self._hi = 0  # occupied bin range

    def fold(self) -> None:
        """Fold the pending transits into the mean and (once playout started) the histogram, and the waits
        into the delay statistics."""
        if self.waits:
            self._fold_waits()
        pending = self.pending
        if not pending:
            return
        n, mean = self._observed, self._mean_s
        for transit in pending:
            n += 1
            mean += (transit - mean) * (_EWMA if n > 64 else 1 / n)
        self._observed, self._mean_s = n, mean
        if self._bins is not None:
            self._count(self._bins, pending)
        pending.clear()

    def _count(self, bins: list[float], transits: list[float]) -> None:
        """Add transits to the histogram, each weighing 1/forget times the one before (the forgetting)."""
        origin, bin_s, off, last = self.origin_s, self._bin_s, self._off, len(bins) - 1
        lo, hi, weight, total, forget = self._lo, self._hi, self._weight, self._total, self._forget
        ceil = math.ceil
        for transit in transits:
            i = ceil((transit - origin) / bin_s) + off
            if i < 0:
                i = 0
            elif i > last:
                i = last
            if i < lo:
                lo = i
            if i > hi:
                hi = i
            weight /= forget
            bins[i] += weight
            total += weight
        if weight > 1e12:  # renormalise now and then; only ratios matter
            self._bins = [b / weight for b in bins]
            total /= weight
            weight = 1.0
        self._lo, self._hi, self._weight, self._total = lo, hi, weight, total

    def _fold_waits(self) -> None:
        played, total, ewma = self._played, self._wait_sum, self._wait_ewma
        for wait in self.waits:
            played += 1
            total += wait
            ewma += (wait - ewma) * (_EWMA if played > 64 else 1 / played)
        self.waits.clear()
        self._played, self._wait_sum, self._wait_ewma = played, total, ewma

    def played(self) -> tuple[int, float, float]:
        """Packets played, their recent buffering delay (s, an EWMA) and their mean buffering delay (s)."""
        self.fold()
        mean = self._wait_sum / self._played if self._played else 0.0
        return self._played, self._wait_ewma, mean

    @property
    def mean_s(self) -> float:
        """Mean transit (s), an EWMA over the last ~64 packets."""
        self.fold()
        return self._mean_s

    def start(self, origin_s: float, transits: Iterable[float]) -> None:
        """Playout starts with offset `origin_s`; `transits` are the packets buffered to play. The mean starts
        from them alone, the histogram from the packets after them: how packets queued before playout
        arrived (a start-of-call burst, say) says little about the jitter to come."""
        self.fold()
        kept = list(transits)
        self._observed = len(kept)
        self._mean_s = sum(kept) / len(kept) if kept else self._mean_s
        self.origin_s = origin_s
        span_s = self._max_delay_s + _RANGE_MARGIN_S
        bins = self._bins = [0.0] * (self._off + math.ceil(span_s / self._bin_s) + 1)
        self._lo, self._hi = len(bins), -1

    @property
    def samples(self) -> float:
        """Effective number of histogram samples (recent ones count fully, old ones fade)."""
        return self._total / self._weight

    def planned_delay_s(self, initial_s: float) -> float:
        """Planned buffering delay of a typical packet (`initial_s` before playout starts)."""
        if self._bins is None:
            return initial_s
        return self.origin_s + self.k_target * self._frame_s - self.mean_s

    def retarget(self) -> bool:
        """Recompute the target offset from the histogram (within the delay bounds); False while there are
        too few samples to."""
        self.fold()
        if self._bins is None or self.samples < _MIN_SAMPLES:
            return False
        frame_s = self._frame_s
        base = self._mean_s - self.origin_s
        k_lo = math.ceil((self._min_delay_s + base) / frame_s)
        k_hi = max(k_lo, math.floor((self._max_delay_s + base) / frame_s))
        k, gain_ms = self.best_offset(k_lo, k_hi, frame_s * 1000, self._late_cost, self.k_target)
        if k > self.k_target or gain_ms > self._shrink_margin_ms:
            self.k_target = k
        return True

    def best_offset(
        self, k_lo: int, k_hi: int, frame_ms: float, cost: float, k_ref: int
    ) -> tuple[int, float]:
        """Offset k in [k_lo, k_hi] minimising k·frame_ms + cost·P(late at k) (ties: the smaller k), and how
        much it saves over k_ref (0 when k_ref is out of range).

        Only offsets whose edge lies within the occupied bins are scanned: above them nothing is late and
        below them everything is, so there the smallest offset wins."""
        bins = self._bins
        assert bins is not None
        self._trim(bins)
        lo, hi, off, total = self._lo, self._hi, self._off, self._total
        k_top = min(k_hi, max(k_lo, -((off - hi) // _BINS_PER_FRAME)))  # lowest k with nothing late
        best_k, best = k_hi, math.inf
        ref_cost = k_ref * frame_ms if k_top < k_ref <= k_hi else math.inf
        tail, i = 0.0, hi
        for k in range(k_top, k_lo - 1, -1):
            edge = off + _BINS_PER_FRAME * k
            while i > edge and i >= lo:
                tail += bins[i]
                i -= 1
            value = k * frame_ms + cost * tail / total
            if value <= best:
                best, best_k = value, k
            if k == k_ref:
                ref_cost = value
            if i < lo and k > k_lo:  # every bin is late from here down: k_lo is the best of the rest
                value = k_lo * frame_ms + cost * tail / total
                if value <= best:
                    best, best_k = value, k_lo
                if k_lo <= k_ref < k:
                    ref_cost = k_ref * frame_ms + cost * tail / total
                break
        return best_k, (ref_cost - best if ref_cost < math.inf else 0.0)

    def _trim(self, bins: list[float]) -> None:
        """Forget outlier bins at both ends once their weight has faded (keeps the scan short)."""
        floor = self._total * _FORGOTTEN
        while self._hi > self._lo and bins[self._hi] < floor:
            bins[self._hi] = 0.0
            self._hi -= 1
        while self._lo < self._hi and bins[self._lo] < floor:
            bins[self._lo] = 0.0
            self._lo += 1
