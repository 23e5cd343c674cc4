"""The barge-in bench's pure helpers: the caller's speech onset, where the agent's speech stops, pauses and
restarts in its packet levels, and how a reply met by a backchannel is scored against a reference reply."""

from __future__ import annotations

import itertools

from bench.barge_in import plan
from bench.barge_in_scoring import (
    FRAME_NS,
    agent_call_ids,
    backchannel_outcome,
    first_halt,
    first_loud_sent,
    largest_stall_ms,
    last_loud_before,
    longest_quiet_ms,
    loud_offsets_ms,
    loud_run_before,
    loud_times,
    onset_to_ms,
    rate_pct,
    reply_shape,
    send_stalls,
    server_events,
    silent_runs,
    spurt_start,
)
from bench.sip_caller import SentFrame
from hypothesis import given
from hypothesis import strategies as st

SPEECH, FADE, SILENT = -20.0, -60.0, -120.0  # a loud packet, a clause's fading tail, digital silence


def packets(levels: list[float], start_ns: int = 0) -> list[tuple[int, float]]:
    """Agent packets 20 ms apart with these levels."""
    return [(start_ns + i * FRAME_NS, level) for i, level in enumerate(levels)]


def at(i: int) -> int:
    return i * FRAME_NS


# the reference reply: speech, a clause's fading end, a natural 4-frame gap, speech
REFERENCE_LEVELS = [SPEECH] * 20 + [FADE, FADE] + [SILENT] * 4 + [SPEECH] * 20


def reference() -> dict[str, float]:
    arrivals = packets(REFERENCE_LEVELS)
    return reply_shape(arrivals, 0, arrivals[-1][0])


def test_onset_is_the_first_loud_frame_sent_after_the_caller_started() -> None:
    sent = [SentFrame(i, at(i), lvl) for i, lvl in enumerate([-20.0, -60.0, -60.0, -50.0, -30.0, -10.0])]
    assert first_loud_sent(sent, since_ns=at(1)) == at(4)  # -50 dBFS is below the speech level
    assert first_loud_sent(sent, since_ns=0) == at(0)
    assert first_loud_sent(sent, since_ns=at(6)) is None


def test_loud_times_and_last_loud_before_a_moment() -> None:
    arrivals = packets([SPEECH, FADE, SPEECH, SILENT, SILENT, SPEECH])
    assert loud_times(arrivals, at(1), at(4)) == [at(2)]
    assert last_loud_before(arrivals, at(4)) == at(2)
    assert last_loud_before(arrivals, at(5)) == at(5)
    assert last_loud_before(arrivals, -1) is None


def test_the_answer_is_a_new_spurt_not_the_tail_of_the_reply_talked_over() -> None:
    # the reply goes on past the caller's end (frame 10), stops at 14, the answer starts at 30
    arrivals = packets([SPEECH] * 15 + [SILENT] * 15 + [SPEECH] * 5)
    assert spurt_start(arrivals, after_ns=at(10), quiet_ns=300_000_000) == at(30)
    assert spurt_start(arrivals, after_ns=at(10), quiet_ns=400_000_000) is None  # a 15-frame gap is 300 ms
    assert spurt_start(arrivals, after_ns=-1, quiet_ns=300_000_000) == at(0)


def test_silent_runs_mark_a_cut_as_abrupt_and_a_fading_clause_end_as_not() -> None:
    arrivals = packets([SPEECH, SPEECH, SILENT, SILENT, SILENT, SPEECH, FADE, SILENT, SILENT, SPEECH])
    runs = silent_runs(arrivals, 0, at(9))
    assert [(r.start_ns, r.frames, r.abrupt) for r in runs] == [(at(2), 3, True), (at(7), 2, False)]
    assert runs[0].duration_ms == 60.0 and runs[0].end_ns == at(5)
    assert silent_runs(arrivals, at(3), at(8)) == [runs[0].__class__(at(3), 2, False), runs[1]]


@given(st.lists(st.sampled_from([SPEECH, FADE, SILENT]), max_size=80), st.integers(0, 80), st.integers(0, 80))
def test_silent_runs_cover_exactly_the_silent_packets_in_the_window(
    levels: list[float], a: int, b: int
) -> None:
    arrivals = packets(levels)
    runs = silent_runs(arrivals, at(a), at(b))
    covered = {r.start_ns + k * FRAME_NS for r in runs for k in range(r.frames)}
    assert covered == {t for t, lvl in arrivals if at(a) <= t <= at(b) and lvl == SILENT}
    assert sum(r.frames for r in runs) == len(covered)  # runs never overlap
    assert all(r2.start_ns > r1.end_ns for r1, r2 in itertools.pairwise(runs))  # separated


