"""A leg's outbound audio queue: utterances arrive in chunks (as TTS makes them) and leave in 20 ms frames.

Pure and synchronous. It knows, per utterance, how many samples went out, so a barge-in `flush()` can report
exactly what the caller heard; `pause()`/`resume()` (hold) keep the position. One frame per pacer tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_INT16 = np.dtype(np.int16)


class OutboundQueueFull(Exception):
    """The chunk would take the queue beyond its bound; nothing was enqueued. Retry once it has drained."""


@dataclass(frozen=True, slots=True)
class PlayoutPosition:
    """How far an utterance got: samples sent on the wire out of those enqueued so far."""

    utterance_id: str
    samples_played: int
    samples_total: int
    completed: bool


class _Utterance:
    __slots__ = ("ended", "played", "total", "utterance_id")

    def __init__(self, utterance_id: str) -> None:
        self.utterance_id = utterance_id
        self.total = 0
        self.played = 0  # samples sent, except those taken from the queue's head chunk (its `_offset`)
        self.ended = False


class OutboundQueue:
    """FIFO of (utterance, chunk); `next_frame()` returns exactly `frame_samples` int16 samples or None.

    An utterance completes when all its samples have gone out and it was ended (`end_utterance`, or
    `enqueue(..., final=True)`), or another utterance's audio starts after it. Completions are appended to
    `finished` for the adapter to drain. A frame spanning the end of an ended utterance is padded with
    zeros rather than mixed with the next utterance, so positions stay exact.
    """

    __slots__ = (
        "_chunks",
        "_encoder",
        "_frame",
        "_max_samples",
        "_offset",
        "_paused",
        "_queued",
        "_utterances",
        "finished",
        "frame_samples",
        "sample_rate_hz",
        "underruns",
    )

    def __init__(
        self,
        sample_rate_hz: int,
        frame_samples: int,
        max_queued_s: float = 120.0,
        encoder: Callable[[np.ndarray], bytes] | None = None,
    ) -> None:
        if sample_rate_hz <= 0 or frame_samples <= 0:
            raise ValueError("sample rate and frame size must be positive")
        self.sample_rate_hz = sample_rate_hz
        self.frame_samples = frame_samples
        self._max_samples = max(frame_samples, int(max_queued_s * sample_rate_hz))
        # With a stateless one-octet-per-sample encoder (G.711) each chunk is encoded once as it is queued,
        # so the pacer only slices bytes (next_payload); stateful codecs encode frame by frame instead.
        self._encoder = encoder
        self._chunks: deque[tuple[_Utterance, np.ndarray, bytes, int]] = deque()  # (.., pcm, encoded, size)
        # Samples taken from the head chunk. Per frame only this moves: the head chunk's utterance and the
        # queue's count are brought up to date when the chunk is done (or asked about).
        self._offset = 0
        self._queued = 0  # samples in the queued chunks, the head chunk's taken ones included
        self._utterances: dict[str, _Utterance] = {}  # with audio queued, partly played or not yet ended
        self._paused = False
        self._frame = np.zeros(frame_samples, dtype=np.int16)  # scratch for frames built from pieces
        self.finished: list[PlayoutPosition] = []
        self.underruns = 0  # frames padded or missed because an unended utterance ran dry

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be sent."""
        return self._queued - self._offset

    @property
    def queued_s(self) -> float:
        """Seconds of audio waiting to be sent."""
        return (self._queued - self._offset) / self.sample_rate_hz

    @property
    def paused(self) -> bool:
        """True while on hold: frames are not taken from the queue."""
        return self._paused

    def enqueue(self, utterance_id: str, pcm: np.ndarray, final: bool = False) -> None:
        """Append one chunk (int16 mono at the queue's rate, copied); raises OutboundQueueFull if too much,
        ValueError if the utterance was already ended and has not finished playing."""
        chunk = np.array(pcm, dtype=_INT16, copy=True).reshape(-1)
        queued = self._queued - self._offset
        if queued + chunk.size > self._max_samples:
            raise OutboundQueueFull(
                f"{chunk.size} samples would exceed the bound of {self._max_samples} ({queued} queued)"
            )
        utt = self._utterances.get(utterance_id)
        if utt is not None and utt.ended:
            raise ValueError(f"utterance {utterance_id!r} was ended and is still playing")
        if utt is None:
            utt = _Utterance(utterance_id)
            self._utterances[utterance_id] = utt
        if chunk.size:
            utt.total += chunk.size
            encoded = self._encoder(chunk) if self._encoder is not None else b""
            self._chunks.append((utt, chunk, encoded, chunk.size))
            self._queued += chunk.size
        if final:
            self.end_utterance(utterance_id)

    def end_utterance(self, utterance_id: str) -> None:
        """No more chunks will come for this utterance; it completes once its audio has gone out."""
        utt = self._utterances.get(utterance_id)
        if utt is None or utt.ended:
            return
        utt.ended = True
        if utt.played == utt.total and not any(c[0] is utt for c in self._chunks):
            self._complete(utt)

    def next_frame(self) -> np.ndarray | None:
        """The next frame to send (valid until the next call), or None when idle or paused."""
        chunks = self._chunks
        if self._paused or not chunks:
            self._idle()
            return None
        head = chunks[0]
        off = self._offset
        end = off + self.frame_samples
        if end < head[3]:  # the common case: a view into the head chunk
            self._offset = end
            return head[1][off:end]
        return self._assemble()

    def next_payload(self) -> bytes | None:
        """Like next_frame() but already encoded (needs the queue's `encoder`): the pacer's fast path."""
        chunks = self._chunks
        if self._paused or not chunks:
            self._idle()
            return None
        head = chunks[0]
        off = self._offset
        end = off + self.frame_samples
        if end < head[3]:
            self._offset = end
            return head[2][off:end]
        encoder = self._encoder
        if encoder is None:
            raise ValueError("next_payload() needs an encoder")
        return encoder(self._assemble())

    def _idle(self) -> None:
        if not self._paused and self._utterances and any(u.played for u in self._utterances.values()):
            self.underruns += 1  # an unended utterance ran dry: TTS is slower than real time

    def _assemble(self) -> np.ndarray:
        """Build a frame from the head chunk's tail and following chunks of the same utterance."""
        frame = self._frame
        filled = 0
        n = self.frame_samples
        first = self._chunks[0][0]
        while filled < n and self._chunks:
            utt, chunk, _, size = self._chunks[0]
            if utt is not first:
                break
            take = min(n - filled, size - self._offset)
            frame[filled : filled + take] = chunk[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset == size:  # the chunk is done: account for it
                self._chunks.popleft()
                utt.played += size
                self._queued -= size
                self._offset = 0
        if filled < n:
            frame[filled:] = 0
        if not any(c[0] is first for c in self._chunks):
            if first.ended:
                self._complete(first)
            elif filled < n:
                self.underruns += 1
            if self._chunks:  # the next utterance started: the previous one is over
                self._complete_if_open(first)
        return frame

    def _complete_if_open(self, utt: _Utterance) -> None:
        if self._utterances.get(utt.utterance_id) is utt:
            self._complete(utt)

    def _complete(self, utt: _Utterance) -> None:
        utt.ended = True
        if self._utterances.get(utt.utterance_id) is utt:
            del self._utterances[utt.utterance_id]
        self.finished.append(self._position(utt, True))

    def _position(self, utt: _Utterance, completed: bool) -> PlayoutPosition:
        played = utt.played
        if self._chunks and self._chunks[0][0] is utt:
            played += self._offset  # taken from the head chunk, not yet accounted
        return PlayoutPosition(utt.utterance_id, played, utt.total, completed)

    def played(self, utterance_id: str) -> PlayoutPosition | None:
        """Where an utterance with audio queued, partly played or not yet ended stands; None otherwise."""
        utt = self._utterances.get(utterance_id)
        return None if utt is None else self._position(utt, False)

    def flush(self) -> list[PlayoutPosition]:
        """Drop everything queued at once (barge-in) and say how much of each open utterance went out."""
        positions = [self._position(u, False) for u in self._utterances.values() if u.total or u.played]
        self._chunks.clear()
        self._offset = 0
        self._queued = 0
        self._utterances.clear()
        return positions

    def pause(self) -> None:
        """Stop taking frames (hold) without losing the position."""
        self._paused = True

    def resume(self) -> None:
        """Continue from where pause() stopped."""
        self._paused = False

    def take_finished(self) -> list[PlayoutPosition]:
        """Completions since the last call, oldest first."""
        done = self.finished
        self.finished = []
        return done
