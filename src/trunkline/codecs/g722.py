"""G.722 at 64 kbit/s over the `g722` package (module `G722`, sippy's libg722): 16 kHz PCM, 8 kHz RTP clock.

G.722 is an ADPCM codec with memory, so an instance holds one encoder and one decoder state: use one instance
per leg and direction (or at least never feed two streams through one instance). RFC 3551 keeps the RTP
clock at 8000 Hz for historical reasons although the audio is sampled at 16 kHz: 20 ms = 320 samples =
160 payload octets = 160 timestamp ticks.
"""

from __future__ import annotations

import numpy as np
from G722 import G722 as _G722State

from trunkline.codecs.base import PCM_DTYPE, BytesLike, CodecError, check_pcm

G722_BIT_RATE_BPS = 64000  # the only mode RFC 3551 payload type 9 carries


class G722Codec:
    """G.722, RTP payload type 9. Encoding needs an even number of samples (two per output octet)."""

    name = "G722"
    rtp_clock_rate_hz = 8000
    sample_rate_hz = 16000
    default_payload_type: int | None = 9

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # One libg722 object owns an independent encoder context and decoder context.
        self._state = _G722State(self.sample_rate_hz, G722_BIT_RATE_BPS)

    def encode(self, pcm: np.ndarray) -> bytes:
        """16 kHz mono int16 PCM (even length) → G.722 octets, one per two samples."""
        if getattr(pcm, "dtype", None) is not PCM_DTYPE:
            check_pcm(pcm)
        if len(pcm) & 1:
            # libg722 consumes samples in pairs; an odd tail would be read past the end or dropped.
            raise CodecError(f"G.722 encodes sample pairs; got {len(pcm)} samples")
        encoded: bytes = self._state.encode(np.ascontiguousarray(pcm))
        return encoded

    def decode(self, payload: BytesLike) -> np.ndarray:
        """G.722 octets → 16 kHz mono int16 PCM, two samples per octet."""
        if type(payload) is not bytes:
            payload = bytes(payload)  # the extension accepts only `bytes`, not bytearray/memoryview
        # Depending on the release, decode returns array.array('h') or an int16 ndarray: both are buffers.
        return np.frombuffer(self._state.decode(payload), PCM_DTYPE)
