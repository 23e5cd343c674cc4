"""Streaming piper: the VITS voice split into text → z_p, flow z_p → z and decoder z → audio, the last two run
on chunks of frames so a sentence's first audio exists after a few frames' work, not the whole waveform's.

Flow (WaveNet couplings, kernel 5) and decoder (HiFi-GAN) are convolutional with a bounded receptive field,
so a chunk computed with enough frames of context on each side, context trimmed, equals the one-shot result
(measured on en_US-joe-medium: exact to float rounding from 24 frames of flow and 10 of decoder context;
the defaults, 20 and 8, keep the stitched audio at >= 60 dB SNR against the one-shot decode, for less work).
`plan_chunks` is the pure schedule; `StreamVoice` runs it on onnxruntime sessions; `split_voice_model`
makes the three graphs with `onnx.utils.Extractor`, and `load_split` caches them on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trunkline.logs import get_logger

log = get_logger("trunkline.pipeline.piper_stream")

SPLIT_VERSION = 1  # bump when the split changes so stale cached graphs are not used
PARTS = ("encoder", "flow", "decoder")
MIN_MATCH_DB = 40.0  # chunked audio must match the one-shot decode at least this well, else no streaming
CHECK_TEXT = "Thanks for calling, how can I help you today?"
_MAX_INT16 = 32767.0


class SplitError(RuntimeError):
    """The voice's graph does not have the layout we split (not a single-speaker piper VITS export)."""


@dataclass(frozen=True, slots=True)
class Window:
    """Run a stage on frames [run_start, run_end) and keep its output frames [keep_start, keep_end)."""

    keep_start: int
    keep_end: int
    run_start: int
    run_end: int

    @property
    def keep_offset(self) -> int:
        """Index of the first kept frame inside the run's output."""
        return self.keep_start - self.run_start


