"""The RFC 4475/5118 torture corpus against the running server, one UDP datagram per file.

Every file gets the answer the corpus README's "Us" column asks for (our stateless reply, or the stack's
481/200/404 for messages that pass), responses are never answered, the server keeps answering OPTIONS,
logs no traceback, and sending the corpus 100 times grows its RSS by less than 5 MB.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.sip_server import DemoServer, greeting_wav
from tests.unit.test_sip_validate import EXPECTED

pytestmark = pytest.mark.integration
CORPUS = Path("/work/shared/corpus/sip-torture")
LOCAL_TRUNK = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {"+15550100": "demo"}}
# What the stack answers to the messages the pre-validator passes on: no dialog (481), OPTIONS (200),
# INVITEs to numbers no trunk routes (404); responses match no transaction of ours (silence).
STACK_ANSWERS: dict[str, int | None] = {
    "wsinv.dat": 481, "esc01.dat": 404, "lwsdisp.dat": 200, "longreq.dat": 404, "semiuri.dat": 200,
    "transports.dat": 200, "unreason.dat": None, "noreason.dat": None, "lwsstart.dat": 404, "trws.dat": 200,
    "baddate.dat": 404, "badbranch.dat": 200, "zeromf.dat": 200,
    "rfc5118/via-received-param-with-delim.dat": 481, "rfc5118/via-received-param-no-delim.dat": 200,
    "rfc5118/ipv6-in-sdp.dat": 404, "rfc5118/ipv6-in-sdp.cl-fixed.dat": 404,
    "rfc5118/mult-ip-in-header.dat": 481,
    "rfc5118/mult-ip-in-sdp.dat": 404, "rfc5118/mult-ip-in-sdp.cl-fixed.dat": 404,
    "rfc5118/ipv4-mapped-ipv6.dat": 404, "rfc5118/ipv4-mapped-ipv6.cl-fixed.dat": 404,
    "rfc5118/ipv6-correct-abnf-2-colons.dat": 200,
}  # fmt: skip


def expected_status(name: str) -> int | None:
    verdict = EXPECTED[name]
    if verdict == "pass":
        return STACK_ANSWERS[name]
    return None if verdict == "drop" else int(verdict)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    srv = DemoServer(tmp_path_factory.mktemp("torture"), greeting_wav(), [LOCAL_TRUNK])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


def final_status(sock: socket.socket, timeout_s: float) -> int | None:
    """The status of the first final response arriving within `timeout_s` (None if none does)."""
    sock.settimeout(timeout_s)
    try:
        while True:
            reply = sock.recv(65535)
            if reply.startswith(b"SIP/2.0 ") and not reply.startswith(b"SIP/2.0 1"):
                return int(reply.split(b" ", 2)[1])
    except TimeoutError:
        return None


def options(port: int, local_port: int) -> bytes:
    """A well-formed OPTIONS with a fresh Call-ID: the liveness probe and the end-of-round barrier."""
    tag = uuid.uuid4().hex
    return (
        f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={tag[:8]}\r\nTo: <sip:probe@127.0.0.1:{port}>\r\n"
        f"Call-ID: {tag}@probe\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def drain(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    try:
        while True:
            sock.recv(65535)
    except TimeoutError:
        return


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_gets_its_answer(server: DemoServer, sock: socket.socket, name: str) -> None:
    expected = expected_status(name)
    sock.sendto((CORPUS / name).read_bytes(), ("127.0.0.1", server.port))
    assert final_status(sock, 2.0 if expected is not None else 0.4) == expected
    sock.sendto(options(server.port, sock.getsockname()[1]), ("127.0.0.1", server.port))
    assert final_status(sock, 2.0) == 200
    assert server.process is not None and server.process.poll() is None


def test_corpus_a_hundred_times_keeps_memory_flat(server: DemoServer, sock: socket.socket) -> None:
    assert server.process is not None
    files = [(CORPUS / name).read_bytes() for name in sorted(EXPECTED)]
    target, local = ("127.0.0.1", server.port), sock.getsockname()[1]

    def one_round() -> None:
        for data in files:
            sock.sendto(data, target)
        sock.sendto(options(server.port, local), target)
        sock.settimeout(10)
        while True:  # the barrier: the SIP thread handles datagrams in order
            reply = sock.recv(65535)
            if b"@probe" in reply and reply.startswith(b"SIP/2.0 200"):
                break
        drain(sock)

    for _ in range(5):  # warm caches and allocator pools first
        one_round()
    before = rss_kib(server.process.pid)
    for _ in range(100):
        one_round()
    after = rss_kib(server.process.pid)
    assert after - before < 5 * 1024, f"RSS grew by {after - before} KiB over 100 rounds"
    sock.sendto(options(server.port, local), target)
    assert final_status(sock, 2.0) == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log_text()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
