"""A timestamp jump seen first on a reordered packet: the packets sent before it, arriving after it, must
still play in sending order (found by hypothesis in test_jitterbuffer's invariants)."""

from __future__ import annotations

from trunkline.mediaserver.jitterbuffer import FrameKind, JitterBuffer
from trunkline.mediaserver.rtp import RtpPacket

FRAME = 160


def packet(i: int, ts0: int) -> RtpPacket:
    return RtpPacket(0, i, (ts0 + i * FRAME) & 0xFFFFFFFF, 1, i.to_bytes(4, "big"), False)


def test_packets_before_a_resync_that_arrive_after_it_keep_their_order() -> None:
    jump = 0x40000000  # the sender's timestamps jump from packet 1 on
    arrivals = [(40, packet(0, 0)), (60, packet(3, jump)), (61, packet(1, jump)), (61, packet(2, jump))]
    jb = JitterBuffer(max_packets=3)
    played: list[int] = []
    pending = list(arrivals)
    for n in range(20):
        now_ms = 20 * n
        while pending and pending[0][0] <= now_ms:
            at, p = pending.pop(0)
            jb.push(p, at / 1000)
        frame = jb.pop(now_ms / 1000)
        if frame.kind is FrameKind.AUDIO:
            played.append(int.from_bytes(frame.payload, "big"))
    assert played == sorted(set(played)) and played[-1] == 3, played
    assert {1, 2} <= set(played)  # the resync left room for the packets sent between
