"""Jitter buffer: exact virtual-time scenarios and hypothesis invariants."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.mediaserver.jitterbuffer import FrameKind, JitterBuffer, JitterFrame
from trunkline.mediaserver.rtp import RtpPacket, ts_delta

AUDIO, CONCEALED, SILENCE = FrameKind.AUDIO, FrameKind.CONCEALED, FrameKind.SILENCE
FRAME = 160  # 20 ms at 8 kHz


def pkt(
    i: int, *, seq0: int = 0, ts0: int = 0, ssrc: int = 1, marker: bool = False, step: int = FRAME
) -> RtpPacket:
    """Packet number i of a stream; its payload names it (i) so the test can see what played."""
    return RtpPacket(
        0, (seq0 + i) & 0xFFFF, (ts0 + i * step) & 0xFFFFFFFF, ssrc, i.to_bytes(4, "big"), marker
    )


@dataclass
class Run:
    frames: list[JitterFrame]
    jb: JitterBuffer

    @property
    def played(self) -> list[int]:
        return [int.from_bytes(f.payload, "big") for f in self.frames if f.kind is AUDIO]

    def kinds(self, kind: FrameKind) -> list[JitterFrame]:
        return [f for f in self.frames if f.kind is kind]

    def after_start(self) -> list[JitterFrame]:
        first = next(i for i, f in enumerate(self.frames) if f.kind is AUDIO)
        return self.frames[first:]

    def inner(self, kind: FrameKind) -> list[JitterFrame]:
        """Frames of `kind` between the first and the last AUDIO frame (the stream's end looks like loss)."""
        audio = [i for i, f in enumerate(self.frames) if f.kind is AUDIO]
        return [f for f in self.frames[audio[0] : audio[-1]] if f.kind is kind]


def drive(jb: JitterBuffer, arrivals: list[tuple[int, RtpPacket]], ticks: int) -> Run:
    """Pop every 20 ms from t = 0 (ms), pushing first every packet that has arrived by then."""
    pending = sorted(arrivals, key=lambda a: a[0])
    frames = []
    i = 0
    for n in range(ticks):
        now_ms = 20 * n
        while i < len(pending) and pending[i][0] <= now_ms:
            jb.push(pending[i][1], pending[i][0] / 1000)
            i += 1
        frames.append(jb.pop(now_ms / 1000))
    return Run(frames, jb)


def steady(n: int, transit_ms: int = 30, seq0: int = 0, ts0: int = 0) -> list[tuple[int, RtpPacket]]:
    """n packets sent every 20 ms from t = 0, each arriving transit_ms later."""
    return [(20 * i + transit_ms, pkt(i, seq0=seq0, ts0=ts0)) for i in range(n)]


def buffer(**kw: float) -> JitterBuffer:
    """A buffer that starts 10 ms after the first arrival: with 30 ms transit it plays 40 ms after sending."""
    return JitterBuffer(**{"initial_delay_ms": 10.0, **kw})  # type: ignore[arg-type]


def test_in_order_stream_plays_everything_with_the_expected_delay() -> None:
    run = drive(buffer(), steady(100), 102)  # two silent ticks, then the 100 packets
    assert run.played == list(range(100))
    assert run.frames[:2] == [JitterFrame(SILENCE, b"", 0, False)] * 2  # nothing before 30 + 10 ms
    assert run.frames[2].kind is AUDIO and run.frames[2].timestamp == 0
    assert [f.timestamp for f in run.kinds(AUDIO)] == [i * FRAME for i in range(100)]
    s = run.jb.stats
    assert (s.received, s.played, s.late, s.lost, s.concealed, s.duplicate) == (100, 100, 0, 0, 0, 0)
    assert s.mean_delay_ms == pytest.approx(10.0)
    assert s.current_delay_ms == pytest.approx(10.0)


def test_playout_starts_no_lower_than_the_minimum_delay() -> None:
    """A continuous stream has no silence to grow the delay in: a start below the floor would stay there."""
    run = drive(buffer(min_delay_ms=80.0), steady(100), 110)  # initial 10 ms, but never less than 80
    assert run.played == list(range(100))
    assert [f.kind for f in run.frames[:6]] == [SILENCE] * 6  # it arrives at 30 ms: not before 110 ms
    assert run.frames[6].kind is AUDIO and run.frames[6].timestamp == 0  # the first pop from then on
    assert run.jb.stats.mean_delay_ms == pytest.approx(90.0)


def test_reordered_packets_play_in_order() -> None:
    arrivals = steady(60)  # each packet is due 40 ms after sending: 10 ms after it normally arrives
    arrivals[10], arrivals[11] = (20 * 10 + 38, arrivals[10][1]), (20 * 11 + 5, arrivals[11][1])
    arrivals[30], arrivals[31] = (20 * 30 + 39, arrivals[30][1]), (20 * 31 + 1, arrivals[31][1])
    run = drive(buffer(), arrivals, 70)
    assert run.played == list(range(60))
    assert run.jb.stats.late == 0 and not run.inner(CONCEALED)


def test_duplicates_are_counted_and_played_once() -> None:
    arrivals = [*steady(40), (20 * 5 + 31, pkt(5)), (20 * 5 + 200, pkt(5)), (20 * 39 + 31, pkt(39))]
    run = drive(buffer(), arrivals, 50)
    assert run.played == list(range(40))
    assert run.jb.stats.duplicate == 3
    assert run.jb.stats.late == 0


def test_late_packet_is_dropped_and_its_slot_concealed() -> None:
    arrivals = steady(80)
    arrivals[40] = (20 * 40 + 30 + 200, arrivals[40][1])  # 200 ms behind the others
    run = drive(buffer(), arrivals, 90)
    assert run.played == [i for i in range(80) if i != 40]
    assert [f.timestamp for f in run.inner(CONCEALED)] == [40 * FRAME]
    assert not run.inner(SILENCE)
    s = run.jb.stats
    assert (s.late, s.lost, s.played) == (1, 0, 79)


def test_lost_packets_are_concealed_then_silence_after_a_long_loss() -> None:
    arrivals = [a for i, a in enumerate(steady(100)) if i not in (20, 21) and not 50 <= i < 60]
    run = drive(buffer(), arrivals, 110)
    assert run.played == [i for i in range(100) if i not in (20, 21) and not 50 <= i < 60]
    gap_kinds = [f.kind for f in run.frames if 50 * FRAME <= f.timestamp < 60 * FRAME and f.kind is not AUDIO]
    assert gap_kinds == [CONCEALED] * 3 + [SILENCE] * 7  # the PLC has faded out after 60 ms
    s = run.jb.stats
    assert (s.lost, len(run.inner(CONCEALED)), s.late) == (12, 5, 0)


def test_ssrc_change_continues_the_timeline() -> None:
    first = steady(30)
    second = [(20 * (30 + i) + 30, pkt(100 + i, seq0=40000 - 100, ts0=123456, ssrc=7)) for i in range(30)]
    straggler = (20 * 31 + 30, pkt(29))  # a duplicate of the old stream after the switch
    run = drive(buffer(), [*first, *second, straggler], 70)
    assert run.played == list(range(30)) + list(range(100, 130))
    stamps = [f.timestamp for f in run.kinds(AUDIO)]
    assert all(ts_delta(b, a) > 0 for a, b in itertools.pairwise(stamps))
    s = run.jb.stats
    assert (s.ssrc_changes, s.late, s.discarded) == (1, 0, 1)
    assert not run.inner(CONCEALED) and not run.inner(SILENCE)


@pytest.mark.parametrize("jump", [5_000_000, -5_000_000, 0x7FFFFFFF])
def test_timestamp_jump_resyncs_without_a_gap(jump: int) -> None:
    arrivals = steady(60)
    arrivals[30:] = [
        (t, pkt(i, ts0=jump)) for t, p in arrivals[30:] for i in [int.from_bytes(p.payload, "big")]
    ]
    run = drive(buffer(), arrivals, 70)
    assert run.played == list(range(60))
    stamps = [f.timestamp for f in run.kinds(AUDIO)]
    assert all(ts_delta(b, a) == FRAME for a, b in itertools.pairwise(stamps))
    s = run.jb.stats
    assert (s.resyncs, s.late, s.discarded) == (1, 0, 0)
    assert not run.inner(CONCEALED) and not run.inner(SILENCE)


def test_sequence_and_timestamp_wrap_around() -> None:
    # both wrap within the first 40 packets; packet 40 (sequence number 4) is lost; 34 overtakes 33
    wrapping = steady(80, seq0=65500, ts0=0xFFFFFFFF - 20 * FRAME + 1)
    arrivals = [a for a in wrapping if int.from_bytes(a[1].payload, "big") != 40]
    (t33, p33), (t34, p34) = arrivals[33], arrivals[34]
    arrivals[33], arrivals[34] = (t33 + 8, p33), (t34 - 25, p34)
    run = drive(buffer(), arrivals, 90)
    assert run.played == [i for i in range(80) if i != 40]
    s = run.jb.stats
    assert (s.lost, len(run.inner(CONCEALED)), s.late, s.resyncs) == (1, 1, 0, 0)


def test_silence_gap_after_a_talkspurt_is_silence_not_loss() -> None:
    talk = steady(20)
    # the next talkspurt starts 1 s later: sequence numbers continue, the timestamp jumps, marker set
    talk2 = [(20 * (70 + i) + 30, pkt(70 + i, seq0=-50, marker=i == 0)) for i in range(20)]
    run = drive(buffer(), [*talk, *talk2], 100)
    assert run.played == list(range(20)) + list(range(70, 90))
    s = run.jb.stats
    assert (s.lost, s.late) == (0, 0)
    gap = [f.kind for f in run.after_start() if 20 * FRAME <= f.timestamp < 70 * FRAME]
    # the end of a talkspurt looks like loss at first: concealed until the PLC has faded out
    assert gap.count(CONCEALED) <= 3 and gap.count(SILENCE) >= 47


def test_short_silence_with_next_packet_buffered_plays_silence_only() -> None:
    jb = buffer(initial_delay_ms=100.0, min_delay_ms=100.0)  # 130 ms of buffering, kept by min_delay
    talk = steady(20)
    talk2 = [(20 * (23 + i) + 30, pkt(23 + i, seq0=-3, marker=i == 0)) for i in range(20)]
    run = drive(jb, [*talk, *talk2], 60)
    assert run.played == list(range(20)) + list(range(23, 43))
    gap = [f.kind for f in run.after_start() if 20 * FRAME <= f.timestamp < 23 * FRAME]
    assert gap == [SILENCE] * 3
    assert not run.inner(CONCEALED) and jb.stats.lost == 0


def test_small_excess_delay_waits_for_silence_to_shrink() -> None:
    """One frame too many is held for a while (shed_after_s, 1 s): a silence sheds it without a drop."""
    jb = buffer(initial_delay_ms=30.0)  # one frame more than a jitter-free path needs
    talk = steady(60)  # the target is known ~0.5 s in, so the excess lasts 0.7 s of this talkspurt
    talk2 = [(20 * (110 + i) + 30, pkt(110 + i, seq0=-50, marker=i == 0)) for i in range(300)]
    run = drive(jb, [*talk, *talk2], 415)
    assert run.played == list(range(60)) + list(range(110, 410))  # nothing dropped in either talkspurt
    s = jb.stats
    assert (s.discarded, s.late) == (0, 0)
    talkspurt_end = [(60 + i) * FRAME for i in range(3)]
    assert [f.timestamp for f in run.inner(CONCEALED)] == talkspurt_end
    assert s.current_delay_ms == pytest.approx(10.0, abs=1.0)  # the silence was shortened by one frame


def _jittery(n: int, sigma_ms: float, seed: int, start: int = 0) -> list[tuple[int, RtpPacket]]:
    rng = random.Random(seed)
    return [(20 * i + 30 + max(0, round(rng.gauss(0, sigma_ms))), pkt(i)) for i in range(start, start + n)]


def test_target_delay_rises_fast_with_jitter_and_falls_slowly_after() -> None:
    arrivals = _jittery(500, 1.0, 1) + _jittery(500, 25.0, 2, start=500) + _jittery(3500, 1.0, 3, start=1000)
    jb = buffer()
    targets, current = {}, {}
    for n, ms in [(0, 10_000), (500, 2_000), (600, 8_000), (1000, 5_000), (1250, 70_000)]:
        drive_from(jb, [a for a in arrivals if 20 * n <= a[0] - 30 < 20 * n + ms], ms // 20, 20 * n)
        targets[n + ms // 20] = jb.stats.target_delay_ms
        current[n + ms // 20] = jb.stats.current_delay_ms
    assert targets[500] < 30  # calm
    assert targets[600] > targets[500] + 30  # 2 s into the rough patch the target has risen
    assert current[1000] > current[500] + 30  # and the buffer has grown to it
    assert targets[1250] > targets[1000] - 10  # 5 s after it, the target is still up...
    assert targets[4750] < targets[1000] - 20  # ...and comes down only after a long calm
    assert jb.stats.played > 4000


def test_single_delay_spike_does_not_raise_the_delay_for_good() -> None:
    arrivals = _jittery(1500, 2.0, 4)
    for k in range(10):  # a 200 ms spike at packet 700 that drains at 18 ms per packet
        t, p = arrivals[700 + k]
        arrivals[700 + k] = (t + 200 - 18 * k, p)
    jb = buffer()
    drive(jb, arrivals, 650)
    before = jb.stats.target_delay_ms
    drive_from(jb, arrivals[650:], 850, 650 * 20)
    assert jb.stats.target_delay_ms <= before + 20
    assert jb.stats.late <= 10


def drive_from(jb: JitterBuffer, arrivals: list[tuple[int, RtpPacket]], ticks: int, t0_ms: int) -> Run:
    shifted = [(t - t0_ms, p) for t, p in arrivals]
    pending = sorted(shifted, key=lambda a: a[0])
    frames, i = [], 0
    for n in range(ticks):
        now_ms = 20 * n
        while i < len(pending) and pending[i][0] <= now_ms:
            jb.push(pending[i][1], (pending[i][0] + t0_ms) / 1000)
            i += 1
        frames.append(jb.pop((now_ms + t0_ms) / 1000))
    return Run(frames, jb)


def drive_fifo(jb: JitterBuffer, arrivals: list[tuple[int, RtpPacket]], ticks: int, step: int) -> list[int]:
    """The leg's loop for any ptime: every 20 ms tick, pop while it holds less than one tick of audio."""
    pending, i, played, fifo = sorted(arrivals, key=lambda a: a[0]), 0, [], 0
    for n in range(ticks):
        now = 20 * n
        while i < len(pending) and pending[i][0] <= now:
            jb.push(pending[i][1], pending[i][0] / 1000)
            i += 1
        while fifo < FRAME:
            f = jb.pop(now / 1000)
            fifo += step if f.kind is AUDIO else FRAME
            if f.kind is AUDIO:
                played.append(int.from_bytes(f.payload, "big"))
        fifo -= FRAME
    return played


@pytest.mark.parametrize("ptime_ms", [10, 30, 40])
def test_other_packet_durations_play_by_timestamp(ptime_ms: int) -> None:
    step = 8 * ptime_ms
    arrivals = [(ptime_ms * i + 30, pkt(i, step=step)) for i in range(3000 // ptime_ms)]
    jb = buffer()
    assert drive_fifo(jb, arrivals, 170, step) == list(range(3000 // ptime_ms))
    assert jb.stats.late == 0 and jb.stats.concealed <= 3  # the stream's end conceals, not its middle


@pytest.mark.parametrize("ptime_ms", [20, 30])
def test_large_excess_delay_is_shed_by_dropping_a_few_packets(ptime_ms: int) -> None:
    jb = buffer(initial_delay_ms=200.0)  # ten frames too many, and no silence to shed them in
    step = 8 * ptime_ms
    n = 24_000 // ptime_ms
    played = drive_fifo(jb, [(ptime_ms * i + 30, pkt(i, step=step)) for i in range(n)], 1230, step)
    s = jb.stats
    assert s.current_delay_ms < 25
    assert 1 <= s.discarded <= 200 // ptime_ms and s.late == 0
    assert s.concealed <= 3  # at the end of the stream only
    assert played == sorted(played) and len(played) == n - s.discarded


def test_overflow_keeps_the_bound_and_the_newest_packets() -> None:
    jb = buffer(max_packets=8)
    for i in range(30):
        jb.push(pkt(i), 0.0)
    s = jb.stats
    assert (s.buffered, s.overflow_dropped) == (8, 22)
    run = drive_from(jb, [], 20, 100)
    # they arrived at once, a start-of-call burst: the oldest are skipped so the newest does not wait long
    assert run.played == list(range(30 - len(run.played), 30))
    assert jb.stats.discarded == 8 - len(run.played) and jb.stats.buffered == 0


def test_catches_up_at_once_after_pops_stopped_for_a_while() -> None:
    jb = buffer(max_packets=200)
    arrivals = steady(400)
    drive(jb, arrivals[:100], 100)  # 2 s of normal playout
    for t, p in arrivals[100:250]:  # then no pops for 3 s while packets keep coming
        jb.push(p, t / 1000)
    assert jb.stats.buffered == 150
    run = drive_from(jb, arrivals[250:], 160, 5000)
    first = run.frames[0]
    assert first.kind is AUDIO and first.timestamp == 248 * FRAME  # straight back to a 40 ms delay
    s = jb.stats
    assert s.discarded == 148 and s.late == 0
    assert s.received == s.played + s.discarded + s.buffered


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_delay_ms=300, max_delay_ms=100)
    with pytest.raises(ValueError):
        JitterBuffer(max_packets=1)


# ---------------------------------------------------------------- properties

packet_fates = st.lists(
    st.tuples(
        st.integers(0, 250),  # transit, ms
        st.sampled_from(["ok"] * 8 + ["lost", "dup", "late"]),
    ),
    min_size=1,
    max_size=120,
)


@given(
    fates=packet_fates,
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    switch_at=st.one_of(st.none(), st.integers(1, 119)),
    jump_at=st.one_of(st.none(), st.integers(1, 119)),
    max_packets=st.integers(2, 12),
)
def test_invariants_hold_for_any_arrival_pattern(
    fates: list[tuple[int, str]],
    seq0: int,
    ts0: int,
    switch_at: int | None,
    jump_at: int | None,
    max_packets: int,
) -> None:
    arrivals: list[tuple[int, RtpPacket]] = []
    for i, (transit, fate) in enumerate(fates):
        ssrc, s0, t0 = 1, seq0, ts0
        if switch_at is not None and i >= switch_at:
            ssrc, s0, t0 = 2, seq0 + 30000, ts0 + 0x12345678
        if jump_at is not None and i >= jump_at:
            t0 += 0x40000000
        p = pkt(i, seq0=s0, ts0=t0, ssrc=ssrc)
        send = 20 * i
        if fate == "lost":
            continue
        arrivals.append((send + transit, p))
        if fate == "dup":
            arrivals.append((send + transit + 7, p))
        if fate == "late":
            arrivals[-1] = (send + transit + 400, p)
    jb = JitterBuffer(max_packets=max_packets)
    pending = sorted(arrivals, key=lambda a: a[0])
    played: dict[int, list[int]] = {1: [], 2: []}
    last_audio: int | None = None
    last_any: int | None = None
    j = 0
    for n in range((pending[-1][0] if pending else 0) // 20 + 60):
        now_ms = 20 * n
        while j < len(pending) and pending[j][0] <= now_ms:
            jb.push(pending[j][1], pending[j][0] / 1000)
            j += 1
            assert jb.stats.buffered <= max_packets
        frame = jb.pop(now_ms / 1000)
        assert isinstance(frame, JitterFrame)  # one frame per pop, always: concealment instead of stalling
        if frame.kind is AUDIO:
            assert last_audio is None or ts_delta(frame.timestamp, last_audio) > 0  # never out of order
            last_audio = frame.timestamp
            i = int.from_bytes(frame.payload, "big")
            played[2 if switch_at is not None and i >= switch_at else 1].append(i)
        if last_audio is not None:
            assert last_any is None or ts_delta(frame.timestamp, last_any) >= 0
            last_any = frame.timestamp
        s = jb.stats
        assert s.received == s.played + s.late + s.duplicate + s.overflow_dropped + s.discarded + s.buffered
    for ids in played.values():
        assert ids == sorted(set(ids))  # each packet at most once, in sending order within its SSRC
    assert jb.stats.buffered == 0  # nothing is held forever
    assert jb.stats.received == len(arrivals)
