"""The voice agent end to end on the real SIP/RTP path with real local models: baresip calls (a synthesized
WAV as its microphone, what it hears and sends recorded), the agent answers, and faster-whisper checks what
the caller heard. One server for the module (models warm once) serves four tenants: the demo tenant (offline
intents policy), the same tenant driven by the stub OpenAI server (short and long greeting), and the LLM
tenant again behind kamailio as the carrier trunk. Every call prints the end-of-speech → agent-audio delay
measured from the caller's own recordings (`pytest -s`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from tests.integration.agent_env import (
    SHORT_GREETING,
    AgentServer,
    BookingServer,
    agent_server,
    booking_server,
    carrier_trunk,
    demo_tenant,
    llm_tenant,
    transcribe,
    voiced_spans,
    wait_registered,
    words,
)
from tests.peers.baresip import BaresipCaller, BaresipResult
from tests.peers.kamailio import KamailioTrunk
from tests.peers.openai_stub import ChatStream, Hang, HttpError, OpenAIStub, text_chunks, tool_call_chunks
from tests.peers.pcap_audio import DigitAt, rtp_stream, write_rtp_pcap
from tests.peers.sipp import SippProcess
from tests.peers.sipp_scenarios import uac_basic
from tests.peers.speech import synthesize
from trunkline.store import CallEnd, CallRecord, Speaker, TurnRecord

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
RATE = 8000
BOOKING = "I'd like to book a cleaning on Tuesday at ten."
DEMO_DID, LLM_DID, TRUNK_DID, LONG_DID = "+15550100", "+15550200", "+15550300", "+15550400"
QUIET_DID = "+15550500"
LONG_GREETING = (
    "Thank you for calling Bright Smile Dental. This is Joy, the virtual receptionist. "
    "I can book an appointment, tell you our opening hours, or put you through to the front desk. "
    "How can I help you today?"
)
PASSWORD = "correct-horse"


@dataclass
class Env:
    server: AgentServer
    stub: OpenAIStub
    booking: BookingServer
    kamailio: KamailioTrunk
    workdir: Path


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioTrunk]:
    kam = KamailioTrunk(tmp_path_factory.mktemp("kam"), {"alice": PASSWORD}, {TRUNK_DID: "alice"})
    kam.start()
    yield kam
    kam.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, kamailio: KamailioTrunk) -> AsyncIterator[Env]:
    workdir = tmp_path_factory.mktemp("agent")
    carrier = carrier_trunk(kamailio, {TRUNK_DID: "llm"})
    local = {"name": "local", "allowed_sources": ["127.0.0.1/32"],
             "dids": {DEMO_DID: "demo", LLM_DID: "llm", LONG_DID: "llmlong", QUIET_DID: "quiet"}}  # fmt: skip
    async with OpenAIStub() as stub, booking_server() as booking:
        tenants = {
            "demo": demo_tenant(booking.url),
            "llm": llm_tenant(stub.base_url, booking.url),
            "llmlong": llm_tenant(stub.base_url, booking.url, greeting=LONG_GREETING, did=LONG_DID),
            "quiet": quiet_tenant(booking.url),
        }
        async with agent_server(
            workdir, tenants, {}, trunks=[carrier, local], env={"CARRIER_PASSWORD": PASSWORD}
        ) as server:
            await wait_registered(kamailio)
            yield Env(server, stub, booking, kamailio, workdir)


def quiet_tenant(booking_url: str) -> str:
    """The demo tenant recording calls (so the disclosure comes first) with short silence handling."""
    text = demo_tenant(booking_url).replace('numbers = ["+15550100"]', f'numbers = ["{QUIET_DID}"]')
    text = text.replace("[recording]\nenabled = false", "[recording]\nenabled = true")
    text = text.replace("reprompt_after_s = 7", "reprompt_after_s = 2").replace(
        "max_reprompts = 2", "max_reprompts = 1"
    )
    text = re.sub(r"^reprompt_text = .*$", 'reprompt_text = "Are you still there?"', text, flags=re.M)
    return re.sub(r"^goodbye_text = .*$", 'goodbye_text = "Goodbye for now!"', text, flags=re.M)


@pytest.fixture
def fresh(env: Env) -> Env:
    """Per test: nothing scripted, no recorded requests left over from the previous test."""
    env.stub.chat.clear()
    env.stub.requests.clear()
    env.booking.requests.clear()
    env.booking.delay_s = 0.0
    return env


# --- placing a call and reading what happened ------------------------------------------------------------


@dataclass
class CallOutcome:
    result: BaresipResult
    records: list[Any]

    @property
    def turns(self) -> list[TurnRecord]:
        return [r for r in self.records if isinstance(r, TurnRecord)]

    def said_by(self, who: Speaker) -> list[TurnRecord]:
        return [t for t in self.turns if t.speaker is who]

    def heard_between(self, start_s: float, end_s: float | None = None) -> str:
        rate = self.result.sample_rate_hz
        heard = self.result.heard
        return transcribe(heard[int(start_s * rate) : None if end_s is None else int(end_s * rate)], rate)


def mic(*lines: tuple[float, str]) -> np.ndarray:
    """The caller's microphone: each (start_s, text) spoken at its time, silence elsewhere."""
    parts = [(round(at * RATE), synthesize(text, RATE)) for at, text in lines]
    out = np.zeros(max(start + len(v) for start, v in parts), dtype=np.int16)
    for start, voice in parts:
        out[start : start + len(voice)] = voice
    return out


