"""RTP receive statistics (RFC 3550 A.1, A.3, A.8): extended sequence numbers with source validation,
loss, duplicates and interarrival jitter for one SSRC. Time is passed in; one `update` call per packet."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_DUP_MASK = (1 << 128) - 1  # "seen" history behind the highest sequence number; > MAX_MISORDER
_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000


@dataclass(frozen=True, slots=True)
class LossInterval:
    """Loss over one reporting interval (RFC 3550 A.3) plus the cumulative figures for a report block."""

    expected: int
    lost: int
    fraction_lost: int  # 0..255, fixed point lost/expected * 256 over the interval
    cumulative_lost: int  # clamped to the 24-bit signed field of a report block
    extended_highest_seq: int


def _shift_in(seen: int, run: int) -> int:
    """The duplicate-detection bits after `run` more in-sequence packets."""
    return ((seen << run) | ((1 << run) - 1)) & _DUP_MASK if run else seen


class ReceiveStats:
    """Per-SSRC receive statistics.

    `received` counts distinct packets (duplicates are counted apart in `duplicates`, unlike the RFC's
    counter, so cumulative loss is not masked by retransmitted copies). Jitter is in RTP timestamp units.
    """

    __slots__ = (
        "_bad_seq",
        "_clock_rate_hz",
        "_expected_prior",
        "_jitter",
        "_last_arrival_s",
        "_last_ts",
        "_min_sequential",
        "_received_prior",
        "_seen",
        "bad_packets",
        "base_seq",
        "cycles",
        "duplicates",
        "max_seq",
        "probation",
        "received",
        "restarts",
    )

    def __init__(self, clock_rate_hz: int, min_sequential: int = MIN_SEQUENTIAL) -> None:
        if clock_rate_hz <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate_hz}")
        self._clock_rate_hz = clock_rate_hz
        self._min_sequential = max(1, min_sequential)
        self.max_seq = -1  # no packet yet
        self.base_seq = 0
        self.cycles = 0
        self.probation = self._min_sequential
        self._bad_seq = SEQ_MOD + 1
        self.received = 0
        self.duplicates = 0
        self.bad_packets = 0  # probation misses, large jumps not (yet) confirmed as a restart
        self.restarts = 0
        self._seen = 0  # bit i set = extended seq (highest - i) received
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival_s: float | None = None
        self._last_ts = 0

    @property
    def extended_highest_seq(self) -> int:
        """Highest sequence number received, extended with the count of 2^16 wraps (cycles)."""
        return self.cycles + self.max_seq if self.max_seq >= 0 else 0

    @property
    def expected(self) -> int:
        """Packets expected since the base sequence number (A.3)."""
        if self.received == 0:  # source not validated yet
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received, as the RFC computes it (may be negative only after restarts)."""
        return self.expected - self.received

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate (A.8) in RTP timestamp units."""
        return self._jitter

    @property
    def jitter_s(self) -> float:
        """Interarrival jitter in seconds."""
        return self._jitter / self._clock_rate_hz

    def update(self, seq: int, rtp_timestamp: int, arrival_s: float) -> bool:
        """Account one packet; True if it is valid (source validated and not a duplicate or a wild jump).

        Probation packets return False: the caller may still play them, they only don't count yet.
        """
        if self.probation:
            return self._probation_step(seq, rtp_timestamp, arrival_s)
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if 0 < udelta < MAX_DROPOUT:
            if seq < max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & _DUP_MASK
        elif udelta == 0 or udelta > SEQ_MOD - MAX_MISORDER:
            back = udelta and SEQ_MOD - udelta
            if self.cycles + max_seq - back < self.base_seq:
                self.bad_packets += 1  # older than the first validated packet: outside our accounting
                return False
            bit = 1 << back
            if self._seen & bit:
                self.duplicates += 1
                return False
            self._seen |= bit
        elif seq == self._bad_seq:
            # two sequential packets after a large jump: the source restarted; start over
            self.restarts += 1
            self._init_seq(seq)
            self._last_arrival_s = None
        else:
            self._bad_seq = (seq + 1) & 0xFFFF
            self.bad_packets += 1
            return False
        self.received += 1
        self._jitter_step(rtp_timestamp, arrival_s)
        return True

    def update_all(self, packets: Iterable[tuple[int, int, float]]) -> None:
        """update() for each (seq, rtp_timestamp, arrival_s), in order: the same result, cheaper per packet
        (the session defers its per-packet updates and folds them in now and then). In-sequence packets
        take a short path in local variables; anything else goes through update()."""
        probation, max_seq, seen, received = self.probation, self.max_seq, self._seen, self.received
        jitter, last_arrival, last_ts = self._jitter, self._last_arrival_s, self._last_ts
        rate = self._clock_rate_hz
        run = 0  # in-sequence packets not yet shifted into `seen` (one shift per run, not per packet)
        for seq, ts, arrival in packets:
            if seq != max_seq + 1 or probation or last_arrival is None:  # (a wrap to 0 is not "+ 1")
                self.max_seq, self._seen, self.received = max_seq, _shift_in(seen, run), received
                self._jitter, self._last_arrival_s, self._last_ts = jitter, last_arrival, last_ts
                self.update(seq, ts, arrival)
                probation, max_seq, seen, received = self.probation, self.max_seq, self._seen, self.received
                jitter, last_arrival, last_ts = self._jitter, self._last_arrival_s, self._last_ts
                run = 0
                continue
            max_seq = seq
            run += 1
            received += 1
            ts_diff = ts - last_ts  # _jitter_step(), with the 2^32 wrap only when it can matter
            if not -0x10000 < ts_diff < 0x10000:
                ts_diff = ((ts_diff + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (arrival - last_arrival) * rate - ts_diff
            if d < 0:
                d = -d
            jitter += (d - jitter) / 16.0
            last_arrival, last_ts = arrival, ts
        self.max_seq, self._seen, self.received = max_seq, _shift_in(seen, run), received
        self._jitter, self._last_arrival_s, self._last_ts = jitter, last_arrival, last_ts

    def _probation_step(self, seq: int, rtp_timestamp: int, arrival_s: float) -> bool:
        if self.max_seq < 0:  # very first packet
            self.max_seq = (seq - 1) & 0xFFFF
        if seq == (self.max_seq + 1) & 0xFFFF:
            self.probation -= 1
            self.max_seq = seq
            if self.probation == 0:
                self._init_seq(seq)
                self.received += 1
                self._jitter_step(rtp_timestamp, arrival_s)
                return True
        else:
            self.probation = self._min_sequential - 1
            self.max_seq = seq
            self.bad_packets += 1
        self._last_arrival_s = arrival_s
        self._last_ts = rtp_timestamp
        return False

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = 1  # the packet that (re)starts the count

    def _jitter_step(self, rtp_timestamp: int, arrival_s: float) -> None:
        last_arrival = self._last_arrival_s
        if last_arrival is not None:
            ts_diff = (rtp_timestamp - self._last_ts) & 0xFFFFFFFF
            if ts_diff >= 0x80000000:
                ts_diff -= 1 << 32
            d = (arrival_s - last_arrival) * self._clock_rate_hz - ts_diff
            if d < 0:
                d = -d
            self._jitter += (d - self._jitter) / 16.0
        self._last_arrival_s = arrival_s
        self._last_ts = rtp_timestamp

    def loss_interval(self) -> LossInterval:
        """Loss since the previous call (A.3), for one report block; advances the interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        cumulative = min(_LOST_MAX, max(_LOST_MIN, expected - self.received))
        return LossInterval(
            expected=expected_interval,
            lost=lost_interval,
            fraction_lost=fraction,
            cumulative_lost=cumulative,
            extended_highest_seq=self.extended_highest_seq & 0xFFFFFFFF,
        )
