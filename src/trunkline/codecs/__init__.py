"""Audio codecs (G.711, G.722, L16), resampling and reframing: pure functions over bytes and numpy."""

from trunkline.codecs.base import PCM_DTYPE, BytesLike, Codec, CodecError, CodecSpec, UnsupportedCodecError
from trunkline.codecs.g711 import (
    PcmaCodec,
    PcmuCodec,
    alaw_decode,
    alaw_encode,
    alaw_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_alaw,
)
from trunkline.codecs.g722 import G722Codec
from trunkline.codecs.l16 import L16Codec
from trunkline.codecs.reframe import Reframer
from trunkline.codecs.registry import (
    codec_spec,
    create_codec,
    spec_for_static_payload_type,
    supported_specs,
)
from trunkline.codecs.resample import Resampler

__all__ = [
    "PCM_DTYPE",
    "BytesLike",
    "Codec",
    "CodecError",
    "CodecSpec",
    "G722Codec",
    "L16Codec",
    "PcmaCodec",
    "PcmuCodec",
    "Reframer",
    "Resampler",
    "UnsupportedCodecError",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "codec_spec",
    "create_codec",
    "spec_for_static_payload_type",
    "supported_specs",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]