async def place_call(env: Env, name: str, uri: str, audio: np.ndarray, seconds: int) -> CallOutcome:
    """baresip calls `uri`; returns its recordings and the store records of this call (once ended)."""
    server = env.server
    before_calls, before_records = len(server.calls), len(server.store.records)
    caller = BaresipCaller(env.workdir / name, audio, RATE, seconds=seconds)
    result = await asyncio.to_thread(caller.call, uri)
    assert result.established, result.describe()
    await server.wait_ended(before_calls + 1, timeout_s=20)
    records = server.store.records[before_records:]
    return CallOutcome(result, records)


def caller_spans(result: BaresipResult) -> list[tuple[float, float]]:
    """When the caller spoke, from what baresip sent."""
    return voiced_spans(result.sent, result.sample_rate_hz, gap_s=0.6)


def agent_onsets(result: BaresipResult) -> list[tuple[float, float]]:
    """(caller speech end, first agent audio heard after it) for each caller utterance that the agent
    answered in silence, from baresip's sent/heard recordings."""
    heard = voiced_spans(result.heard, result.sample_rate_hz)
    pairs = []
    for _start, end in caller_spans(result):
        if any(s < end <= e for s, e in heard):
            continue  # the agent was audible when the caller stopped: no gap to measure
        after = [s for s, _e in heard if s > end]
        if after:
            pairs.append((end, after[0]))
    return pairs


def report_wire(label: str, outcome: CallOutcome) -> list[float]:
    """Print end of caller speech → agent audio at the caller (ms), per answered utterance."""
    gaps = [1000 * (onset - end) for end, onset in agent_onsets(outcome.result)]
    agent = [t for t in outcome.said_by(Speaker.AGENT) if t.latency_ms]
    server = [dict(t.latency_ms) for t in agent]
    print(f"\n[{label}] wire end-of-speech -> agent audio: {[round(g) for g in gaps]} ms; server: {server}")
    return gaps


def chat_requests(stub: OpenAIStub) -> list[dict[str, Any]]:
    return [r.json for r in stub.requests_to("/chat/completions") if r.json is not None]


# --- the booking conversation ----------------------------------------------------------------------------


