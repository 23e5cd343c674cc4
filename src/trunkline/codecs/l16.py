"""L16 (RFC 3551 §4.5.11): uncompressed 16-bit signed PCM in network byte order (big-endian), mono here."""

from __future__ import annotations

import numpy as np

from trunkline.codecs.base import PCM_DTYPE, BytesLike, CodecError, check_pcm

_WIRE_DTYPE = np.dtype(">i2")
L16_STATIC_PAYLOAD_TYPES = {44100: 11}  # RFC 3551: PT 11 is L16 mono at 44.1 kHz; every other rate is dynamic


class L16Codec:
    """Big-endian 16-bit PCM at any clock rate (the RTP clock equals the sample rate); stateless."""

    name = "L16"

    __slots__ = ("default_payload_type", "rtp_clock_rate_hz", "sample_rate_hz")

    def __init__(self, sample_rate_hz: int) -> None:
        if sample_rate_hz <= 0:
            raise CodecError(f"L16 sample rate must be positive, got {sample_rate_hz}")
        self.sample_rate_hz = sample_rate_hz
        self.rtp_clock_rate_hz = sample_rate_hz
        self.default_payload_type: int | None = L16_STATIC_PAYLOAD_TYPES.get(sample_rate_hz)

    def encode(self, pcm: np.ndarray) -> bytes:
        """Native int16 PCM → big-endian octets, two per sample."""
        if getattr(pcm, "dtype", None) is not PCM_DTYPE:
            check_pcm(pcm)
        return pcm.astype(_WIRE_DTYPE).tobytes()

    def decode(self, payload: BytesLike) -> np.ndarray:
        """Big-endian octets → native int16 PCM; an odd octet count is a truncated packet (CodecError)."""
        if len(payload) & 1:
            raise CodecError(f"L16 payload has an odd number of octets ({len(payload)})")
        return np.frombuffer(payload, _WIRE_DTYPE).astype(PCM_DTYPE)