@dataclass(frozen=True, slots=True)
class Step:
    """One streaming step: compute z frames with `flow` (None when already computed), then decode."""

    flow: Window | None
    decode: Window


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Chunk sizes (in latent frames, `hop` samples each) and context frames per side for each stage."""

    first_frames: int = 4  # ~46 ms of audio: the work before the first audio stays small
    growth: float = 2.0  # each chunk must be made while the ones before it play, even on a busy box
    max_frames: int = 256  # later chunks have seconds of slack: large ones waste less work on context
    decoder_context_frames: int = 8  # chunked vs one-shot audio >= 60 dB on 8 test sentences (10: exact)
    flow_context_frames: int = 20  # with 16 it drops to ~37-46 dB, with 24 it is exact to float rounding
    flow_lookahead_chunks: int = 1

    def __post_init__(self) -> None:
        if self.first_frames < 1 or self.max_frames < self.first_frames or self.growth < 1.0:
            raise ValueError("need 1 <= first_frames <= max_frames and growth >= 1")
        if min(self.decoder_context_frames, self.flow_context_frames, self.flow_lookahead_chunks) < 0:
            raise ValueError("context frames and lookahead must be >= 0")


def chunk_bounds(n_frames: int, first_frames: int, max_frames: int, growth: float) -> list[int]:
    """Cut points 0 < b1 < ... < n_frames: a `first_frames` chunk, then chunks growing by `growth` up to
    `max_frames`; a remainder of at most half a chunk joins that chunk (a tiny chunk is mostly context)."""
    bounds, size = [0], first_frames
    while bounds[-1] < n_frames:
        left = n_frames - bounds[-1]
        bounds.append(n_frames if left - size <= size // 2 else bounds[-1] + size)
        size = min(max_frames, max(size + 1, round(size * growth)))
    return bounds


def windows(bounds: list[int], n_frames: int, context: int) -> list[Window]:
    """For each chunk between cut points, the frames to run with `context` frames either side (clipped)."""
    return [
        Window(a, b, max(0, a - context), min(n_frames, b + context)) for a, b in itertools.pairwise(bounds)
    ]


def plan_chunks(n_frames: int, settings: StreamSettings) -> list[Step]:
    """The streaming schedule for a sentence of `n_frames` latent frames. When a decoder chunk needs z frames
    not made yet, the flow makes them together with those of the next `flow_lookahead_chunks` chunks: fewer
    flow runs (less context work), and the chunk right after the first, the tightest to make while audio
    plays, needs no flow run."""
    bounds = chunk_bounds(n_frames, settings.first_frames, settings.max_frames, settings.growth)
    decode = windows(bounds, n_frames, settings.decoder_context_frames)
    steps, made = [], 0
    for k, dec in enumerate(decode):
        flow = None
        if dec.run_end > made:
            target = decode[min(k + settings.flow_lookahead_chunks, len(decode) - 1)].run_end
            flow = windows([made, target], n_frames, settings.flow_context_frames)[0]
            made = target
        steps.append(Step(flow, dec))
    return steps


def to_int16(audio: np.ndarray, volume: float = 1.0) -> np.ndarray:
    """Float audio in [-1, 1] → int16 the way piper does it (volume, clip, scale)."""
    if volume != 1.0:
        audio = audio * volume
    return np.clip(np.clip(audio, -1.0, 1.0) * _MAX_INT16, -_MAX_INT16, _MAX_INT16).astype(np.int16)


@dataclass(frozen=True, slots=True)
class SplitNames:
    """Tensor names at the cuts: prior sample z_p and frame mask (flow inputs), z (decoder input), audio."""

    z_p: str
    mask: str
    z: str
    audio: str


def find_split_names(model: Any) -> SplitNames:
    """Locate the cuts in a piper VITS graph by its node scopes: the first `/flow/` node's input is z_p, the
    first `/flow/` Mul's second input the mask, the first `/dec/` node's input is z."""
    graph = model.graph
    if any(i.name == "sid" for i in graph.input) or len(graph.output) != 1:
        raise SplitError("multi-speaker or unexpected outputs")
    flow = [n for n in graph.node if n.name.startswith("/flow/")]
    dec = [n for n in graph.node if n.name.startswith("/dec/")]
    muls = [n for n in flow if n.op_type == "Mul"]
    if not flow or not dec or not muls or len(muls[0].input) != 2:
        raise SplitError("no /flow/ or /dec/ scope in the graph")
    return SplitNames(flow[0].input[0], muls[0].input[1], dec[0].input[0], graph.output[0].name)


def split_voice_model(model_path: str | Path) -> tuple[bytes, bytes, bytes]:
    """The voice as three serialized ONNX graphs: (text → z_p, mask), (z_p, mask → z), z → audio."""
    import onnx
    import onnx.utils

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    names = find_split_names(model)
    typed = {v.name for v in model.graph.value_info}
    for name in (names.z_p, names.mask, names.z):  # the extractor needs a type at each cut
        if name not in typed:
            model.graph.value_info.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    inputs = [i.name for i in model.graph.input]
    extractor = onnx.utils.Extractor(model)
    parts = (
        extractor.extract_model(inputs, [names.z_p, names.mask]),
        extractor.extract_model([names.z_p, names.mask], [names.z]),
        extractor.extract_model([names.z], [names.audio]),
    )
    return parts[0].SerializeToString(), parts[1].SerializeToString(), parts[2].SerializeToString()


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/trunkline` (or `~/.cache/trunkline`): where split voices are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trunkline"


def _cache_key(model_path: Path) -> str:
    """By the voice file's content (~0.1 s to hash), not its path: every install (each virtualenv) of the
    same voice shares one split instead of adding 63 MB to the cache."""
    digest = hashlib.sha256(str(SPLIT_VERSION).encode())
    with model_path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return f"{model_path.stem}-{digest.hexdigest()[:16]}"


def _prune(cache_dir: Path, stem: str, key: str) -> None:
    """Remove the splits of other versions of this voice (a replaced voice file leaves nothing behind)."""
    for old in cache_dir.glob(f"{stem}-*.onnx"):
        if not old.name.startswith(f"{key}."):
            old.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_split(
    model_path: str | Path, cache_dir: str | Path | None, *, refresh: bool = False
) -> tuple[bytes, bytes, bytes]:
    """The split graphs from `cache_dir` (keyed by the voice file's content; `refresh` ignores
    what is there), else split now and store them there atomically; an unreadable or unwritable cache only
    costs the split (~0.3 s)."""
    model_path = Path(model_path)
    paths, key = [], ""
    if cache_dir is not None:
        key = _cache_key(model_path)
        paths = [Path(cache_dir) / f"{key}.{part}.onnx" for part in PARTS]
        try:
            if not refresh and all(p.is_file() for p in paths):
                return paths[0].read_bytes(), paths[1].read_bytes(), paths[2].read_bytes()
        except OSError as exc:
            log.warning("tts.split_cache_unreadable", error=type(exc).__name__)
    parts = split_voice_model(model_path)
    if paths:
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            for path, data in zip(paths, parts, strict=True):
                _write_atomic(path, data)
            _prune(paths[0].parent, model_path.stem, key)
        except OSError as exc:
            log.warning("tts.split_cache_unwritable", error=type(exc).__name__)
    return parts


class StreamVoice:
    """The three sessions of a split voice and the chunked run over them; stateless between sentences, so
    one instance serves every worker thread (onnxruntime sessions allow concurrent `run`)."""

    def __init__(self, sessions: tuple[Any, Any, Any], names: SplitNames, hop_length: int) -> None:
        self._encoder, self._flow, self._decoder = sessions
        self.names = names
        self.hop_length = hop_length

    def latent(self, phoneme_ids: list[int], scales: np.ndarray) -> np.ndarray:
        """Text encoder + duration predictor for one sentence: z_p, [1, channels, frames] float32."""
        ids = np.asarray([phoneme_ids], dtype=np.int64)
        feeds = {"input": ids, "input_lengths": np.array([ids.shape[1]], np.int64), "scales": scales}
        z_p: np.ndarray = self._encoder.run([self.names.z_p], feeds)[0]
        return z_p

    def run_flow(self, z_p: np.ndarray, window: Window) -> np.ndarray:
        """z for `window`'s kept frames."""
        part = np.ascontiguousarray(z_p[:, :, window.run_start : window.run_end])
        mask = np.ones((1, 1, part.shape[2]), np.float32)
        z: np.ndarray = self._flow.run(None, {self.names.z_p: part, self.names.mask: mask})[0]
        return z[:, :, window.keep_offset : window.keep_offset + window.keep_end - window.keep_start]

    def run_decoder(self, z: np.ndarray, window: Window) -> np.ndarray:
        """Float audio for `window`'s kept frames (`hop_length` samples per frame)."""
        part = np.ascontiguousarray(z[:, :, window.run_start : window.run_end])
        audio = self._decoder.run(None, {self.names.z: part})[0].reshape(-1)
        start = window.keep_offset * self.hop_length
        out: np.ndarray = audio[start : start + (window.keep_end - window.keep_start) * self.hop_length]
        return out

    def decode_all(self, z_p: np.ndarray) -> np.ndarray:
        """One-shot flow + decoder over the whole sentence (the reference the chunks must equal)."""
        n = z_p.shape[2]
        whole = Window(0, n, 0, n)
        return self.run_decoder(self.run_flow(z_p, whole), whole)

    def stream(self, z_p: np.ndarray, settings: StreamSettings) -> Iterator[tuple[np.ndarray, bool]]:
        """(float audio, is it the sentence's last chunk) for the sentence with latent `z_p`, chunk by chunk
        as `plan_chunks` schedules it."""
        n = z_p.shape[2]
        z = np.empty((1, z_p.shape[1], n), np.float32)
        steps = plan_chunks(n, settings)
        for k, step in enumerate(steps):
            if step.flow is not None:
                z[:, :, step.flow.keep_start : step.flow.keep_end] = self.run_flow(z_p, step.flow)
            yield self.run_decoder(z, step.decode), k == len(steps) - 1