@given(st.lists(st.floats(-120, 0), max_size=60), st.integers(-5, 65))
def test_last_loud_before_is_loud_and_nothing_loud_follows_it(levels: list[float], until: int) -> None:
    arrivals = packets(levels)
    found = last_loud_before(arrivals, at(until))
    loud = [t for t, lvl in arrivals if t <= at(until) and lvl > -45.0]
    assert found == (loud[-1] if loud else None)


def test_onset_to_stop_is_clamped_at_zero_when_the_agent_was_already_quiet() -> None:
    assert onset_to_ms(at(10), at(17)) == 140.0
    assert onset_to_ms(at(10), at(8)) == 0.0
    assert onset_to_ms(at(10), None) is None


def test_first_halt_is_the_last_loud_packet_before_three_silent_frames() -> None:
    # caller onset at frame 5; a 2-frame dip does not count, the pause at frame 12 does, then it resumes
    levels = [SPEECH] * 8 + [SILENT] * 2 + [SPEECH] * 2 + [SILENT] * 6 + [SPEECH] * 10
    arrivals = packets(levels)
    assert first_halt(arrivals, at(5), until_ns=at(27)) == at(11)
    assert last_loud_before(arrivals, at(27)) == at(27)  # it spoke again: the stop is later than the halt
    assert first_halt(arrivals, at(5), until_ns=at(11)) is None  # none began before the caller's end
    assert first_halt(packets([SPEECH] * 10), at(2), until_ns=at(9)) is None


def test_a_gap_already_under_way_at_the_onset_is_not_the_first_halt() -> None:
    # the onset falls in a natural gap (frames 10-14); the agent says 3 more frames, then pauses at 18
    levels = [SPEECH] * 10 + [SILENT] * 5 + [SPEECH] * 3 + [SILENT] * 10 + [SPEECH] * 5
    assert first_halt(packets(levels), at(12), until_ns=at(32)) == at(17)


def test_reply_shape_counts_speech_span_and_the_longest_silent_run() -> None:
    shape = reference()
    assert shape == {"speech_ms": 800.0, "span_ms": 900.0, "silent_ms": 80.0, "max_silent_run_ms": 80.0}


def score(levels: list[float], onset_frame: int) -> dict[str, object]:
    arrivals = packets(levels)
    return backchannel_outcome(arrivals, 0, at(len(levels) - 1), at(onset_frame), reference())


def test_a_reply_played_as_the_reference_continued() -> None:
    out = score(REFERENCE_LEVELS, onset_frame=5)
    assert out["outcome"] == "continued" and out["missing_ms"] == 0.0


def test_an_abrupt_halt_after_the_backchannel_is_a_pause() -> None:
    levels = [SPEECH] * 10 + [SILENT] * 6 + REFERENCE_LEVELS[10:]
    out = score(levels, onset_frame=4)
    assert out["outcome"] == "paused" and out["halt_ms"] == 120.0
    assert score(levels, onset_frame=4 + 60)["outcome"] == "continued"  # long after the backchannel: not it


def test_a_natural_gap_held_longer_than_the_reference_is_a_pause() -> None:
    levels = REFERENCE_LEVELS[:22] + [SILENT] * 10 + REFERENCE_LEVELS[26:]  # 200 ms instead of 80 ms
    assert score(levels, onset_frame=18)["outcome"] == "paused"
    levels = REFERENCE_LEVELS[:22] + [SILENT] * 6 + REFERENCE_LEVELS[26:]  # within the margin: natural
    assert score(levels, onset_frame=18)["outcome"] == "continued"


def test_a_long_halt_is_a_long_pause_and_missing_speech_is_a_cut() -> None:
    held = [SPEECH] * 10 + [SILENT] * 35 + REFERENCE_LEVELS[10:]
    assert score(held, onset_frame=5)["outcome"] == "long_pause"
    cut = [SPEECH] * 12 + [SILENT] * 40
    out = score(cut, onset_frame=5)
    assert out["outcome"] == "cut" and out["missing_ms"] == 560.0
    answered = [SPEECH] * 12 + [SILENT] * 40 + [SPEECH] * 40  # cut, then a whole new reply
    assert score(answered, onset_frame=5)["outcome"] == "said_more"


def test_server_events_from_console_and_json_log_lines() -> None:
    lines = [
        "2026-11-25T17:55:34Z [info     ] agent.barge_in   [trunkline.pipeline.hearing] reason=long_burst",
        '{"event": "agent.barge_in", "reason": "words", "cut": 0}',
        "2026-11-25T17:55:43Z [info     ] agent.backchannel_ignored  words=1",
        "2026-11-25T17:55:44Z [info     ] agent.resume_cut",
        "2026-11-25T17:55:45Z [info     ] agent.turn_heard reason=unrelated",
    ]
    assert server_events(lines) == {
        "barge_in": ["long_burst", "words"],
        "resume_cut": 1,
        "backchannel_ignored": 1,
        "decode_ms": [],
    }


A, B = "9432966a-6959-4e97-a9e4-c9f6c9408540", "006acaa8-c385-4cb7-8970-b620b5a96c62"


