"""The voice agent end to end on the real SIP/RTP path with real local models: baresip calls (a synthesized
WAV as its microphone, what it hears recorded), the agent answers, and faster-whisper checks what the caller
heard. Tenants: the demo tenant (offline intents policy) with its booking webhook pointed at a local server,
and the same tenant driven by the stub OpenAI server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.integration.agent_env import (
    agent_server,
    booking_server,
    demo_tenant,
    transcribe,
    voiced_spans,
    words,
)
from tests.peers.baresip import BaresipCaller, BaresipResult
from tests.peers.speech import pad, synthesize
from trunkline.store import Speaker, TurnRecord

pytestmark = pytest.mark.integration
RATE = 8000
BOOKING = "I'd like to book a cleaning on Tuesday at ten."
DEMO_DID, LLM_DID = "+15550100", "+15550200"


async def call(workdir: Path, port: int, did: str, mic: np.ndarray, seconds: int) -> BaresipResult:
    caller = BaresipCaller(workdir, mic, RATE, seconds=seconds)
    result = await asyncio.to_thread(caller.call, f"sip:{did}@127.0.0.1:{port}")
    assert result.established, result.describe()
    return result


def speech_after(before_s: float, text: str) -> tuple[np.ndarray, float]:
    """The caller's microphone: silence, then `text`; and when the speech ends (s from the start)."""
    voice = synthesize(text, RATE)
    return pad(voice, RATE, before_s=before_s), before_s + len(voice) / RATE


def reply_onset(result: BaresipResult, speech_end_s: float) -> float:
    """When the agent's answer became audible at the caller, after the caller stopped speaking."""
    spans = voiced_spans(result.heard, result.sample_rate_hz)
    after = [s for s, _e in spans if s > speech_end_s]
    assert after, f"no reply heard after {speech_end_s:.2f} s: {spans}"
    return after[0]


def turns(store: object) -> list[TurnRecord]:
    return [r for r in store.records if isinstance(r, TurnRecord)]  # type: ignore[attr-defined]


async def test_demo_tenant_books_with_intents(tmp_path: Path) -> None:
    async with booking_server() as booking:
        tenants = {"demo": demo_tenant(booking.url)}
        async with agent_server(tmp_path, tenants, {DEMO_DID: "demo"}) as srv:
            mic, speech_end = speech_after(3.0, BOOKING)
            result = await call(tmp_path / "caller", srv.sip_port, DEMO_DID, mic, seconds=20)
    assert booking.requests == [{"day": "tuesday", "time": "10:00"}]
    heard = transcribe(result.heard, result.sample_rate_hz)
    assert {"bright", "smile", "help"} <= words(heard), heard
    assert {"noted", "tuesday"} <= words(heard), heard
    caller_turns = [t for t in turns(srv.store) if t.speaker is Speaker.CALLER]
    agent_turns = [t for t in turns(srv.store) if t.speaker is Speaker.AGENT]
    assert {"book", "cleaning", "tuesday"} <= words(caller_turns[0].text), caller_turns
    reply = next(t for t in agent_turns if "noted" in t.text)
    assert list(reply.latency_ms) == [
        "endpoint",
        "transcript",
        "first_llm_token",
        "first_tts_audio",
        "first_rtp_out",
    ]
    onset = reply_onset(result, speech_end)
    print(f"\nwire: end of caller speech -> reply audible at caller: {1000 * (onset - speech_end):.0f} ms; "
          f"server breakdown {dict(reply.latency_ms)}")  # fmt: skip