def load_stream_voice(
    model_path: str | Path, cache_dir: str | Path | None, make_session: Any, hop_length: int
) -> StreamVoice:
    """Split `model_path` (or load its cached split) and open the three parts with `make_session(bytes)`;
    a cached split that does not open (a damaged file) is made again and replaced."""
    parts = load_split(model_path, cache_dir)
    try:
        encoder, flow, decoder = (make_session(p) for p in parts)
    except Exception as exc:
        if cache_dir is None:
            raise
        log.warning("tts.split_cache_damaged", error=type(exc).__name__)
        encoder, flow, decoder = (make_session(p) for p in load_split(model_path, cache_dir, refresh=True))
    z_p, mask = (o.name for o in encoder.get_outputs())
    if {i.name for i in flow.get_inputs()} != {z_p, mask}:
        raise SplitError("flow inputs do not match the encoder outputs")
    names = SplitNames(z_p, mask, decoder.get_inputs()[0].name, decoder.get_outputs()[0].name)
    return StreamVoice((encoder, flow, decoder), names, hop_length)


def check_stream_voice(stream: StreamVoice, voice: Any, settings: StreamSettings) -> tuple[float, float]:
    """(SNR of the split's one-shot output vs the whole model, SNR of the chunked vs one-shot output) in dB
    on `CHECK_TEXT` without noise (so the whole model is deterministic); `voice` is a `piper.PiperVoice`."""
    ids = voice.phonemes_to_ids(voice.phonemize(CHECK_TEXT)[0])
    scales = np.array([0.0, 1.0, 0.0], np.float32)
    feeds = {
        "input": np.asarray([ids], np.int64),
        "input_lengths": np.array([len(ids)], np.int64),
        "scales": scales,
    }
    whole = voice.session.run(None, feeds)[0].reshape(-1)
    z_p = stream.latent(ids, scales)
    one_shot = stream.decode_all(z_p)
    chunked = np.concatenate([audio for audio, _ in stream.stream(z_p, settings)])
    if not len(whole) == len(one_shot) == len(chunked) == z_p.shape[2] * stream.hop_length:
        raise SplitError(f"audio lengths differ: {len(whole)}, {len(one_shot)}, {len(chunked)}")
    return snr_db(whole, one_shot), snr_db(one_shot, chunked)


def sentence_scales(config: Any, length_scale: float | None = None) -> np.ndarray:
    """The model's `scales` input [noise, length, noise_w] from a `PiperConfig`, as piper builds it."""
    length = config.length_scale if length_scale is None else length_scale
    return np.array([config.noise_scale, length, config.noise_w_scale], dtype=np.float32)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of `test` against `reference` (same length), in dB; inf when identical."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    return float("inf") if noise == 0.0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))
