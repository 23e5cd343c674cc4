"""Bad input never crashes the server: garbage datagrams, torture-ish requests, unknown dialogs (481),
unsupported methods (405/501 with Allow), REGISTER (405, never 200), sources no trunk allows (403 or
silence)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import DemoServer, greeting_wav, run_sipp

pytestmark = pytest.mark.integration
LOCAL = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {"+15550100": "demo"}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DemoServer]:
    srv = DemoServer(tmp_path, greeting_wav(), [LOCAL])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(1.0)
    yield s
    s.close()


def request(
    method: str, port: int, local: int, *, to_tag: str = "", body: str = "", extra: str = ""
) -> bytes:
    branch = uuid.uuid4().hex
    tag = f";tag={to_tag}" if to_tag else ""
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:+15550100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:tester@127.0.0.1:{local}>;tag={branch[:8]}\r\n"
        f"To: <sip:+15550100@127.0.0.1:{port}>{tag}\r\n"
        f"Call-ID: {branch}@test\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:tester@127.0.0.1:{local}>\r\n"
        f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def exchange(sock: socket.socket, data: bytes, port: int) -> str:
    """Send `data` and return the first final response's text ('' if none within the timeout)."""
    sock.sendto(data, ("127.0.0.1", port))
    try:
        while True:
            reply = sock.recv(65535).decode("latin-1")
            if not reply.startswith("SIP/2.0 1"):
                return reply
    except TimeoutError:
        return ""


def status_of(reply: str) -> int:
    return int(reply.split(" ", 2)[1]) if reply.startswith("SIP/2.0 ") else 0


def test_garbage_and_odd_requests_get_the_right_answers(server: DemoServer, sock: socket.socket) -> None:
    port, local = server.port, sock.getsockname()[1]
    for junk in (os.urandom(200), b"\x00" * 64, b"hello world this is not sip at all....", b"\xff\xfe" * 100):
        sock.sendto(junk, ("127.0.0.1", port))
    truncated = request("INVITE", port, local)[:140]  # cut inside the From header
    assert status_of(exchange(sock, truncated, port)) == 400

    register = exchange(sock, request("REGISTER", port, local), port)
    assert status_of(register) == 405 and "Allow:" in register
    foo = exchange(sock, request("FOO", port, local), port)
    assert status_of(foo) in (405, 501) and "Allow:" in foo
    assert status_of(exchange(sock, request("BYE", port, local, to_tag="nope"), port)) == 481
    assert status_of(exchange(sock, request("INFO", port, local, to_tag="nope"), port)) == 481
    bad_version = request("OPTIONS", port, local).replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
    assert status_of(exchange(sock, bad_version, port)) == 505
    assert status_of(exchange(sock, request("OPTIONS", port, local), port)) == 200  # still alive


def test_server_still_takes_calls_after_abuse(
    server: DemoServer, sock: socket.socket, tmp_path: Path
) -> None:
    corpus = Path("/work/shared/corpus/sip-torture")
    messages = sorted(corpus.glob("*.dat")) if corpus.exists() else []
    for path in messages:
        sock.sendto(
            path.read_bytes().replace(b"\n", b"\r\n")
            if b"\r\n" not in path.read_bytes()
            else path.read_bytes(),
            ("127.0.0.1", server.port),
        )
    for _ in range(50):
        sock.sendto(os.urandom(300), ("127.0.0.1", server.port))
    result = run_sipp(tmp_path, S.answered_call(hold_ms=300), f"127.0.0.1:{server.port}")
    assert result.returncode == 0, result.errors + result.stdout
    assert server.process is not None and server.process.poll() is None
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize(("mode", "expected"), [("reject", 403), ("drop", 0)])
def test_source_not_allowed(tmp_path: Path, sock: socket.socket, mode: str, expected: int) -> None:
    trunk = {**LOCAL, "allowed_sources": ["127.0.0.2/32"]}
    srv = DemoServer(tmp_path, greeting_wav(), [trunk], sip={"unknown_source": mode})
    srv.start()
    try:
        reply = exchange(sock, request("INVITE", srv.port, sock.getsockname()[1]), srv.port)
        assert status_of(reply) == expected, reply
    finally:
        srv.stop()
