"""The `transfer_call` tool end to end through kamailio as the carrier, which digest-challenges every REFER
(we answer with the trunk's credentials) and refuses to transfer to one destination: the model asks for a
transfer, the agent says its reply, then sends REFER. Refused (403): the caller stays on the line and hears
the tenant's failed-transfer line. Accepted: kamailio relays the REFER to the caller's phone (baresip), which
takes it and calls the front desk; our leg ends as transferred."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from tests.integration.agent_env import (
    AgentServer,
    agent_server,
    booking_server,
    carrier_trunk,
    llm_tenant,
    transcribe,
    voiced_spans,
    wait_registered,
    words,
)
from tests.peers.baresip import BaresipCaller, BaresipResult
from tests.peers.kamailio import KamailioTrunk
from tests.peers.openai_stub import ChatStream, OpenAIStub, text_chunks, tool_call_chunks
from tests.peers.speech import synthesize
from trunkline.store import CallEnd, Speaker, TurnRecord
from trunkline.tenants.model import DEFAULT_TRANSFER_FAILED

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
RATE = 8000
TRUNK_DID = "+15550300"
REFUSED = "sip:refused@127.0.0.1:5070"  # kamailio will not transfer there (tests/peers/kamailio.REFER_RULES)
PASSWORD = "correct-horse"
ASK = "Can I speak to a person, please?"
REPLY = "Of course, I'll put you through to the front desk."


@dataclass
class Env:
    server: AgentServer
    stub: OpenAIStub
    kamailio: KamailioTrunk
    workdir: Path
    front_desk: socket.socket  # the transfer target: a bare UDP socket that records what reaches it


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioTrunk]:
    kam = KamailioTrunk(
        tmp_path_factory.mktemp("kam"), {"alice": PASSWORD}, {TRUNK_DID: "alice"}, check_refer=True
    )
    kam.start()
    yield kam
    kam.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, kamailio: KamailioTrunk) -> AsyncIterator[Env]:
    workdir = tmp_path_factory.mktemp("transfer")
    carrier = carrier_trunk(kamailio, {TRUNK_DID: "llm"})
    front_desk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front_desk.bind(("127.0.0.1", 0))
    desk_uri = f"sip:frontdesk@127.0.0.1:{front_desk.getsockname()[1]}"
    async with OpenAIStub() as stub, booking_server() as booking:
        tenant = llm_tenant(stub.base_url, booking.url, did=TRUNK_DID)
        tenant = tenant.replace("sip:frontdesk@127.0.0.1:5070", desk_uri)
        tenants = {"llm": tenant + f'\n[transfer.targets]\nclosed = "{REFUSED}"\n'}
        async with agent_server(
            workdir, tenants, {}, trunks=[carrier], env={"CARRIER_PASSWORD": PASSWORD}
        ) as server:
            await wait_registered(kamailio)
            yield Env(server, stub, kamailio, workdir, front_desk)
    front_desk.close()


def script_transfer(stub: OpenAIStub, arguments: str) -> None:
    """The model calls transfer_call with `arguments`, then says what it does."""
    stub.chat.clear()
    stub.chat.append(ChatStream(tuple(tool_call_chunks([("call_xfer_1", "transfer_call", [arguments])]))))
    stub.chat.append(ChatStream(tuple(text_chunks(["Of course, ", REPLY.removeprefix("Of course, ")]))))


def caller_mic() -> np.ndarray:
    voice = synthesize(ASK, RATE)
    out = np.zeros(3 * RATE + len(voice), dtype=np.int16)
    out[3 * RATE :] = voice
    return out


async def call(env: Env, name: str, uri: str, seconds: int) -> tuple[BaresipResult, list[Any]]:
    server = env.server
    before_calls, before_records = len(server.calls), len(server.store.records)
    caller = BaresipCaller(env.workdir / name, caller_mic(), RATE, seconds=seconds)
    # baresip lingers on a transfer call nobody answers: stop it shortly after its own deadline
    result = await asyncio.to_thread(caller.call, uri, seconds + 3)
    assert result.established, result.describe()
    await server.wait_ended(before_calls + 1, timeout_s=20)
    return result, server.store.records[before_records:]


async def test_a_refused_transfer_keeps_the_caller_on_the_line(env: Env) -> None:
    script_transfer(env.stub, '{"destination": "closed"}')
    uri = f"sip:{TRUNK_DID}@127.0.0.1:{env.kamailio.pstn_port}"
    result, records = await call(env, "refused", uri, seconds=14)
    log = env.kamailio.log_text()
    assert "TL-REFER-AUTHENTICATED user=alice" in log and "TL-REFER-REFUSED" in log
    agent = [r for r in records if isinstance(r, TurnRecord) and r.speaker is Speaker.AGENT]
    texts = [t.text for t in agent]
    assert texts[1:3] == [REPLY, DEFAULT_TRANSFER_FAILED], texts  # the reply, then the failed-transfer line
    (end,) = [r for r in records if isinstance(r, CallEnd)]
    assert end.end_reason == "remote_hangup"  # baresip hung up at the end: we never did
    caller_end = voiced_spans(result.sent, RATE, gap_s=0.6)[0][1]
    heard = transcribe(result.heard[int(caller_end * RATE) :], RATE)
    assert {"front", "desk"} <= words(heard), heard  # the reply before the REFER
    # the failed-transfer line after the 403 (whisper once heard "couldn't transfer" as "could entranced")
    assert len(words(heard) & {"sorry", "transfer", "anything", "else"}) >= 2, heard


async def test_an_accepted_transfer_ends_our_leg(env: Env) -> None:
    script_transfer(env.stub, "{}")  # the tenant's default target: the front desk
    uri = f"sip:{TRUNK_DID}@127.0.0.1:{env.kamailio.pstn_port}"
    env.front_desk.setblocking(False)
    while True:  # nothing left over from an earlier test
        try:
            env.front_desk.recv(65536)
        except BlockingIOError:
            break
    _result, records = await call(env, "accepted", uri, seconds=14)
    (end,) = [r for r in records if isinstance(r, CallEnd)]
    assert end.end_reason == "transferred"
    env.front_desk.settimeout(5)
    invite = env.front_desk.recv(65536).decode(errors="replace")  # baresip followed our REFER
    assert invite.startswith("INVITE sip:frontdesk@127.0.0.1:"), invite[:200]
    agent = [r for r in records if isinstance(r, TurnRecord) and r.speaker is Speaker.AGENT]
    assert all(t.text != DEFAULT_TRANSFER_FAILED for t in agent), [t.text for t in agent]
