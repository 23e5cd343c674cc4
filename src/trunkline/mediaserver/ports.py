"""Even-numbered RTP ports from a configured range, RTCP on port+1 held alongside (RFC 3550 §11).

Binding is the only reliable test of "free": a port taken by another process (EADDRINUSE) is skipped and
the next pair tried. Ports are handed out round-robin so a just-released port is not reused at once (late
packets of the old call would land on the new one).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field


class PortAllocationError(Exception):
    """A socket for RTP could not be bound for a reason other than the port being in use."""


class PortsExhausted(PortAllocationError):
    """Every even port of the range is allocated or in use by someone else."""


@dataclass(slots=True)
class PortLease:
    """A bound, non-blocking RTP socket on an even port and the RTCP socket on the port above it."""

    port: int
    rtp_socket: socket.socket
    rtcp_socket: socket.socket | None
    _allocator: PortAllocator | None = field(default=None, repr=False)

    @property
    def rtcp_port(self) -> int:
        """The RTCP port (RTP port + 1)."""
        return self.port + 1

    def release(self) -> None:
        """Close both sockets and return the port pair; safe to call twice."""
        allocator, self._allocator = self._allocator, None
        if allocator is not None:
            allocator._release(self)


class PortAllocator:
    """Hands out even RTP ports in [min_port, max_port] on `host`, with port+1 reserved for RTCP."""

    def __init__(self, host: str, min_port: int, max_port: int, bind_rtcp: bool = True) -> None:
        first = min_port + (min_port & 1)
        if first < 1024 or max_port > 65535:
            raise ValueError(f"RTP port range {min_port}-{max_port} must lie within 1024-65535")
        if max_port < first + 1:
            raise ValueError(f"RTP port range {min_port}-{max_port} holds no even/odd port pair")
        self.host = host
        self._ports = range(first, max_port, 2)  # each p has p+1 <= max_port
        self._bind_rtcp = bind_rtcp
        self._in_use: set[int] = set()
        self._cursor = 0
        self.busy_skipped = 0  # ports skipped because another process held them

    @property
    def capacity(self) -> int:
        """How many RTP/RTCP pairs the range holds."""
        return len(self._ports)

    @property
    def allocated(self) -> int:
        """How many pairs are currently leased."""
        return len(self._in_use)

    def allocate(self) -> PortLease:
        """Bind the next free pair; raises PortsExhausted when none is left."""
        count = len(self._ports)
        for _ in range(count):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % count
            if port in self._in_use:
                continue
            lease = self._try_bind(port)
            if lease is not None:
                self._in_use.add(port)
                return lease
        raise PortsExhausted(
            f"no free RTP port pair in {self._ports.start}-{self._ports.stop} on {self.host} "
            f"({len(self._in_use)} leased, {count} in range)"
        )

    def _try_bind(self, port: int) -> PortLease | None:
        rtp = _bind_udp(self.host, port)
        if rtp is None:
            self.busy_skipped += 1
            return None
        rtcp = None
        if self._bind_rtcp:
            rtcp = _bind_udp(self.host, port + 1)
            if rtcp is None:
                rtp.close()
                self.busy_skipped += 1
                return None
        return PortLease(port, rtp, rtcp, self)

    def _release(self, lease: PortLease) -> None:
        lease.rtp_socket.close()
        if lease.rtcp_socket is not None:
            lease.rtcp_socket.close()
        self._in_use.discard(lease.port)


def _bind_udp(host: str, port: int) -> socket.socket | None:
    """A non-blocking UDP socket bound to (host, port), or None if the port is in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise PortAllocationError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from exc
    return sock
