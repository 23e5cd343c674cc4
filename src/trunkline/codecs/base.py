"""The codec contract: the `Codec` protocol every codec implements and the `CodecSpec` SDP negotiates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

PCM_DTYPE = np.dtype(np.int16)
"""Every codec takes and returns mono native-endian int16 PCM."""

BytesLike = bytes | bytearray | memoryview
"""What decoders accept: any contiguous byte buffer (a datagram slice need not be copied to `bytes`)."""


class CodecError(ValueError):
    """Input a codec cannot process (wrong dtype, odd length, truncated payload); adapters count and drop."""


class UnsupportedCodecError(CodecError):
    """No codec is registered for this (encoding name, RTP clock rate, channels)."""

    def __init__(self, name: str, rtp_clock_rate_hz: int, channels: int = 1) -> None:
        super().__init__(f"unsupported codec {name}/{rtp_clock_rate_hz}/{channels}")
        self.name = name
        self.rtp_clock_rate_hz = rtp_clock_rate_hz
        self.channels = channels


@runtime_checkable
class Codec(Protocol):
    """One direction-agnostic codec instance. Stateful codecs (G.722) need one instance per leg and
    direction; stateless ones (G.711, L16) may be shared."""

    name: str
    rtp_clock_rate_hz: int
    sample_rate_hz: int
    default_payload_type: int | None

    def encode(self, pcm: np.ndarray) -> bytes:
        """Mono int16 PCM at `sample_rate_hz` → RTP payload bytes."""
        ...

    def decode(self, payload: bytes) -> np.ndarray:
        """RTP payload bytes → mono int16 PCM at `sample_rate_hz`."""
        ...


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """What the SDP layer negotiates: `name/rtp_clock_rate_hz[/channels]` in an rtpmap, plus the PCM rate
    the codec works at (which differs from the RTP clock for G.722)."""

    name: str
    rtp_clock_rate_hz: int
    sample_rate_hz: int
    default_payload_type: int | None
    channels: int = 1

    @property
    def key(self) -> tuple[str, int]:
        """Registry key: (upper-case encoding name, RTP clock rate)."""
        return (self.name.upper(), self.rtp_clock_rate_hz)

    def frame_samples(self, duration_ms: int) -> int:
        """PCM samples per channel in `duration_ms`, e.g. 160 for PCMU at 20 ms, 320 for G.722."""
        return self.sample_rate_hz * duration_ms // 1000

    def timestamp_increment(self, duration_ms: int) -> int:
        """RTP timestamp ticks per frame of `duration_ms` (160 for G.722 at 20 ms, per RFC 3551)."""
        return self.rtp_clock_rate_hz * duration_ms // 1000


def check_pcm(pcm: object) -> None:
    """Raise CodecError unless `pcm` is a native int16 numpy array. Hot paths test
    `getattr(pcm, "dtype", None) is PCM_DTYPE` inline first and only call this when that fails."""
    if not isinstance(pcm, np.ndarray):
        raise CodecError(f"expected an int16 numpy array, got {type(pcm).__name__}")
    if pcm.dtype != PCM_DTYPE:
        raise CodecError(f"expected int16 PCM, got {pcm.dtype}")
