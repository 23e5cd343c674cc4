"""Codec registry keyed by (encoding name, RTP clock rate): specs for SDP, fresh instances for legs."""

from __future__ import annotations

from collections.abc import Callable

from trunkline.codecs.base import Codec, CodecSpec, UnsupportedCodecError
from trunkline.codecs.g711 import PcmaCodec, PcmuCodec
from trunkline.codecs.g722 import G722Codec
from trunkline.codecs.l16 import L16Codec

L16_RATES_HZ = (8000, 16000, 44100, 48000)


def _spec_of(codec: Codec) -> CodecSpec:
    return CodecSpec(codec.name, codec.rtp_clock_rate_hz, codec.sample_rate_hz, codec.default_payload_type)


def _l16_factory(rate_hz: int) -> Callable[[], Codec]:
    return lambda: L16Codec(rate_hz)


def _build() -> dict[tuple[str, int], tuple[CodecSpec, Callable[[], Codec]]]:
    factories: list[Callable[[], Codec]] = [PcmuCodec, PcmaCodec, G722Codec]
    factories += [_l16_factory(rate) for rate in L16_RATES_HZ]
    table: dict[tuple[str, int], tuple[CodecSpec, Callable[[], Codec]]] = {}
    for factory in factories:
        spec = _spec_of(factory())
        table[spec.key] = (spec, factory)
    return table


# Insertion order is the default offer order: narrowband G.711 first (what every trunk speaks), then G.722.
_REGISTRY = _build()
_BY_STATIC_PAYLOAD_TYPE = {
    spec.default_payload_type: spec for spec, _ in _REGISTRY.values() if spec.default_payload_type is not None
}


def _lookup(name: str, rtp_clock_rate_hz: int, channels: int) -> tuple[CodecSpec, Callable[[], Codec]]:
    entry = _REGISTRY.get((name.upper(), rtp_clock_rate_hz)) if channels == 1 else None
    if entry is None:
        raise UnsupportedCodecError(name, rtp_clock_rate_hz, channels)
    return entry


def codec_spec(name: str, rtp_clock_rate_hz: int, channels: int = 1) -> CodecSpec:
    """Spec for rtpmap `name/rate[/channels]` (name case-insensitive); UnsupportedCodecError if unknown."""
    return _lookup(name, rtp_clock_rate_hz, channels)[0]


def create_codec(name: str, rtp_clock_rate_hz: int, channels: int = 1) -> Codec:
    """A fresh instance (G.722 is stateful: one per leg and direction); UnsupportedCodecError if unknown."""
    return _lookup(name, rtp_clock_rate_hz, channels)[1]()


def supported_specs() -> tuple[CodecSpec, ...]:
    """Every supported codec in default offer order (PCMU, PCMA, G722, then L16 by rate)."""
    return tuple(spec for spec, _ in _REGISTRY.values())


def spec_for_static_payload_type(payload_type: int) -> CodecSpec | None:
    """The codec a static RTP payload type (0, 8, 9, 11) means when an SDP offer omits its rtpmap line."""
    return _BY_STATIC_PAYLOAD_TYPE.get(payload_type)
