"""Packet-loss concealment by pitch-based waveform substitution, in the spirit of ITU-T G.711 Appendix I.

While frames are missing, `conceal()` repeats the last pitch period(s) of the played signal; the pitch period
is the lag (5–15 ms) with the highest normalised autocorrelation over the recent history. One period is
repeated for the first 10 ms, then two, then three from 20 ms on (the loop grows where it wraps, so
seamlessly), which sounds less buzzy on long losses. The output fades linearly from 10 ms into the loss and is
silent from 60 ms on. The first synthetic samples carry a decaying offset so the waveform continues the last
real sample without a step, and when real audio returns `good()` overlap-adds it with the continued synthetic
signal (4 ms, plus 4 ms per further 10 ms lost, at most 10 ms). Pure numpy, one frame at a time; works at any
rate (8 and 16 kHz are what the media path uses).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_PITCH_MIN_MS = 5.0
_PITCH_MAX_MS = 15.0
_FADE_START_MS = 10.0
_SILENT_AFTER_MS = 60.0
_MAX_PERIODS = 3


class Concealer:
    """Conceals lost frames of one stream: call `good()` for every real frame, `conceal()` for each gap."""

    def __init__(self, sample_rate_hz: int, frame_samples: int) -> None:
        if sample_rate_hz < 4000 or frame_samples <= 0:
            raise ValueError(f"unsupported rate {sample_rate_hz} Hz / frame of {frame_samples} samples")
        self._frame = frame_samples
        per_ms = sample_rate_hz / 1000
        self._per_ms = per_ms
        self._pmin = round(_PITCH_MIN_MS * per_ms)
        self._pmax = round(_PITCH_MAX_MS * per_ms)
        self._corr = self._pmax  # correlation window: one longest period
        self._history = np.zeros(_MAX_PERIODS * self._pmax + self._pmax // 4 + 1 + self._corr)
        self._dtype: np.dtype = np.dtype(np.int16)
        self._lost = 0  # samples concealed in the current loss
        self._period = self._pmax
        self._write = 0  # ring-buffer position of the next sample in _history
        self._source = self._history  # the history, in order, as it was when the loss began
        self._loop = np.zeros(1)
        self._pos = 0
        self._periods = 0
        self._offset = 0.0  # continuity correction still to fade out

    @property
    def concealing(self) -> bool:
        """True between a conceal() and the next good()."""
        return self._lost > 0

    def good(self, pcm: np.ndarray) -> np.ndarray:
        """A real frame (any length): returned as is (the same array), except right after a concealed stretch,
        when its start is overlap-added with the continued synthetic signal. Play what this returns."""
        self._dtype = pcm.dtype
        if not self._lost or not pcm.size:
            self._push_history(pcm)
            return pcm
        x = pcm.astype(np.float64)
        ola_ms = min(10.0, 4.0 + 0.4 * max(0.0, self._lost / self._per_ms - 10))
        ola = max(1, min(x.size, round(ola_ms * self._per_ms)))
        synth = self._synthesise(ola)
        ramp = (np.arange(ola) + 0.5) / ola
        x[:ola] = synth * (1 - ramp) + x[:ola] * ramp
        self._lost = 0
        self._push_history(x)
        return self._cast(x)

    def conceal(self) -> np.ndarray:
        """One frame standing in for a missing one."""
        if not self._lost:
            self._start_loss()
        out = self._synthesise(self._frame)
        self._push_history(out)
        return self._cast(out)

    def _start_loss(self) -> None:
        h = self._source = np.concatenate((self._history[self._write :], self._history[: self._write]))
        self._period = self._estimate_pitch(h)
        self._periods = 0
        self._pos = 0
        self._set_periods(1)
        # the waveform one period back continued from h[-p-1]; carry the step to h[-1] and let it fade
        self._offset = float(h[-1] - h[-self._period - 1])

    def _estimate_pitch(self, h: np.ndarray) -> int:
        """Lag in [pmin, pmax] whose segment best matches the last `corr` samples (normalised correlation)."""
        corr, pmin, pmax = self._corr, self._pmin, self._pmax
        template = h[-corr:]
        windows = sliding_window_view(h[: h.size - pmin], corr)  # windows[s] = h[s : s + corr]
        start = h.size - corr - pmax
        segs = windows[start : start + pmax - pmin + 1]  # lags pmax .. pmin
        energy = np.einsum("ij,ij->i", segs, segs) * float(template @ template)
        if energy.max() <= 1e-9:
            return pmax
        score = (segs @ template) / np.sqrt(energy + 1e-12)
        return int(pmax - np.argmax(score))

    def _set_periods(self, m: int) -> None:
        """Loop over the last m pitch periods; the loop's end is blended into what preceded its start, so
        wrapping around is as smooth as the original signal."""
        p, h = self._period, self._source
        length = m * p
        loop = h[-length:].copy()
        q = max(1, p // 4)
        ramp = (np.arange(q) + 0.5) / q
        loop[-q:] = loop[-q:] * (1 - ramp) + h[-length - q : -length] * ramp
        if self._periods:  # keep the phase: position i in the old loop is i + p·(m − old) in the new one
            self._pos += (m - self._periods) * p
        self._loop = loop
        self._periods = m

    def _synthesise(self, n: int) -> np.ndarray:
        """The next n samples of the attenuated periodic continuation (advances the loss clock)."""
        out = np.empty(n)
        done = 0
        while done < n:
            want = min(_MAX_PERIODS, 1 + int(self._lost / self._per_ms // 10))
            if want > self._periods and self._pos == 0:  # grow the loop only where it wraps: seamless
                self._set_periods(want)
            step = n - done
            if self._periods < _MAX_PERIODS:
                step = min(step, self._loop.size - self._pos)
            idx = (self._pos + np.arange(step)) % self._loop.size
            out[done : done + step] = self._loop[idx] * self._gain(self._lost + np.arange(step))
            self._pos = (self._pos + step) % self._loop.size
            self._lost += step
            done += step
        if self._offset:
            k = np.arange(n)
            decay = np.clip(1 - k / max(1, self._period // 2), 0, None)
            out += self._offset * decay * self._gain(self._lost - n + k)
            self._offset = 0.0
        return out

    def _gain(self, lost_samples: np.ndarray) -> np.ndarray:
        ms = lost_samples / self._per_ms
        return np.clip(1 - (ms - _FADE_START_MS) / (_SILENT_AFTER_MS - _FADE_START_MS), 0.0, 1.0)

    def _push_history(self, x: np.ndarray) -> None:
        """Append to the ring buffer of played samples (one or two slice copies; no shifting)."""
        h, n, w = self._history, x.size, self._write
        if n >= h.size:
            h[:] = x[-h.size :]
            self._write = 0
            return
        first = min(n, h.size - w)
        h[w : w + first] = x[:first]
        if first < n:
            h[: n - first] = x[first:]
        self._write = (w + n) % h.size

    def _cast(self, x: np.ndarray) -> np.ndarray:
        if np.issubdtype(self._dtype, np.integer):
            info = np.iinfo(self._dtype)
            return np.clip(np.rint(x), info.min, info.max).astype(self._dtype)
        return x.astype(self._dtype)
