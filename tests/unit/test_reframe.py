"""Reframer: exact frames, remainder kept, concatenation equals the input for any split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.codecs import CodecError, Reframer


@given(st.integers(0, 2000), st.lists(st.integers(0, 2000), max_size=20), st.integers(1, 400))
def test_frames_concatenate_to_the_input_prefix(length: int, cuts: list[int], frame: int) -> None:
    pcm = np.arange(length, dtype=np.int16)  # distinct values: any loss, duplication or reordering shows
    reframer = Reframer(frame)
    frames: list[np.ndarray] = []
    consumed = 0
    for part in np.split(pcm, sorted(min(c, len(pcm)) for c in cuts)):
        frames += reframer.push(part)
        consumed += len(part)
        assert len(frames) * frame + reframer.pending_samples == consumed
        assert reframer.pending_samples < frame
    assert all(f.shape == (frame,) and f.dtype == np.int16 for f in frames)
    emitted = len(frames) * frame
    assert emitted == len(pcm) - len(pcm) % frame
    assert reframer.pending_samples == len(pcm) % frame
    joined = np.concatenate(frames) if frames else np.zeros(0, np.int16)
    assert np.array_equal(joined, pcm[:emitted])

    tail = reframer.flush(pad=False)
    rest = pcm[emitted:]
    assert (len(tail) == 1 and np.array_equal(tail[0], rest)) if len(rest) else tail == []
    assert reframer.pending_samples == 0


@given(st.integers(1, 500), st.integers(1, 160))
def test_flush_pads_with_zeros(length: int, frame: int) -> None:
    pcm = np.arange(1, length + 1, dtype=np.int16)  # no zeros, so padding is distinguishable
    reframer = Reframer(frame)
    reframer.push(pcm)
    rest = len(pcm) % frame
    tail = reframer.flush()
    if rest == 0:
        assert tail == []
    else:
        assert len(tail) == 1 and tail[0].shape == (frame,)
        assert np.array_equal(tail[0][:rest], pcm[len(pcm) - rest :])
        assert not tail[0][rest:].any()


def test_frames_do_not_alias_the_input_or_each_other() -> None:
    reframer = Reframer(4)
    source = np.arange(10, dtype=np.int16)
    first = reframer.push(source)  # [0..3] [4..7], pending 8, 9
    source[:] = -1  # the caller reuses its buffer
    second = reframer.push(np.array([10, 11, 12, 13, 14, 15], dtype=np.int16))
    assert [f.tolist() for f in first] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [f.tolist() for f in second] == [[8, 9, 10, 11], [12, 13, 14, 15]]
    later = reframer.push(np.array([20, 21, 22, 23, 24], dtype=np.int16))
    assert second[0].tolist() == [8, 9, 10, 11]  # not overwritten by later pushes
    assert [f.tolist() for f in later] == [[20, 21, 22, 23]]
    assert reframer.flush()[0].tolist() == [24, 0, 0, 0]


def test_clear_drops_pending_samples() -> None:
    reframer = Reframer(160)
    reframer.push(np.ones(100, np.int16))
    assert reframer.clear() == 100
    assert reframer.pending_samples == 0
    frames = reframer.push(np.full(160, 2, np.int16))
    assert len(frames) == 1 and np.all(frames[0] == 2)


def test_other_dtypes_and_bad_input() -> None:
    reframer = Reframer(2, dtype=np.float32)
    assert [f.tolist() for f in reframer.push(np.array([0.5, 1.5, 2.5], np.float32))] == [[0.5, 1.5]]
    with pytest.raises(CodecError):
        reframer.push(np.zeros(3, np.int16))
    with pytest.raises(CodecError):
        Reframer(4).push(np.zeros((2, 2), np.int16))
    with pytest.raises(CodecError):
        Reframer(0)
