"""Graceful shutdown and transfer: SIGTERM answers new INVITEs 503 + Retry-After at once, lets the call in
progress finish, removes the registration (Expires: 0) and exits 0; blind transfer sends REFER then BYE."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import SippResult, in_process_sip, run_sipp
from tests.integration.test_sip_trunk import trunk_and_server
from trunkline.sip.call import Call

pytestmark = pytest.mark.integration


def test_sigterm_drains_calls_and_unregisters(tmp_path: Path) -> None:
    results: list[SippResult] = []
    with trunk_and_server(tmp_path, {"+15550100": "alice"}) as (kam, srv):
        long_call = threading.Thread(
            target=lambda: results.append(
                run_sipp(
                    tmp_path,
                    S.answered_call(hold_ms=3000, ringing_optional=True),
                    f"127.0.0.1:{kam.pstn_port}",
                    name="long",
                    extra=S.LATE_PROVISIONAL_OK,
                )
            )
        )
        long_call.start()
        assert srv.wait_for_log("sip.call_admitted", 10)
        assert srv.process is not None
        srv.process.terminate()
        assert srv.wait_for_log("sip.draining", 5)
        refused = run_sipp(
            tmp_path, S.rejected_call(503, check=("Retry-After:", "^ *30")), f"127.0.0.1:{srv.port}"
        )
        assert refused.returncode == 0, refused.errors + refused.stdout
        long_call.join(30)
        assert results and results[0].returncode == 0, results[0].errors if results else "no result"
        assert srv.process.wait(timeout=20) == 0
        assert "TRUNKLINE-STOPPED" in srv.log_text()
        assert kam.wait_for(lambda k: ("alice", 0) in k.registrations(), 5), kam.log_text()
        assert "reason=remote_hangup" in srv.log_text()  # the call ended normally, not cut by the drain


async def test_blind_transfer_sends_refer_then_bye(tmp_path: Path) -> None:
    trunk = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {"+15550100": "demo"}}
    calls: list[Call] = []

    async def on_call(call: Call) -> None:
        calls.append(call)
        assert await call.transfer("+15559990000")  # True: the 202 ends our leg with BYE
        await call.ended.wait()

    refer_check = (
        '<action><ereg regexp="Refer-[Tt]o: &lt;sip:\\+15559990000@" search_in="msg" check_it="true" '
        'assign_to="1"/></action>'
    )
    scn = S.scenario(
        "refer",
        *S.answered(),
        S.recv("REFER", extra=refer_check),
        S.reply(202, "Accepted"),
        S.recv("BYE"),
        S.reply(200, "OK"),
        '  <Reference variables="1"/>\n',
    )
    async with in_process_sip(tmp_path, [trunk], on_call) as (_service, port):
        result = await asyncio.to_thread(run_sipp, tmp_path, scn, f"127.0.0.1:{port}")
        assert result.returncode == 0, result.errors + result.stdout
        assert [c.end_reason for c in calls] == ["transferred"]
