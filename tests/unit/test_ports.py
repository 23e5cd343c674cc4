"""The RTP port allocator: even ports, RTCP pair held, busy ports skipped, exhaustion typed, release."""

from __future__ import annotations

import socket

import pytest

from trunkline.mediaserver.ports import PortAllocator, PortsExhausted


def free_block(size: int) -> int:
    """An even base port whose block of `size` ports is free right now (probed by binding)."""
    for base in range(42000, 60000, 64):
        probes = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
    raise RuntimeError("no free port block on 127.0.0.1")


def test_allocates_even_ports_with_rtcp_above() -> None:
    base = free_block(8)
    alloc = PortAllocator("127.0.0.1", base + 1, base + 7)  # odd minimum rounds up
    assert alloc.capacity == 3
    leases = [alloc.allocate() for _ in range(3)]
    assert [lease.port for lease in leases] == [base + 2, base + 4, base + 6]
    for lease in leases:
        assert lease.rtp_socket.getsockname() == ("127.0.0.1", lease.port)
        assert lease.rtcp_socket is not None
        assert lease.rtcp_socket.getsockname() == ("127.0.0.1", lease.rtcp_port)
        assert lease.rtp_socket.getblocking() is False
    with pytest.raises(PortsExhausted):
        alloc.allocate()
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert alloc.allocated == 0


def test_busy_ports_are_skipped() -> None:
    base = free_block(8)
    squatter_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter_rtp.bind(("127.0.0.1", base))
        squatter_rtcp.bind(("127.0.0.1", base + 3))  # the RTCP port of the second pair
        alloc = PortAllocator("127.0.0.1", base, base + 7)
        lease = alloc.allocate()
        assert lease.port == base + 4
        assert alloc.busy_skipped == 2
        lease.release()
    finally:
        squatter_rtp.close()
        squatter_rtcp.close()


def test_released_port_is_reused_only_after_the_others() -> None:
    base = free_block(6)
    alloc = PortAllocator("127.0.0.1", base, base + 5)
    first = alloc.allocate()
    first.release()
    second = alloc.allocate()
    assert second.port == base + 2  # round robin: not the port just released
    third = alloc.allocate()
    fourth = alloc.allocate()
    assert {third.port, fourth.port} == {base, base + 4}
    for lease in (second, third, fourth):
        lease.release()
    # a released port can be bound again at once
    again = alloc.allocate()
    assert again.port in (base, base + 2, base + 4)
    again.release()


def test_without_rtcp_socket() -> None:
    base = free_block(2)
    alloc = PortAllocator("127.0.0.1", base, base + 1, bind_rtcp=False)
    lease = alloc.allocate()
    assert lease.rtcp_socket is None
    lease.release()


@pytest.mark.parametrize(("low", "high"), [(80, 2000), (40000, 70000), (40000, 40000), (40001, 40002)])
def test_bad_ranges_rejected(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator("127.0.0.1", low, high)
