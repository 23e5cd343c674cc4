"""The chunk schedule for streaming piper (pure): chunks tile the sentence, every chunk's context is made
before it is decoded, and with contexts covering the receptive fields the stitched output equals the
one-shot output (checked on small numpy convolution stages standing in for the flow and the vocoder)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.pipeline.piper_stream import (
    SplitNames,
    StreamSettings,
    StreamVoice,
    chunk_bounds,
    plan_chunks,
    snr_db,
    to_int16,
    windows,
)

settings_st = st.builds(
    StreamSettings,
    first_frames=st.integers(1, 24),
    growth=st.floats(1.0, 4.0),
    max_frames=st.integers(24, 200),
    decoder_context_frames=st.integers(0, 12),
    flow_context_frames=st.integers(0, 30),
    flow_lookahead_chunks=st.integers(0, 3),
)


@given(st.integers(1, 1500), settings_st)
def test_chunks_tile_the_sentence_first_is_short_and_none_is_tiny(n: int, s: StreamSettings) -> None:
    bounds = chunk_bounds(n, s.first_frames, s.max_frames, s.growth)
    assert bounds[0] == 0 and bounds[-1] == n
    sizes = np.diff(bounds)
    assert (sizes > 0).all()
    assert sizes[0] == (n if n <= s.first_frames * 3 // 2 else s.first_frames)
    assert (sizes <= s.max_frames * 3 // 2 + 1).all()
    if len(sizes) > 1:  # a short remainder joins the chunk before it
        assert sizes[-1] > min(sizes[-2], s.max_frames) // 2


@given(st.integers(1, 1500), settings_st)
def test_plan_decodes_every_frame_once_after_its_context_exists(n: int, s: StreamSettings) -> None:
    steps = plan_chunks(n, s)
    decode = [step.decode for step in steps]
    assert [(w.keep_start, w.keep_end) for w in decode] == list(
        zip(chunk_bounds(n, s.first_frames, s.max_frames, s.growth)[:-1],
            chunk_bounds(n, s.first_frames, s.max_frames, s.growth)[1:], strict=True)
    )  # fmt: skip
    made = 0
    flows = []
    for step in steps:
        if step.flow is not None:
            assert step.flow.keep_start == made  # the flow continues where it stopped
            made = step.flow.keep_end
            flows.append(step.flow)
        w = step.decode
        assert w.run_start == max(0, w.keep_start - s.decoder_context_frames)
        assert w.run_end == min(n, w.keep_end + s.decoder_context_frames)
        assert w.run_end <= made  # the z frames the decoder reads were made by now
    assert made == n
    for f in flows:
        assert f.run_start == max(0, f.keep_start - s.flow_context_frames)
        assert f.run_end == min(n, f.keep_end + s.flow_context_frames)
        assert f.keep_end > f.keep_start
    if len(steps) > 1 and s.flow_lookahead_chunks >= 1:
        assert steps[1].flow is None  # the tightest step (right after the first audio) runs no flow


def test_a_short_sentence_is_one_chunk_and_a_long_one_starts_small() -> None:
    s = StreamSettings()
    assert len(plan_chunks(s.first_frames, s)) == 1
    steps = plan_chunks(300, s)
    assert steps[0].decode.keep_end == s.first_frames
    assert steps[0].decode.run_end == s.first_frames + s.decoder_context_frames
    assert [st.decode.keep_end - st.decode.keep_start for st in steps] == [4, 8, 16, 32, 64, 176]  # 48 joins


def test_windows_clip_context_at_the_edges() -> None:
    assert windows([0, 5, 20], 20, 8) == [
        windows([0, 5], 20, 8)[0],
        windows([5, 20], 20, 8)[0],
    ]
    first, second = windows([0, 5, 20], 20, 8)
    assert (first.run_start, first.run_end, first.keep_offset) == (0, 13, 0)
    assert (second.run_start, second.run_end, second.keep_offset) == (0, 20, 5)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        StreamSettings(first_frames=0)
    with pytest.raises(ValueError):
        StreamSettings(first_frames=10, max_frames=5)
    with pytest.raises(ValueError):
        StreamSettings(decoder_context_frames=-1)


def test_to_int16_applies_volume_and_clips_like_piper() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.5, -2.0], np.float32)
    assert to_int16(audio).tolist() == [0, 16383, -16383, 32767, -32767]
    assert to_int16(audio, 0.5).tolist() == [0, 8191, -8191, 24575, -32767]


# --- exactness on stand-in stages -------------------------------------------------------------------


class _ConvStage:
    """A fake onnxruntime session: zero-padded 'same' convolution along frames (receptive field `radius`
    frames each side), two layers, optional upsampling by `hop` (like a vocoder)."""

    def __init__(self, names: list[str], radius: int, hop: int = 1, seed: int = 0) -> None:
        self.names = names
        self.radius = radius
        self.hop = hop
        rng = np.random.default_rng(seed)
        # two layers whose radii add up to `radius`, a nonlinearity between them
        self.k1 = rng.standard_normal(2 * (radius // 2) + 1)
        self.k2 = rng.standard_normal(2 * (radius - radius // 2) + 1)

    @staticmethod
    def _same(row: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        r = len(kernel) // 2
        return np.convolve(np.pad(row, r), kernel, "valid")

    def run(self, _outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds[self.names[0]].astype(np.float64)
        y = np.stack([self._same(np.tanh(self._same(row, self.k1)), self.k2) for row in x[0]])
        if self.hop > 1:
            y = np.repeat(y.mean(axis=0, keepdims=True), self.hop, axis=1)
        return [y[None].astype(np.float32)]


class _Encoder:
    def __init__(self, z_p: np.ndarray) -> None:
        self.z_p = z_p

    def run(self, _outputs: Any, _feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.z_p]


@pytest.mark.parametrize("n_frames", [1, 7, 12, 40, 333])
def test_stitched_chunks_equal_one_shot_when_context_covers_the_receptive_field(n_frames: int) -> None:
    rng = np.random.default_rng(n_frames)
    z_p = rng.standard_normal((1, 3, n_frames)).astype(np.float32)
    names = SplitNames("z_p", "mask", "z", "audio")
    flow, decoder = _ConvStage(["z_p"], radius=9, seed=1), _ConvStage(["z"], radius=4, hop=16, seed=2)
    voice = StreamVoice((_Encoder(z_p), flow, decoder), names, hop_length=16)
    exact = StreamSettings(first_frames=4, growth=2.0, max_frames=64, decoder_context_frames=4,
                           flow_context_frames=9)  # fmt: skip
    one_shot = voice.decode_all(voice.latent([1, 2, 3], np.zeros(3, np.float32)))
    pieces = list(voice.stream(z_p, exact))
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    stitched = np.concatenate([audio for audio, _ in pieces])
    assert len(stitched) == len(one_shot) == n_frames * 16
    np.testing.assert_allclose(stitched, one_shot, atol=1e-5)
    short = StreamSettings(first_frames=4, growth=2.0, max_frames=64, decoder_context_frames=1,
                           flow_context_frames=2)  # fmt: skip
    cut_short = np.concatenate([audio for audio, _ in voice.stream(z_p, short)])
    if n_frames > 6:  # with too little context the seams show: the test can fail
        assert snr_db(one_shot, cut_short) < 60


def test_snr_db() -> None:
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    assert snr_db(ref, ref) == float("inf")
    assert snr_db(ref, ref * 1.1) == pytest.approx(20.0)