def test_server_events_of_one_call_and_its_decode_times() -> None:
    lines = [
        "18:16:02Z [info ] sip.call_admitted call_id=7f07da899827460dbee06468e53628d2@127.0.0.1",
        f"18:16:02Z [debug] agent.speaking   call_id={A} tenant_id=bench",
        f"18:16:03Z [debug] agent.speaking   call_id={B} tenant_id=bench",
        f"18:16:04Z [info ] agent.barge_in   call_id={A} cut=1 reason=long_burst",
        f"18:16:05Z [debug] agent.decoded    call_id={B} decode_ms=551 final=False",
        f'{{"event": "agent.decoded", "call_id": "{A}", "decode_ms": 392, "final": false}}',
        f"18:16:06Z [info ] agent.barge_in   call_id={B} cut=0 reason=words",
    ]
    assert agent_call_ids(lines) == [A, B]  # in order of appearance; the SIP Call-ID is not an agent's
    assert server_events(lines, A) == {
        "barge_in": ["long_burst"], "resume_cut": 0, "backchannel_ignored": 0, "decode_ms": [392]
    }  # fmt: skip
    assert server_events(lines, B)["barge_in"] == ["words"] and server_events(lines, B)["decode_ms"] == [551]
    assert server_events(lines)["barge_in"] == ["long_burst", "words"]


def test_loud_offsets_are_where_the_reply_is_loud_from_before_to_after() -> None:
    # loud 0-39, a gap at 40-44, loud 45-99; 20 ms frames: offsets need 3 loud frames before, 10 after
    levels = [SPEECH] * 40 + [SILENT] * 5 + [SPEECH] * 55
    offsets = loud_offsets_ms(packets(levels, start_ns=at(7)), at(7), window_ms=(0.0, 5000.0))
    frames = [round(o / 20) for o in offsets]
    assert frames == list(range(0, 30)) + list(range(48, 90))
    assert loud_offsets_ms(packets(levels), 0, window_ms=(300.0, 700.0)) == [
        float(20 * f) for f in range(15, 30)
    ]
    assert loud_offsets_ms([], 0) == []


@given(st.lists(st.sampled_from([SPEECH, FADE, SILENT]), max_size=120))
def test_every_loud_offset_has_only_loud_packets_around_it(levels: list[float]) -> None:
    arrivals = packets(levels)
    for offset in loud_offsets_ms(arrivals, 0, window_ms=(0.0, 10_000.0)):
        near = [lvl for t, lvl in arrivals if offset - 60.0 <= t / 1e6 <= offset + 200.0]
        assert len(near) == 14 and all(lvl == SPEECH for lvl in near)


def test_loud_run_before_needs_the_last_packets_to_be_loud() -> None:
    arrivals = packets([SPEECH, SPEECH, FADE, SPEECH, SPEECH, SPEECH, SILENT])
    assert loud_run_before(arrivals, at(5))
    assert not loud_run_before(arrivals, at(4))  # the fade is among the last three
    assert not loud_run_before(arrivals, at(6))
    assert not loud_run_before(arrivals, at(1))  # fewer than three packets so far


def test_send_stalls_and_the_largest_in_a_window() -> None:
    times = [0, 20, 40, 140, 141, 142, 160, 180, 250]  # ms: a 100 ms stall, its burst, then a 70 ms one
    sent = [SentFrame(i, t * 1_000_000, -20.0) for i, t in enumerate(times)]
    stalls = send_stalls(sent)
    assert stalls == [(140_000_000, 100.0), (250_000_000, 70.0)]
    assert largest_stall_ms(stalls, 0, 300_000_000) == 100.0
    assert largest_stall_ms(stalls, 200_000_000, 300_000_000) == 70.0
    assert largest_stall_ms(stalls, 0, 100_000_000) == 0.0


def test_plan_is_a_seeded_shuffle_with_the_asked_counts() -> None:
    kinds = plan(7, 6, 2, seed=7)
    assert sorted(kinds) == sorted(["interrupt"] * 7 + ["backchannel"] * 6 + ["control"] * 2)
    assert kinds == plan(7, 6, 2, seed=7)
    assert any(plan(7, 6, 2, seed=s) != kinds for s in range(8, 12))


def test_rate_pct() -> None:
    assert rate_pct(1, 6) == 16.7
    assert rate_pct(0, 0) is None


def test_the_callers_longest_pause_between_words_in_a_window() -> None:
    levels = [-20.0, -20.0, -60.0, -60.0, -20.0, -60.0, -20.0, -60.0, -60.0, -60.0]
    sent = [SentFrame(i, at(i), lvl) for i, lvl in enumerate(levels)]
    assert longest_quiet_ms(sent, 0, at(9)) == 40.0  # the trailing quiet is not between words
    assert longest_quiet_ms(sent, at(4), at(9)) == 20.0
    assert longest_quiet_ms(sent, at(7), at(9)) == 0.0
