"""What the jitter buffer (jitterbuffer.py, which re-exports these) hands out: frames and statistics."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FrameKind(enum.Enum):
    """What the leg should play for one frame."""

    AUDIO = "audio"  # decode the payload
    CONCEALED = "concealed"  # a packet is missing: run packet-loss concealment
    SILENCE = "silence"  # not started, DTX / talkspurt gap, or after a long loss: comfort silence


@dataclass(frozen=True, slots=True)
class JitterFrame:
    """One pop's result; `payload` is empty unless kind is AUDIO."""

    kind: FrameKind
    payload: bytes
    timestamp: int
    marker: bool


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters. Every received packet is played, late, duplicate, overflow_dropped, discarded or buffered."""

    received: int
    played: int
    late: int
    lost: int
    concealed: int
    duplicate: int
    overflow_dropped: int
    discarded: int  # dropped to shrink the delay, or stragglers of a left SSRC / inconsistent timestamps
    buffered: int
    ssrc_changes: int
    resyncs: int
    current_delay_ms: float  # recent buffering delay (playout − arrival) of played packets
    mean_delay_ms: float  # the same averaged over all played packets
    target_delay_ms: float  # planned buffering delay of a typical packet
