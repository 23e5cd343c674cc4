"""Streaming int16 sample-rate conversion that hands out every output sample as soon as its input exists.

soxr (`resample.Resampler`) works in internal blocks: at 22.05 kHz → 8 kHz it returns nothing until it holds
~81 ms of input, then ~67 ms at once. Text-to-speech first audio waits for that block. This resampler is a
polyphase windowed-sinc FIR (Kaiser window) over the rational ratio out/in: output sample n, at time
n / out_rate_hz, is emitted once the input reaches half a filter span past that time (~2 ms here), and
`flush()` ends a stream with the same length and alignment soxr gives (no phase shift, len ≈ n_in · out/in).

The filter passes up to 85 % of the lower Nyquist frequency (3.4 kHz of 4 kHz at 8 kHz: the telephone band)
within 0.01 dB and stops from 110 % of it (4.4 kHz) at ≥ 70 dB; what lies between, above the telephone band,
is attenuated progressively.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trunkline.codecs.base import PCM_DTYPE, CodecError, check_pcm

PASS_FRACTION = 0.85  # of the lower rate's Nyquist frequency: flat up to here
STOP_FRACTION = 1.10  # attenuated by STOPBAND_DB from here (aliases land above PASS_FRACTION)
STOPBAND_DB = 70.0
_BLOCK = 4096  # output samples computed at once (a whole sentence in one call would gather ~800 B each)
_EMPTY = np.zeros(0, dtype=PCM_DTYPE)
_EMPTY.flags.writeable = False


@functools.lru_cache(maxsize=32)
def design_phases(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int, np.ndarray]:
    """(up L, down M, coefficients [L, taps]): row p weighs the `taps` input samples around an output whose
    position falls p/L of the way past an input sample; each row sums to 1 (exact DC gain). Cached and
    read-only: making it takes ~2 ms, and every TTS stream starts with it."""
    g = math.gcd(in_rate_hz, out_rate_hz)
    up, down = out_rate_hz // g, in_rate_hz // g
    nyquist_hz = min(in_rate_hz, out_rate_hz) / 2
    pass_hz, stop_hz = PASS_FRACTION * nyquist_hz, STOP_FRACTION * nyquist_hz
    transition = 2 * math.pi * (stop_hz - pass_hz) / in_rate_hz  # radians per input sample
    taps = 2 * math.ceil((STOPBAND_DB - 7.95) / (2.285 * transition) / 2 + 1)  # Kaiser's estimate, even
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    cutoff = (pass_hz + stop_hz) / 2 / in_rate_hz  # cycles per input sample
    half = taps // 2
    # tap k of phase p sits (k - half + 1) input samples after the output's base sample, minus p/L
    offsets = (np.arange(taps)[None, :] - (half - 1)) - np.arange(up)[:, None] / up
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (offsets / half) ** 2, 0.0, None))) / np.i0(beta)
    coefficients = np.sinc(2 * cutoff * offsets) * window
    coefficients /= coefficients.sum(axis=1, keepdims=True)
    table = coefficients.astype(np.float32)
    table.flags.writeable = False
    return up, down, table


class LowDelayResampler:
    """Mono int16 `in_rate_hz` → `out_rate_hz`, state kept across `process()` calls; the same interface as
    `Resampler`. One instance per stream: never interleave two streams through it."""

    __slots__ = (
        "_buffer",
        "_buffer_start",
        "_clipped",
        "_coefficients",
        "_down",
        "_half",
        "_n_in",
        "_n_out",
        "_taps",
        "_up",
        "in_rate_hz",
        "out_rate_hz",
    )

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise CodecError(f"sample rates must be positive, got {in_rate_hz} → {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._up, self._down, self._coefficients = design_phases(in_rate_hz, out_rate_hz)
        self._taps = self._coefficients.shape[1]
        self._half = self._taps // 2
        self._clipped = 0
        self._start()

    def _start(self) -> None:
        # the input before the stream is silence: output 0 lines up with input 0 (no phase shift)
        self._buffer = np.zeros(self._half - 1, np.float32)
        self._buffer_start = -(self._half - 1)
        self._n_in = 0
        self._n_out = 0

    @property
    def passthrough(self) -> bool:
        """True when the rates match and `process` returns its input unchanged (the same array)."""
        return self.in_rate_hz == self.out_rate_hz

    @property
    def delay_samples(self) -> float:
        """Output samples still owed for the input so far (at most half a filter span, ~2 ms)."""
        if self.passthrough:
            return 0.0
        return max(0.0, self._n_in * self._up / self._down - self._n_out)

    @property
    def clipped_samples(self) -> int:
        """Output samples clipped to the int16 range since the last flush/reset."""
        return self._clipped

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample the next chunk of a continuous stream: every output sample whose input is now complete."""
        if getattr(pcm, "dtype", None) is not PCM_DTYPE:
            check_pcm(pcm)
        if self.passthrough:
            return pcm
        self._buffer = np.concatenate((self._buffer, pcm.astype(np.float32)))
        self._n_in += len(pcm)
        return self._emit(self._n_in - 1 - self._half)

    def flush(self) -> np.ndarray:
        """End the stream: the remaining output (input beyond the end taken as silence), then start afresh."""
        if self.passthrough:
            return _EMPTY
        self._buffer = np.concatenate((self._buffer, np.zeros(self._half, np.float32)))
        # round(n_in · out / in) samples in all, as soxr ends a stream
        total = (2 * self._n_in * self._up + self._down) // (2 * self._down)
        tail = self._emit(self._n_in - 1, limit=total)
        self.reset()
        return tail

    def reset(self) -> None:
        """Drop held input and filter history (barge-in, a new utterance) without producing output."""
        self._clipped = 0
        self._start()

    def _emit(self, last_base: int, limit: int | None = None) -> np.ndarray:
        """Outputs whose base input sample is at most `last_base` (all their taps are in the buffer)."""
        end = -(-(last_base + 1) * self._up // self._down) if last_base >= 0 else 0
        if limit is not None:
            end = min(end, limit)
        if end <= self._n_out:
            return _EMPTY
        windows = sliding_window_view(self._buffer, self._taps)
        out = np.empty(end - self._n_out, np.float32)
        for start in range(self._n_out, end, _BLOCK):  # blocks bound the gathered rows' memory
            n = np.arange(start, min(end, start + _BLOCK), dtype=np.int64)
            base = n * self._down // self._up
            phase = n * self._down - base * self._up
            rows = windows[base - (self._half - 1) - self._buffer_start]
            out[start - self._n_out : start - self._n_out + len(n)] = np.einsum(
                "nk,nk->n", rows, self._coefficients[phase]
            )
        self._n_out = end
        keep_from = end * self._down // self._up - (self._half - 1)
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        rounded = np.rint(out)
        clipped = int(np.count_nonzero((rounded > 32767) | (rounded < -32768)))
        if clipped:
            self._clipped += clipped
            rounded = np.clip(rounded, -32768, 32767)
        return rounded.astype(PCM_DTYPE)