async def test_demo_tenant_books_with_intents(fresh: Env) -> None:
    env = fresh
    uri = f"sip:{DEMO_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "intents", uri, mic((3.0, BOOKING)), seconds=13)
    assert env.booking.requests == [{"day": "tuesday", "time": "10:00"}]
    heard = transcribe(outcome.result.heard, RATE)
    assert {"smile", "help"} <= words(heard), heard
    assert {"noted", "tuesday"} <= words(heard), heard
    (caller,) = outcome.said_by(Speaker.CALLER)
    assert {"book", "cleaning", "tuesday"} <= words(caller.text), caller
    reply = next(t for t in outcome.said_by(Speaker.AGENT) if "noted" in t.text)
    assert "at 10 AM" in reply.text  # the tool got "10:00"; the caller hears it the way people say it
    assert list(reply.latency_ms) == [
        "endpoint",
        "transcript",
        "first_llm_token",
        "first_tts_audio",
        "first_rtp_out",
    ]
    assert report_wire("intents booking", outcome)
    # the call record keeps baresip's RTCP view of our audio: nothing lost on loopback, a round trip
    (end,) = [r for r in outcome.records if isinstance(r, CallEnd)]
    assert end.media.far_end_loss_pct == 0.0 and end.media.far_end_jitter_ms is not None, end.media
    assert end.media.round_trip_ms is not None and 0 <= end.media.round_trip_ms < 500, end.media


def script_booking(stub: OpenAIStub) -> None:
    """The model asks for the booking tool (arguments split across deltas), then answers in words."""
    pieces = ['{"day": "tues', 'day", "ti', 'me": "10:00"}']
    stub.chat.append(ChatStream(tuple(tool_call_chunks([("call_book_1", "book_appointment", pieces)],
                                                       usage=(120, 18)))))  # fmt: skip
    reply = ["You're booked ", "for Tuesday at ten. ", "Anything else?"]
    stub.chat.append(ChatStream(tuple(text_chunks(reply, usage=(160, 12)))))


