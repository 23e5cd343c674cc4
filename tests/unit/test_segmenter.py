"""Speech segmenter: exact virtual-clock scenarios and hypothesis properties of its event grammar."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.vad.segmenter import (
    EndReason,
    SegmenterState,
    SilenceStarted,
    SpeechContinuing,
    SpeechEnded,
    SpeechResumed,
    SpeechSegmenter,
    SpeechStarted,
)

FRAME = 160  # 20 ms at 8 kHz


def frame(i: int) -> np.ndarray:
    """Frame number i: every sample holds i, so the test can see which frames an event's audio holds."""
    return np.full(FRAME, i, dtype=np.int16)


def t(i: int) -> float:
    """`now` for frame i: the end of the audio it holds (frame 0 covers 0-20 ms)."""
    return (i + 1) * 0.02


def ids(audio: np.ndarray) -> list[int]:
    return [int(v) for v in audio[::FRAME]]


def feed(seg: SpeechSegmenter, flags: list[int], first: int = 0) -> list[tuple[int, object]]:
    out = []
    for k, flag in enumerate(flags):
        i = first + k
        out.extend((i, ev) for ev in seg.push(frame(i), bool(flag), t(i)))
    return out


def without_continuing(events: list[tuple[int, object]]) -> list[tuple[int, object]]:
    return [(i, e) for i, e in events if not isinstance(e, SpeechContinuing)]


def test_silence_alone_emits_nothing() -> None:
    seg = SpeechSegmenter()
    assert feed(seg, [0] * 100) == []
    assert seg.state is SegmenterState.QUIET


def test_speech_start_carries_pre_roll_and_onset() -> None:
    seg = SpeechSegmenter(start_frames=3, pre_roll_ms=300)
    events = feed(seg, [0] * 20 + [1] * 3)
    assert len(events) == 1
    i, ev = events[0]
    assert i == 22 and isinstance(ev, SpeechStarted)
    assert ev.onset_s == pytest.approx(0.40)  # start of frame 20
    assert ev.now_s == pytest.approx(t(22))
    assert ev.pre_roll_samples == 15 * FRAME  # 300 ms
    assert ids(ev.audio) == list(range(5, 23))
    assert ev.speech_ms == 60
    assert seg.state is SegmenterState.SPEAKING


def test_pre_roll_is_shorter_at_the_start_of_a_call() -> None:
    seg = SpeechSegmenter(start_frames=2, pre_roll_ms=300)
    (_, ev), *_ = feed(seg, [0, 0, 1, 1])
    assert isinstance(ev, SpeechStarted)
    assert ev.pre_roll_samples == 2 * FRAME
    assert ids(ev.audio) == [0, 1, 2, 3]


def test_isolated_blips_do_not_start_speech() -> None:
    seg = SpeechSegmenter(start_frames=3, start_window_frames=5)
    assert feed(seg, [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0] * 4) == []
    assert seg.state is SegmenterState.QUIET


def test_three_speech_frames_within_the_window_start_speech_at_the_first() -> None:
    seg = SpeechSegmenter(start_frames=3, start_window_frames=5, pre_roll_ms=40)
    events = feed(seg, [0, 0, 0, 1, 0, 1, 0, 1])
    assert [type(e) for _, e in events] == [SpeechStarted]
    i, ev = events[0]
    assert i == 7
    assert isinstance(ev, SpeechStarted)
    assert ev.onset_s == pytest.approx(0.06)
    assert ids(ev.audio) == [1, 2, 3, 4, 5, 6, 7]
    assert ev.speech_ms == 60


def test_window_slides_past_an_early_blip() -> None:
    """The first blip falls out of the window and into the pre-roll; onset is the next speech frame."""
    seg = SpeechSegmenter(start_frames=3, start_window_frames=4, pre_roll_ms=1000)
    events = feed(seg, [1, 0, 0, 1, 1, 1])
    (i, ev), *_ = events
    assert i == 5 and isinstance(ev, SpeechStarted)
    assert ev.onset_s == pytest.approx(0.06)
    assert ev.pre_roll_samples == 3 * FRAME


