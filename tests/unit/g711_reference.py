"""Independent scalar G.711 reference, for tests only: one sample at a time, straight from the recommendation.

Written from the algorithm (ITU-T G.711 Tables 1a/2a, with the G.191 conventions for 16-bit input: µ-law
uses the 14 MSBs, A-law the 13 MSBs, negative samples use the one's complement magnitude) and deliberately
not from the table-building code in trunkline.codecs.g711: segment search over a table of segment end
points, bias 0x84 for µ-law, even-bit inversion (XOR 0x55) for A-law, and decoding to the midpoint of
each code's decision interval.
"""

from __future__ import annotations

ULAW_BIAS = 0x84  # 33 in the 14-bit domain, shifted to the 16-bit one
ULAW_CLIP = 0x7FFF  # largest biased 16-bit magnitude (the 14-bit limit 0x1FFF, left-justified)
# Last biased 16-bit magnitude in each µ-law segment: (0x100 << s) - 1.
ULAW_SEGMENT_END = (0x00FF, 0x01FF, 0x03FF, 0x07FF, 0x0FFF, 0x1FFF, 0x3FFF, 0x7FFF)
# Last 13-bit magnitude in each A-law segment.
ALAW_SEGMENT_END = (0x001F, 0x003F, 0x007F, 0x00FF, 0x01FF, 0x03FF, 0x07FF, 0x0FFF)


def _magnitude(sample: int) -> int:
    """One's complement magnitude, so that 0 and -1 are the two smallest values of either sign."""
    return sample if sample >= 0 else -sample - 1


def _segment(value: int, ends: tuple[int, ...]) -> int:
    segment = 0
    while segment < len(ends) - 1 and value > ends[segment]:
        segment += 1
    return segment


def ulaw_compress(sample: int) -> int:
    """One int16 sample → one µ-law code."""
    biased = min(_magnitude(sample) + ULAW_BIAS, ULAW_CLIP)
    segment = _segment(biased, ULAW_SEGMENT_END)
    mantissa = (biased >> (segment + 3)) & 0x0F
    code = (segment << 4) | mantissa
    if sample < 0:
        code |= 0x80
    return code ^ 0xFF  # µ-law transmits every bit inverted, so a set sign bit means "positive"


def alaw_compress(sample: int) -> int:
    """One int16 sample → one A-law code."""
    magnitude = _magnitude(sample) >> 3  # the 13 MSBs, sign removed: 0..4095
    segment = _segment(magnitude, ALAW_SEGMENT_END)
    mantissa = (magnitude >> (1 if segment < 2 else segment)) & 0x0F
    code = (segment << 4) | mantissa
    if sample >= 0:
        code |= 0x80
    return code ^ 0x55


def ulaw_expand(code: int) -> int:
    """One µ-law code → the midpoint of its decision interval, in 16-bit units."""
    bits = code ^ 0xFF
    segment = (bits >> 4) & 0x07
    mantissa = bits & 0x0F
    # Interval in biased 16-bit units: [(16 + m) << (s + 3), (17 + m) << (s + 3)); midpoint minus the bias.
    value = ((2 * mantissa + 33) << (segment + 2)) - ULAW_BIAS
    return -value if bits & 0x80 else value


def alaw_expand(code: int) -> int:
    """One A-law code → the midpoint of its decision interval, in 16-bit units."""
    bits = code ^ 0x55
    segment = (bits >> 4) & 0x07
    mantissa = bits & 0x0F
    # Segment 0 spans [2m, 2m + 2) in 13-bit units; segment s > 0 spans [(16 + m) << s, (17 + m) << s).
    value = (2 * mantissa + 1) << 3 if segment == 0 else (2 * mantissa + 33) << (segment + 2)
    return value if bits & 0x80 else -value


def ulaw_step(code: int) -> int:
    """Width of a µ-law code's decision interval in 16-bit units (8 << segment)."""
    return 8 << (((code ^ 0xFF) >> 4) & 0x07)


def alaw_step(code: int) -> int:
    """Width of an A-law code's decision interval in 16-bit units (16 in segments 0 and 1, then doubling)."""
    segment = ((code ^ 0x55) >> 4) & 0x07
    return 16 << max(segment - 1, 0)