def check_llm_booking(env: Env, outcome: CallOutcome) -> None:
    assert env.booking.requests == [{"day": "tuesday", "time": "10:00"}]
    first, second = chat_requests(env.stub)[:2]
    assert "book_appointment" in {t["function"]["name"] for t in first["tools"]}
    assert first["messages"][-1]["role"] == "user"
    # what the server heard (tiny whisper over live RTP): two of the three key words is enough to be this turn
    assert len({"book", "cleaning", "tuesday"} & words(first["messages"][-1]["content"])) >= 2, first
    calls = [m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"]["arguments"] == '{"day": "tuesday", "time": "10:00"}'
    results = [m for m in second["messages"] if m["role"] == "tool"]
    assert results and results[-1]["tool_call_id"] == "call_book_1", second["messages"]
    assert "B-1234" in results[-1]["content"], results
    end = caller_spans(outcome.result)[0][1]
    heard = outcome.heard_between(end)
    # whisper hears the tiny-model way ("booked" came back as "both" once): any reply word will do
    assert "tuesday" in words(heard) and words(heard) & {"booked", "book", "anything", "else"}, heard
    reply = next(t for t in outcome.said_by(Speaker.AGENT) if "booked" in t.text)
    assert not reply.interrupted


async def test_llm_tenant_books_through_the_model(fresh: Env) -> None:
    env = fresh
    script_booking(env.stub)
    uri = f"sip:{LLM_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "llm", uri, mic((3.0, BOOKING)), seconds=15)
    check_llm_booking(env, outcome)
    assert report_wire("llm booking, direct", outcome)


async def test_llm_tenant_books_through_the_kamailio_trunk(fresh: Env) -> None:
    env = fresh
    script_booking(env.stub)
    uri = f"sip:{TRUNK_DID}@127.0.0.1:{env.kamailio.pstn_port}"
    outcome = await place_call(env, "trunk", uri, mic((3.0, BOOKING)), seconds=15)
    call = next(r for r in outcome.records if isinstance(r, CallRecord))
    assert call.to_number == TRUNK_DID and call.tenant_id == "llm"  # only kamailio routes this DID to us
    check_llm_booking(env, outcome)
    assert report_wire("llm booking, kamailio trunk", outcome)


async def test_slow_tool_gets_a_hold_line(fresh: Env) -> None:
    """The booking system takes 2.5 s: the caller hears "one moment" instead of dead air, then the reply."""
    env = fresh
    env.booking.delay_s = 2.5
    script_booking(env.stub)
    uri = f"sip:{LLM_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "slowtool", uri, mic((3.0, BOOKING)), seconds=16)
    end = caller_spans(outcome.result)[0][1]
    heard = outcome.heard_between(end)
    assert {"one", "moment", "tuesday"} <= words(heard), heard
    reply = next(t for t in outcome.said_by(Speaker.AGENT) if "booked" in t.text)
    assert reply.text.startswith("One moment."), reply.text
    report_wire("slow tool", outcome)


# --- the model fails -------------------------------------------------------------------------------------


async def test_llm_500_and_stall_fall_back_and_the_call_goes_on(fresh: Env) -> None:
    """Turn 1: the endpoint answers 500; turn 2: it never answers; both times the caller hears the
    intents fallback. Turn 3: the model answers again and is heard."""
    env = fresh
    hung = env.stub.gate()
    env.stub.chat.append(HttpError(500))
    env.stub.chat.append(Hang(hung))
    env.stub.chat.append(ChatStream(tuple(text_chunks(["Yes, we're open ", "on Saturday morning."]))))
    audio = mic((3.0, "Hello there."), (9.0, "Hello again."), (15.0, "Are you open on Saturday?"))
    uri = f"sip:{LLM_DID}@127.0.0.1:{env.server.sip_port}"
    try:
        outcome = await place_call(env, "fallback", uri, audio, seconds=24)
    finally:
        hung.set()
    assert len(chat_requests(env.stub)) == 3
    spans = caller_spans(outcome.result)
    assert len(spans) == 3, spans
    first = outcome.heard_between(spans[0][1], spans[1][0])
    second = outcome.heard_between(spans[1][1], spans[2][0])
    third = outcome.heard_between(spans[2][1])
    # the intents' greeting reply ("Hello! How can I help you today?"), said for the failed model; two of its
    # words are enough (tiny whisper once heard "Hello" as "Oh, well")
    greeting = {"hello", "help", "today"}
    assert len(greeting & words(first)) >= 2, first
    assert len(greeting & words(second)) >= 2, second
    assert {"open", "saturday"} <= words(third), third
    gaps = report_wire("llm 500 / stall / ok", outcome)
    assert len(gaps) == 3, gaps
    messages = chat_requests(env.stub)[2]["messages"]
    assert [m["role"] for m in messages[-5:]] == ["user", "assistant", "user", "assistant", "user"]


# --- barge-in and backchannels ---------------------------------------------------------------------------


async def test_barge_in_during_the_greeting(fresh: Env) -> None:
    env = fresh
    env.stub.chat.append(ChatStream(tuple(text_chunks(["Of course. ", "What time on Tuesday suits you?"]))))
    uri = f"sip:{LONG_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "barge", uri, mic((2.5, "Can I book a cleaning on Tuesday?")), seconds=12)
    greeting = outcome.said_by(Speaker.AGENT)[0]
    assert greeting.interrupted, greeting
    heard_text = greeting.heard_text or ""
    assert heard_text and LONG_GREETING.startswith(heard_text) and heard_text != LONG_GREETING, heard_text
    (request,) = chat_requests(env.stub)
    roles = [(m["role"], m.get("content")) for m in request["messages"][1:]]
    assert roles[0] == ("assistant", heard_text), roles  # the context holds only what was heard
    assert roles[-1][0] == "user" and len({"book", "cleaning", "tuesday"} & words(roles[-1][1] or "")) >= 2, (
        roles
    )
    onset, end = caller_spans(outcome.result)[0]
    heard_spans = voiced_spans(outcome.result.heard, RATE)
    greeting_span = [s for s in heard_spans if s[0] < onset][-1]  # the stretch the caller talked over
    cut_ms = 1000 * (greeting_span[1] - onset)
    print(f"\n[barge-in] greeting audio stopped {cut_ms:.0f} ms after the caller's speech onset")
    assert greeting_span[1] < end, (greeting_span, onset, end)  # stopped while the caller still spoke
    reply = outcome.heard_between(end)
    assert {"time", "tuesday"} <= words(reply), reply
    report_wire("barge-in", outcome)


async def test_backchannel_does_not_stop_the_greeting(fresh: Env) -> None:
    env = fresh
    uri = f"sip:{LONG_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "backchannel", uri, mic((3.0, "Uh-huh.")), seconds=13)
    greeting = outcome.said_by(Speaker.AGENT)[0]
    assert not greeting.interrupted, greeting
    assert chat_requests(env.stub) == []  # nothing for the model to answer
    assert not outcome.said_by(Speaker.CALLER)
    heard = transcribe(outcome.result.heard, RATE)
    assert {"appointment", "hours", "desk", "today"} <= words(heard), heard


# --- DTMF and end_call -----------------------------------------------------------------------------------


async def test_dtmf_reaches_the_model_and_end_call_hangs_up(fresh: Env, tmp_path: Path) -> None:
    env = fresh
    end_call = [("call_end_1", "end_call", [json.dumps({"reason": "caller pressed 1"})])]
    env.stub.chat.append(ChatStream(tuple(tool_call_chunks(end_call))))
    env.stub.chat.append(ChatStream(tuple(text_chunks(["Thanks for calling. ", "Goodbye!"]))))
    pcm = np.zeros(4 * RATE, dtype=np.int16)
    pcap = write_rtp_pcap(tmp_path / "dtmf.pcap", rtp_stream(pcm, [DigitAt("1", 3.0, 160)]))
    before = len(env.server.calls)
    sipp = SippProcess(uac_basic(pcap, remote_hangup=True), tmp_path / "sipp",
                       remote=("127.0.0.1", env.server.sip_port), service=LLM_DID, timeout_s=30)  # fmt: skip
    sipp.start()
    result = await asyncio.to_thread(sipp.wait)
    assert result.ok, result.describe()  # the server sent BYE and SIPp answered it
    await env.server.wait_ended(before + 1)
    first = chat_requests(env.stub)[0]
    assert first["messages"][-1] == {"role": "user", "content": "The caller pressed 1."}
    records = env.server.store.records
    goodbye = next(r for r in records if isinstance(r, TurnRecord) and "Goodbye" in r.text)
    assert not goodbye.interrupted


# --- the agent's own lines: consent, re-prompt, goodbye on silence -----------------------------------------


async def test_silent_caller_hears_disclosure_reprompt_and_goodbye(fresh: Env) -> None:
    env = fresh
    uri = f"sip:{QUIET_DID}@127.0.0.1:{env.server.sip_port}"
    outcome = await place_call(env, "quiet", uri, np.zeros(RATE, dtype=np.int16), seconds=18)
    text = transcribe(outcome.result.heard, RATE).lower()
    assert {"recorded", "smile", "still", "there", "goodbye"} <= words(text), text
    assert text.index("recorded") < text.index("smile") < text.index("still") < text.index("goodbye"), text
    assert not outcome.said_by(Speaker.CALLER)
    said = [t.text for t in outcome.said_by(Speaker.AGENT)]
    assert said == ["This call may be recorded for quality and training.", SHORT_GREETING,
                    "Are you still there?", "Goodbye for now!"], said  # fmt: skip
    ended = re.search(r"terminated \(duration: (\d+) secs\)", outcome.result.log)
    assert ended and int(ended.group(1)) < 17, outcome.result.log[-500:]  # we hung up, not baresip