def test_silence_started_marks_the_end_of_the_last_speech_frame() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2, pre_roll_ms=0)
    events = without_continuing(feed(seg, [1] * 10 + [0, 0, 0]))
    assert [type(e) for _, e in events] == [SpeechStarted, SilenceStarted]
    i, ev = events[1]
    assert i == 11 and isinstance(ev, SilenceStarted)
    assert ev.silence_start_s == pytest.approx(0.20)  # frame 9 ended at 200 ms
    assert ev.now_s == pytest.approx(t(11))
    assert ids(ev.audio) == list(range(12))
    assert seg.speech_end_s == pytest.approx(0.20)


def test_one_silent_frame_inside_speech_is_not_a_silence() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2)
    events = without_continuing(feed(seg, [1, 1, 1, 1, 0, 1, 1, 0, 1, 1]))
    assert [type(e) for _, e in events] == [SpeechStarted]


def test_speech_resumed_needs_resume_frames_in_a_row() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2, resume_frames=2)
    flags = [1] * 5 + [0] * 3 + [1, 0] + [0] * 3 + [1, 1]
    events = without_continuing(feed(seg, flags))
    assert [type(e) for _, e in events] == [SpeechStarted, SilenceStarted, SpeechResumed]
    i, ev = events[2]
    assert i == 14 and isinstance(ev, SpeechResumed)
    assert ev.resumed_s == pytest.approx(0.26)  # frame 13 starts at 260 ms
    assert ev.speech_ms == 40
    assert seg.state is SegmenterState.SPEAKING


def test_end_utterance_returns_audio_through_speech_end_plus_tail() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2, pre_roll_ms=40, tail_ms=60)
    feed(seg, [0] * 4 + [1] * 6 + [0] * 20)
    ended = seg.end_utterance(t(29))
    assert isinstance(ended, SpeechEnded)
    assert ended.reason is EndReason.ENDPOINT
    assert ended.onset_s == pytest.approx(0.08)
    assert ended.end_s == pytest.approx(0.20)
    assert ended.now_s == pytest.approx(t(29))
    assert ids(ended.audio) == list(range(2, 13))  # 2 pre-roll, 6 speech, 3 tail
    assert seg.state is SegmenterState.QUIET
    assert seg.end_utterance(t(30)) is None


def test_end_utterance_while_speaking_keeps_all_audio() -> None:
    seg = SpeechSegmenter(start_frames=3, pre_roll_ms=0)
    feed(seg, [1] * 8)
    ended = seg.end_utterance(t(7))
    assert ended is not None
    assert ended.end_s == pytest.approx(t(7))
    assert ids(ended.audio) == list(range(8))


def test_end_silence_ms_ends_the_utterance_by_itself() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2, end_silence_ms=200, pre_roll_ms=0, tail_ms=0)
    events = without_continuing(feed(seg, [1] * 5 + [0] * 15))
    assert [type(e) for _, e in events] == [SpeechStarted, SilenceStarted, SpeechEnded]
    i, ev = events[2]
    assert isinstance(ev, SpeechEnded)
    assert i == 14  # frame 14 ends at 300 ms = 100 ms of speech end + 200 ms
    assert ev.reason is EndReason.SILENCE
    assert ids(ev.audio) == [0, 1, 2, 3, 4]


def test_max_utterance_ms_forces_an_end_mid_speech() -> None:
    seg = SpeechSegmenter(start_frames=3, max_utterance_ms=1000, pre_roll_ms=0)
    events = without_continuing(feed(seg, [1] * 80))
    ends = [(i, e) for i, e in events if isinstance(e, SpeechEnded)]
    assert ends[0][0] == 49  # onset 0.0, frame 49 ends at 1.0 s
    assert ends[0][1].reason is EndReason.MAX_LENGTH
    assert isinstance(events[2][1], SpeechStarted)  # the rest of the speech starts a new utterance


