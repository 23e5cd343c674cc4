"""Through kamailio as the carrier trunk: digest REGISTER (401), refresh, wrong password (403 → stop),
a PSTN-side call for our DID reaching the registered contact (Record-Route on), outbound calls with 407,
and SIGTERM removing the registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import DemoServer, greeting_wav, run_sipp, wait_until, write_config
from tests.peers.kamailio import KamailioTrunk

pytestmark = pytest.mark.integration
PASSWORD = "correct-horse"


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[KamailioTrunk]:
    kam = KamailioTrunk(tmp_path / "kam", {"alice": PASSWORD}, {"+15550100": "alice"})
    kam.workdir.mkdir()
    kam.start()
    yield kam
    kam.stop()


def carrier(kam: KamailioTrunk, expires: int = 600) -> dict[str, object]:
    return {
        "name": "carrier",
        "host": "127.0.0.1",
        "port": kam.customer_port,
        "username": "alice",
        "password_env": "CARRIER_PASSWORD",
        "register": True,
        "register_expires_s": expires,
        "dids": {"+15550100": "acme"},
        "allowed_sources": ["127.0.0.1/32"],
    }


def start_server(tmp_path: Path, kam: KamailioTrunk, password: str = PASSWORD) -> DemoServer:
    srv = DemoServer(tmp_path / "srv", greeting_wav(), [carrier(kam)], env={"CARRIER_PASSWORD": password})
    srv.workdir.mkdir()
    srv.start()
    return srv


@contextmanager
def trunk_and_server(
    tmp_path: Path,
    dids: dict[str, str] | None = None,
    max_expires_s: int = 3600,
    trunk_extra: dict[str, object] | None = None,
    rtp_ports: int = 100,
) -> Iterator[tuple[KamailioTrunk, DemoServer]]:
    """Kamailio as the carrier plus the demo server registered through it; both always stopped."""
    kam = KamailioTrunk(tmp_path / "kam", {"alice": PASSWORD}, dids or {}, max_expires_s=max_expires_s)
    kam.workdir.mkdir()
    trunk = {**carrier(kam), **(trunk_extra or {})}
    srv = DemoServer(
        tmp_path / "srv", greeting_wav(), [trunk], env={"CARRIER_PASSWORD": PASSWORD}, rtp_ports=rtp_ports
    )
    srv.workdir.mkdir()
    try:
        kam.start()
        srv.start()
        assert wait_until(lambda: registered(srv), 10), srv.log_text()
        yield kam, srv
    finally:
        srv.stop()
        kam.stop()


def status(srv: DemoServer) -> dict[str, object]:
    path = srv.workdir / "state" / "sip-status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def registered(srv: DemoServer) -> bool:
    regs = status(srv).get("registrations", {})
    return isinstance(regs, dict) and regs.get("carrier", {}).get("state") == "registered"


def test_register_with_digest_and_refresh(tmp_path: Path) -> None:
    with trunk_and_server(tmp_path, max_expires_s=2) as (kam, srv):
        # We ask for 600 s; the registrar grants 2 s, so refreshes come every ~1.6 s (80%).
        assert kam.wait_for(lambda k: len(k.registrations()) >= 3, 8), kam.log_text()
        assert all(user == "alice" for user, _ in kam.registrations())
        assert kam.registrations()[0][1] == 600  # Expires on the wire
        cli = [
            sys.executable,
            "-m",
            "trunkline.cli",
            "status",
            "--config",
            str(srv.workdir / "trunkline.toml"),
        ]
        run = subprocess.run(cli, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0 and "trunk carrier: registered" in run.stdout, run.stdout + run.stderr


def test_wrong_password_fails_cleanly_and_stops(kamailio: KamailioTrunk, tmp_path: Path) -> None:
    srv = start_server(tmp_path, kamailio, password="wrong")
    try:
        assert srv.wait_for_log("state=forbidden", 10), srv.log_text()
        assert "TL-AUTH-FAILED user=alice" in kamailio.log_text()
        assert not kamailio.registrations()
        assert not srv.wait_for_log("state=registering", 1.5, count=2)  # no retry storm after 403
        assert PASSWORD not in srv.log_text() and "wrong" not in srv.log_text()
    finally:
        srv.stop()


def test_pstn_call_reaches_us_through_the_trunk(kamailio: KamailioTrunk, tmp_path: Path) -> None:
    srv = start_server(tmp_path, kamailio)
    try:
        assert wait_until(lambda: registered(srv), 10), srv.log_text()
        pstn = f"127.0.0.1:{kamailio.pstn_port}"
        result = run_sipp(
            tmp_path,
            S.answered_call(hold_ms=1500, ringing_optional=True),
            pstn,
            extra=["-rtp_echo", *S.LATE_PROVISIONAL_OK],
        )
        assert result.returncode == 0, result.errors + result.stdout
        (summary,) = srv.wait_summaries(1, 10)
        assert summary["tenant"] == "acme" and summary["did"] == "+15550100"
        assert summary["stats"]["received"] >= 40 and summary["stats"]["sent"] >= 50
        assert (
            run_sipp(tmp_path, S.rejected_call(404), pstn, service="+15550999", name="r404").returncode == 0
        )
    finally:
        srv.stop()


def test_unregistered_did_owner_gets_480(kamailio: KamailioTrunk, tmp_path: Path) -> None:
    result = run_sipp(tmp_path, S.rejected_call(480), f"127.0.0.1:{kamailio.pstn_port}")
    assert result.returncode == 0, result.errors + result.stdout


def test_outbound_call_with_407_auth(kamailio: KamailioTrunk, tmp_path: Path) -> None:
    uas_dir = tmp_path / "uas"
    uas_dir.mkdir()
    (uas_dir / "uas.xml").write_text(S.uas_answer())
    uas = subprocess.Popen(
        [
            "sipp",
            "-sf",
            "uas.xml",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            str(kamailio.gateway_port),
            "-nostdin",
            "-m",
            "1",
            "-rtp_echo",
            "-trace_err",
        ],
        cwd=uas_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cfg = write_config(
        tmp_path / "dial.toml",
        {
            "server": {"state_dir": "state", "greeting_wav": str(greeting_wav())},
            "media": {"rtp_port_min": 39000, "rtp_port_max": 39100},
        },
        [carrier(kamailio)],
    )
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "trunkline.cli",
                "call",
                "+15557770000",
                "--trunk",
                "carrier",
                "--config",
                str(cfg),
                "--duration",
                "1.5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CARRIER_PASSWORD": PASSWORD},
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["outcome"] == "answered" and report["codec"] == "PCMU"
        assert "TL-OUTBOUND to=+15557770000" in kamailio.log_text()  # passed the 407 challenge
        out, _ = uas.communicate(timeout=20)
        assert uas.returncode == 0, out  # the answerer saw INVITE, ACK and our BYE
    finally:
        if uas.poll() is None:
            uas.kill()
