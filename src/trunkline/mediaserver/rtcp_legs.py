"""The engine's RTCP side (thin adapter over rtcp_report.RtcpReporter): one reporter per leg that has an RTCP
socket, its reports sent from that socket, and what arrives on it taken in.

Reports go to the address the far end's RTCP last came from (symmetric RTCP, as for RTP behind NAT), else to
the address its SDP's a=rtcp declared (RFC 3605, `Leg.remote_rtcp`), else to its RTP address with the port + 1
(RFC 3550 §11). Only a source on the far end's RTP host or on its a=rtcp host latches (both come from its
signalling): a stranger's datagram must not redirect our reports, and a latch on a host the far end has since
left (re-INVITE) is no longer used.

Each tick checks 1/50 of the legs, so a report leaves at most a second after it is due (the interval is
randomised by seconds anyway) and the check costs next to nothing per tick. The last report, with a BYE, goes
out when the leg closes.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass

from trunkline.logs import get_logger
from trunkline.mediaserver.leg import Leg
from trunkline.mediaserver.rtcp_report import REPORT_INTERVAL_S, RtcpReporter, SentCounters
from trunkline.mediaserver.rtpstats import ReceiveStats
from trunkline.mediaserver.session import Address, RtpSession

CHECK_EVERY_TICKS = 50
DTMF_PAYLOAD_OCTETS = 4  # RFC 4733 event payload

log = get_logger("trunkline.media.rtcp")


@dataclass(slots=True)
class _RtcpLeg:
    reporter: RtcpReporter
    sock: socket.socket
    leg: Leg
    latched: Address | None = None  # where the far end's RTCP comes from
    send_errors: int = 0


def sent_counters(session: RtpSession, tick_index: int, now: float) -> SentCounters:
    """What the leg has sent, for an SR: packets, payload octets (audio frames are all one size, RFC 4733
    events 4 octets), and the RTP timestamp of this tick's packet. A held leg or one not sending yet has
    no send time (it reports an RR)."""
    dtmf = session.dtmf_sent
    octets = (session.sent - dtmf) * len(session.silence_payload) + dtmf * DTMF_PAYLOAD_OCTETS
    sending = session.sent > 0 and not session.held and session.remote is not None
    rtp_ts = (session.ts_base + tick_index * session.ts_step) & 0xFFFFFFFF
    return SentCounters(session.sent, octets, rtp_ts if sending else None, now if sending else None)


def received_stats(session: RtpSession) -> tuple[int, ReceiveStats] | None:
    """The far end's stream, if one has been heard: its SSRC and receive statistics."""
    ssrc = session.jitter.source_ssrc
    stats = session.rx_stats
    return None if ssrc is None or not stats.received else (ssrc, stats)


class RtcpLegs:
    """Reporters of the engine's legs; every call is on the event loop, from the engine's pacer."""

    def __init__(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._legs: dict[RtpSession, _RtcpLeg] = {}
        self.sent = 0

    def add(self, leg: Leg, sock: socket.socket | None, now: float) -> None:
        if sock is None:
            return
        session = leg.session
        cname = f"{secrets.token_hex(8)}@trunkline"  # RFC 7022: random, per leg
        reporter = RtcpReporter(session.ssrc, cname, session.clock_rate_hz, now, interval_s=self._interval_s)
        leg.rtcp = reporter
        self._legs[session] = _RtcpLeg(reporter, sock, leg)

    def received(self, session: RtpSession, data: bytes, addr: Address, now: float) -> None:
        entry = self._legs.get(session)
        if entry is None:
            return
        ssrc = session.jitter.source_ssrc
        if entry.reporter.on_rtcp(data, now, time.time(), ssrc) and may_latch(
            addr[0], session.remote, entry.leg.remote_rtcp
        ):
            entry.latched = addr

    def send_due(self, sessions: list[RtpSession], tick_index: int, now: float) -> None:
        """Reports due now, for the 1/50 of `sessions` whose turn this tick is."""
        for session in sessions[tick_index % CHECK_EVERY_TICKS :: CHECK_EVERY_TICKS]:
            entry = self._legs.get(session)
            if entry is None or now < entry.reporter.next_deadline():
                continue
            sent = sent_counters(session, tick_index, now)
            self._send(entry, session, entry.reporter.report(now, time.time(), sent, received_stats(session)))

    def remove(self, session: RtpSession, tick_index: int, now: float) -> None:
        """The leg closes: its last report, with a BYE."""
        entry = self._legs.pop(session, None)
        if entry is None:
            return
        sent = sent_counters(session, tick_index, now)
        self._send(entry, session, entry.reporter.bye(now, time.time(), sent, received_stats(session)))

    def _send(self, entry: _RtcpLeg, session: RtpSession, packet: bytes) -> None:
        target = report_target(entry.latched, session.remote, entry.leg.remote_rtcp)
        if target is None:
            return
        try:
            entry.sock.sendto(packet, target)
            self.sent += 1
        except OSError:  # buffer full or an ICMP error queued: RTCP is best effort
            entry.send_errors += 1


def may_latch(host: str, remote: Address | None, remote_rtcp: Address | None) -> bool:
    """Whether RTCP from `host` may steer our reports: the far end's RTP host or its a=rtcp host (nobody
    while the far end's address is not known yet: a leg before the answer must not report to a stranger)."""
    return remote is not None and (host == remote[0] or (remote_rtcp is not None and host == remote_rtcp[0]))


def report_target(
    latched: Address | None, remote: Address | None, remote_rtcp: Address | None
) -> Address | None:
    """Where a report goes: the latched source while its host may still latch (a re-INVITE may have moved
    the far end since), else the a=rtcp address, else the far end's RTP port + 1 (None: neither known)."""
    if latched is not None and may_latch(latched[0], remote, remote_rtcp):
        return latched
    if remote_rtcp is not None:
        return remote_rtcp
    return None if remote is None else (remote[0], remote[1] + 1)