def test_stream_of_continuing_frames_completes_the_started_audio() -> None:
    seg = SpeechSegmenter(start_frames=3, stop_frames=2, pre_roll_ms=100, tail_ms=1000)
    events = feed(seg, [0] * 10 + [1] * 8 + [0] * 4 + [1] * 5 + [0] * 6)
    started = next(e for _, e in events if isinstance(e, SpeechStarted))
    frames = [e.frame for _, e in events if isinstance(e, SpeechContinuing)]
    stream = np.concatenate([started.audio, *frames])
    ended = seg.end_utterance(t(len(events) + 100))
    assert ended is not None
    assert np.array_equal(stream, ended.audio)
    assert ids(stream) == list(range(5, 33))


def test_reset_drops_the_pre_roll() -> None:
    seg = SpeechSegmenter(start_frames=1, pre_roll_ms=100)
    feed(seg, [0] * 5)
    seg.reset()
    (_, ev), *_ = feed(seg, [1], first=5)
    assert isinstance(ev, SpeechStarted)
    assert ev.pre_roll_samples == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_ms": 0},
        {"start_frames": 0},
        {"start_frames": 6, "start_window_frames": 5},
        {"stop_frames": 0},
        {"resume_frames": 0},
        {"pre_roll_ms": -1},
        {"end_silence_ms": 0},
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SpeechSegmenter(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    flags=st.lists(st.booleans(), max_size=300),
    ends=st.sets(st.integers(0, 299), max_size=10),
    pre_roll_ms=st.sampled_from([0, 20, 100, 300, 310]),
    start_frames=st.integers(1, 4),
    stop_frames=st.integers(1, 4),
    resume_frames=st.integers(1, 3),
    end_silence_ms=st.sampled_from([None, 100, 500]),
)
def test_event_grammar_and_bounds(
    flags: list[bool],
    ends: set[int],
    pre_roll_ms: int,
    start_frames: int,
    stop_frames: int,
    resume_frames: int,
    end_silence_ms: int | None,
) -> None:
    """Started (Continuing | Silence | Resumed)* Ended, never an End without a Start; pre-roll bounded;
    SilenceStarted only while speaking and SpeechResumed only after it; ended audio is the started stream's
    prefix."""
    seg = SpeechSegmenter(
        start_frames=start_frames,
        start_window_frames=4,
        stop_frames=stop_frames,
        resume_frames=resume_frames,
        pre_roll_ms=pre_roll_ms,
        end_silence_ms=end_silence_ms,
        max_utterance_ms=2000,
    )
    open_utt = False
    in_silence = False
    stream: list[np.ndarray] = []
    pre_roll_cap = -(-pre_roll_ms // 20) * FRAME
    for i, flag in enumerate(flags):
        events: list[object] = list(seg.push(frame(i), flag, t(i)))
        if i in ends and (ended := seg.end_utterance(t(i))) is not None:
            events.append(ended)
        for ev in events:
            if isinstance(ev, SpeechStarted):
                assert not open_utt
                assert ev.pre_roll_samples <= pre_roll_cap
                assert ev.onset_s < ev.now_s
                open_utt, in_silence, stream = True, False, [ev.audio]
            elif isinstance(ev, SpeechContinuing):
                assert open_utt
                stream.append(ev.frame)
            elif isinstance(ev, SilenceStarted):
                assert open_utt and not in_silence
                in_silence = True
            elif isinstance(ev, SpeechResumed):
                assert open_utt and in_silence
                in_silence = False
            elif isinstance(ev, SpeechEnded):
                assert open_utt
                full = np.concatenate(stream)
                assert np.array_equal(ev.audio, full[: ev.audio.size])
                assert ev.onset_s <= ev.end_s <= ev.now_s + 1e-9
                open_utt = False
        assert seg.in_utterance == open_utt
