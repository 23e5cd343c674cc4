"""The outbound queue: frames out in order, exact playout positions, flush (barge-in), hold, bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.codecs.g711 import ulaw_encode
from trunkline.mediaserver.outbound import OutboundQueue, OutboundQueueFull, PlayoutPosition

FRAME = 160


def ramp(n: int, start: int = 1) -> np.ndarray:
    return (np.arange(start, start + n) % 30000).astype(np.int16)


def drain(q: OutboundQueue, limit: int = 10_000) -> list[np.ndarray]:
    frames = []
    for _ in range(limit):
        frame = q.next_frame()
        if frame is None:
            break
        frames.append(frame.copy())
    return frames


def test_idle_queue_gives_no_frame() -> None:
    q = OutboundQueue(8000, FRAME)
    assert q.next_frame() is None
    assert q.flush() == []
    assert q.underruns == 0


def test_chunks_come_out_as_exact_frames_in_order() -> None:
    q = OutboundQueue(8000, FRAME)
    pcm = ramp(1000)
    for piece in np.array_split(pcm, 7):  # chunk sizes unrelated to the frame size
        q.enqueue("u1", piece)
    q.end_utterance("u1")
    frames = drain(q)
    assert all(f.shape == (FRAME,) and f.dtype == np.int16 for f in frames)
    out = np.concatenate(frames)
    assert len(frames) == 7  # ceil(1000 / 160)
    np.testing.assert_array_equal(out[:1000], pcm)
    assert not out[1000:].any()  # the last frame is padded with silence
    assert q.take_finished() == [PlayoutPosition("u1", 1000, 1000, True)]
    assert q.take_finished() == []


def test_flush_mid_utterance_reports_samples_sent() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("u1", ramp(1600))
    for _ in range(3):
        assert q.next_frame() is not None
    positions = q.flush()
    assert positions == [PlayoutPosition("u1", 480, 1600, False)]
    assert q.next_frame() is None  # takes effect on the very next frame
    assert q.queued_samples == 0


def test_flush_reports_queued_but_unstarted_utterances_too() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("a", ramp(200), final=True)
    q.enqueue("b", ramp(300), final=True)
    assert q.next_frame() is not None
    positions = q.flush()
    assert positions == [PlayoutPosition("a", 160, 200, False), PlayoutPosition("b", 0, 300, False)]


def test_utterances_do_not_share_a_frame_and_complete_in_order() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("a", ramp(200, 1), final=True)
    q.enqueue("b", ramp(170, 5000), final=True)
    frames = drain(q)
    assert len(frames) == 4
    np.testing.assert_array_equal(frames[1][:40], ramp(40, 161))
    assert not frames[1][40:].any()
    np.testing.assert_array_equal(frames[2], ramp(160, 5000))
    assert q.take_finished() == [PlayoutPosition("a", 200, 200, True), PlayoutPosition("b", 170, 170, True)]


def test_a_new_utterance_completes_an_unended_one() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("a", ramp(320))
    q.enqueue("b", ramp(320), final=True)
    drain(q)
    assert [p.utterance_id for p in q.take_finished()] == ["a", "b"]


def test_played_tracks_position_and_underrun_is_counted() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("u", ramp(320))
    assert q.played("u") == PlayoutPosition("u", 0, 320, False)
    q.next_frame()
    q.next_frame()
    assert q.played("u") == PlayoutPosition("u", 320, 320, False)
    assert q.next_frame() is None  # TTS has not delivered the next chunk yet
    assert q.underruns == 1
    q.enqueue("u", ramp(160))
    q.end_utterance("u")
    assert q.next_frame() is not None
    assert q.take_finished() == [PlayoutPosition("u", 480, 480, True)]
    assert q.played("u") is None


def test_ending_after_all_audio_went_out_completes_at_once() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("u", ramp(320))
    drain(q)
    assert q.take_finished() == []
    q.end_utterance("u")
    assert q.take_finished() == [PlayoutPosition("u", 320, 320, True)]


def test_pause_keeps_position() -> None:
    q = OutboundQueue(8000, FRAME)
    pcm = ramp(640)
    q.enqueue("u", pcm, final=True)
    first = q.next_frame()
    assert first is not None
    np.testing.assert_array_equal(first, pcm[:160])
    q.pause()
    assert q.paused
    assert q.next_frame() is None
    assert q.played("u") == PlayoutPosition("u", 160, 640, False)
    q.resume()
    rest = np.concatenate(drain(q))
    np.testing.assert_array_equal(rest, pcm[160:])


def test_bounded_queue_rejects_whole_chunk() -> None:
    q = OutboundQueue(8000, FRAME, max_queued_s=0.1)  # 800 samples
    q.enqueue("u", ramp(700))
    with pytest.raises(OutboundQueueFull):
        q.enqueue("u", ramp(200))
    assert q.queued_samples == 700
    q.next_frame()
    q.enqueue("u", ramp(200))
    assert q.queued_samples == 740


def test_enqueue_copies_input() -> None:
    q = OutboundQueue(8000, FRAME)
    pcm = ramp(160)
    q.enqueue("u", pcm)
    pcm[:] = 0
    frame = q.next_frame()
    assert frame is not None and frame.any()


@given(
    utterances=st.lists(
        st.tuples(st.lists(st.integers(min_value=0, max_value=700), max_size=4), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    flush_after=st.integers(min_value=0, max_value=60),
)
def test_flush_accounts_for_every_sample(utterances: list[tuple[list[int], bool]], flush_after: int) -> None:
    """Samples reported played never exceed the frames taken; played + dropped == total enqueued."""
    q = OutboundQueue(8000, FRAME)
    total = 0
    for i, (sizes, final) in enumerate(utterances):
        for size in sizes:
            q.enqueue(f"u{i}", ramp(size))
            total += size
        if final:
            q.end_utterance(f"u{i}")
    taken = 0
    for _ in range(flush_after):
        if q.next_frame() is None:
            break
        taken += 1
    finished = q.take_finished()
    positions = q.flush()
    reports = finished + positions
    assert sum(p.samples_total for p in reports) == total
    played = sum(p.samples_played for p in reports)
    assert played <= taken * FRAME
    assert all(p.completed for p in finished)
    assert all(0 <= p.samples_played <= p.samples_total for p in positions)
    if taken < flush_after:  # the queue ran empty: everything went out
        assert played == total


def test_reusing_an_ended_utterance_id_while_playing_is_an_error() -> None:
    q = OutboundQueue(8000, FRAME)
    q.enqueue("u", ramp(320), final=True)
    with pytest.raises(ValueError):
        q.enqueue("u", ramp(10))
    drain(q)
    q.enqueue("u", ramp(10), final=True)  # finished: the id may be used again
    assert q.queued_samples == 10


@given(sizes=st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=8))
def test_next_payload_is_the_encoded_next_frame(sizes: list[int]) -> None:
    """The pre-encoded fast path yields exactly encode(next_frame()) and the same positions."""
    with_encoder = OutboundQueue(8000, FRAME, encoder=ulaw_encode)
    plain = OutboundQueue(8000, FRAME)
    for i, size in enumerate(sizes):
        for q in (with_encoder, plain):
            q.enqueue(f"u{i // 2}", ramp(size, 100 * i), final=(i % 2 == 1))
    while True:
        payload = with_encoder.next_payload()
        frame = plain.next_frame()
        if frame is None:
            assert payload is None
            break
        assert payload == ulaw_encode(frame)
    assert with_encoder.take_finished() == plain.take_finished()
