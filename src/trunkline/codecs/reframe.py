"""Cut a stream of arbitrarily sized PCM chunks into exact fixed-size frames (20 ms for RTP, VAD, ASR)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trunkline.codecs.base import PCM_DTYPE, CodecError


class Reframer:
    """Buffers the remainder between pushes. Returned frames never alias the caller's input or each other's
    future contents, so callers may reuse their input buffers."""

    __slots__ = ("_buffer", "_dtype", "_pending", "frame_samples")

    def __init__(self, frame_samples: int, dtype: npt.DTypeLike = PCM_DTYPE) -> None:
        if frame_samples <= 0:
            raise CodecError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._dtype = np.dtype(dtype)
        self._buffer = np.zeros(frame_samples, dtype=self._dtype)
        self._pending = 0

    @property
    def pending_samples(self) -> int:
        """Samples held back, waiting for the rest of their frame (always < frame_samples)."""
        return self._pending

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Append `pcm` (1-D, the reframer's dtype) and return every frame completed, oldest first."""
        if pcm.dtype != self._dtype or pcm.ndim != 1:
            raise CodecError(f"expected 1-D {self._dtype} samples, got {pcm.ndim}-D {pcm.dtype}")
        frame = self.frame_samples
        frames: list[np.ndarray] = []
        start = 0
        if self._pending:
            start = min(frame - self._pending, len(pcm))
            self._buffer[self._pending : self._pending + start] = pcm[:start]
            self._pending += start
            if self._pending < frame:
                return frames
            frames.append(self._buffer)
            self._buffer = np.zeros(frame, dtype=self._dtype)  # the completed frame now belongs to the caller
            self._pending = 0
        whole = (len(pcm) - start) // frame
        if whole:
            end = start + whole * frame
            frames.extend(pcm[start:end].reshape(whole, frame).copy())  # one copy; rows are the frames
            start = end
        rest = len(pcm) - start
        if rest:
            self._buffer[:rest] = pcm[start:]
            self._pending = rest
        return frames

    def flush(self, pad: bool = True) -> list[np.ndarray]:
        """Return the pending samples as a last frame (zero-padded to frame_samples if `pad`), or []."""
        if not self._pending:
            return []
        if pad:
            self._buffer[self._pending :] = 0
            last = self._buffer
        else:
            last = self._buffer[: self._pending]
        self._buffer = np.zeros(self.frame_samples, dtype=self._dtype)
        self._pending = 0
        return [last]

    def clear(self) -> int:
        """Drop the pending samples (barge-in) and return how many were dropped."""
        dropped, self._pending = self._pending, 0
        return dropped
