"""A tenant's `[limits] max_concurrent_calls` with calls arriving together: four INVITEs for a tenant allowed
one call at a time, sent back to back before any is answered, get one 200 and three 486 (each counts only
calls already admitted, not the ones racing it). The server's own admission hook and tenant files; SipService
and MediaEngine in this process; raw-UDP callers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.raw_sip import RawCarrier
from tests.integration.server_proc import DELTA_TOML
from tests.integration.sip_server import in_process_sip, wait_until
from trunkline.server import _serving
from trunkline.sip.call import Call
from trunkline.tenants.registry import TenantRegistry

pytestmark = pytest.mark.integration


def admitted(capsys: pytest.CaptureFixture[str], seen: list[str]) -> int:
    """How many `sip.call_admitted` lines the SIP thread has logged so far (output read is kept in `seen`)."""
    seen.append(capsys.readouterr().out)
    return "".join(seen).count("sip.call_admitted")


async def test_calls_at_once_for_a_one_call_tenant_get_one_200_and_486_for_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tenants" / "delta").mkdir(parents=True)
    (tmp_path / "tenants" / "delta" / "tenant.toml").write_text(DELTA_TOML)
    tenants = TenantRegistry(tmp_path / "tenants", env={})
    assert not tenants.reload().problem_lines()
    trunk = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {"+15550400": "delta"}}

    async def on_call(call: Call) -> None:
        await call.ended.wait()

    async with in_process_sip(tmp_path, [trunk], on_call, admit=_serving(tenants)) as (_service, port):
        carriers = [RawCarrier(port, did="+15550400") for _ in range(4)]
        try:
            for carrier in carriers:  # all INVITEs leave before any is answered
                carrier.send_invite()
            # Hold the event loop (a blocking wait) until the SIP thread has admitted all four, so their calls
            # reach the admission hook together: the worst case, where each must not count the others.
            seen: list[str] = []
            assert wait_until(lambda: admitted(capsys, seen) >= 4, 5.0)
            answers = await asyncio.gather(*(asyncio.to_thread(c.final_answer) for c in carriers))
            assert sorted(a.status or 0 for a in answers) == [200, 486, 486, 486]
        finally:
            for carrier in carriers:
                carrier.close()
