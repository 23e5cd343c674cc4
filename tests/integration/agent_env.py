"""Fixtures for the agent end-to-end tests: an in-process server (SipService + MediaEngine + the agent
handler wrapped in `RecordedCalls`, a `MemoryCallStore`), a booking webhook on 127.0.0.1, test tenants
derived from the committed demo tenant, and helpers to measure what the caller heard.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.integration.sip_server import rtp_range
from tests.peers.kamailio import free_udp_port
from trunkline.config.loader import parse_config
from trunkline.mediaserver.engine import MediaEngine
from trunkline.pipeline.handler import AgentCalls, build_call_handler
from trunkline.server import RecordedCalls
from trunkline.sip.service import SipService
from trunkline.store import MemoryCallStore
from trunkline.tenants.registry import TenantRegistry

REPO = Path(__file__).resolve().parents[2]
DEMO_TOML = (REPO / "tenants" / "demo" / "tenant.toml").read_text()
SHORT_GREETING = "Bright Smile Dental, how can I help?"
_shared: dict[str, AgentCalls] = {}


def demo_tenant(booking_url: str, *, greeting: str = SHORT_GREETING, extra: str = "") -> str:
    """The committed demo tenant with a short greeting and its booking webhook enabled at `booking_url`
    (127.0.0.1 allowed). Everything else (intents, slots, silence handling) is as shipped."""
    text = DEMO_TOML.replace('enabled = false\nmethod = "POST"', 'enabled = true\nmethod = "POST"')
    text = text.replace("https://booking.example.com/api/appointments", booking_url)
    text = re.sub(r"^greeting = .*$", f"greeting = {json.dumps(greeting)}", text, count=1, flags=re.M)
    return text + '\n[network]\nallow_private = ["127.0.0.1"]\n' + extra


def llm_tenant(
    base_url: str, booking_url: str, *, greeting: str = SHORT_GREETING, did: str = "+15550200"
) -> str:
    """The demo tenant driven by an LLM at `base_url` (its intents stay as the outage fallback)."""
    text = demo_tenant(booking_url, greeting=greeting).replace('mode = "intents"', 'mode = "llm"')
    text = text.replace("confirm_first = true", "confirm_first = false")
    text = text.replace('numbers = ["+15550100"]', f"numbers = [{json.dumps(did)}]")
    llm = f'\n[llm]\nbase_url = "{base_url}"\nmodel = "stub-model"\ntimeout_s = 5\n'
    return text.replace("\n[asr]", llm + "\n[asr]", 1)


@dataclass
class BookingServer:
    """A booking webhook: records every JSON request and answers 200 with a confirmation."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0  # a slow booking system
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/book"

    async def _book(self, request: Request) -> JSONResponse:
        self.requests.append(await request.json())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return JSONResponse({"status": "booked", "confirmation": "B-1234"})

    async def start(self) -> None:
        app = Starlette(routes=[Route("/book", self._book, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@asynccontextmanager
async def booking_server() -> AsyncIterator[BookingServer]:
    server = BookingServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def carrier_trunk(kamailio: Any, dids: Mapping[str, str], user: str = "alice") -> dict[str, Any]:
    """The trunk that registers with `kamailio` (the test carrier) as `user`; the password comes from the
    environment variable CARRIER_PASSWORD, as an operator would configure it."""
    return {
        "name": "carrier",
        "host": "127.0.0.1",
        "port": kamailio.customer_port,
        "username": user,
        "password_env": "CARRIER_PASSWORD",
        "register": True,
        "dids": dict(dids),
        "allowed_sources": ["127.0.0.1/32"],
    }


async def wait_registered(kamailio: Any) -> None:
    registered = await asyncio.to_thread(kamailio.wait_for, lambda k: bool(k.registrations()), 15)
    assert registered, kamailio.log_text()[-2000:]


@dataclass
class AgentServer:
    sip_port: int
    store: MemoryCallStore
    handler: AgentCalls
    calls: list[Any]
    ended: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_ended(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until `count` calls have ended on the server side (their records are all written)."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: self.ended >= count)


@asynccontextmanager
async def agent_server(
    workdir: Path,
    tenants: Mapping[str, str],
    dids: Mapping[str, str],
    *,
    trunks: list[dict[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[AgentServer]:
    """SIP + media + the agent handler in this event loop; calls from 127.0.0.1 reach `dids` directly."""
    env = {"DEMO_BOOKING_TOKEN": "test-booking-token", **(env or {})}
    tenants_dir = workdir / "tenants"
    for tenant_id, text in tenants.items():
        (tenants_dir / tenant_id).mkdir(parents=True, exist_ok=True)
        (tenants_dir / tenant_id / "tenant.toml").write_text(text)
        (tenants_dir / tenant_id / "prompt.md").write_text("You are the receptionist. Answer briefly.\n")
    port = free_udp_port()
    low, high = rtp_range(40)
    local = {"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": dict(dids)}
    data = {
        "sip": {"listen_port": port},
        "media": {"rtp_port_min": low, "rtp_port_max": high},
        "server": {"tenants_dir": str(tenants_dir), "state_dir": str(workdir / "state")},
        "trunk": trunks if trunks is not None else [local],
    }
    config = parse_config(data, "inline.toml", dict(env or {}), workdir)
    registry = TenantRegistry(tenants_dir, env=dict(env or {}))
    report = registry.reload()
    assert report.ok, report.problem_lines()
    store = MemoryCallStore()
    handler = build_call_handler(config, registry, store, dict(env or {}))
    shared = _shared.get("handler")  # models are per process anyway; reuse the pools between tests
    if shared is not None:
        handler.asr_pool, handler.tts_pool, handler.whisper = shared.asr_pool, shared.tts_pool, shared.whisper
        handler.prompts = shared.prompts
    await handler.warm()
    _shared["handler"] = handler
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    await engine.start()
    service = SipService()
    server = AgentServer(port, store, handler, [])

    async def on_call(call: Any) -> None:
        server.calls.append(call)
        try:
            await RecordedCalls(store, registry, handler)(call)
        finally:
            async with server.changed:
                server.ended += 1
                server.changed.notify_all()

    await service.start(asyncio.get_running_loop(), config, engine, on_call)
    try:
        yield server
    finally:
        await service.aclose()
        await engine.aclose()
        await handler.aclose()


# --- what the caller heard ------------------------------------------------------------------------------


def transcribe(pcm: np.ndarray, rate_hz: int) -> str:
    """faster-whisper (the bundled model) over a recording."""
    from faster_whisper import WhisperModel

    from trunkline.pipeline.asr import to_whisper_input
    from trunkline.pipeline.models import whisper_model_dir

    model = _model_cache.get("m")
    if model is None:
        model = _model_cache["m"] = WhisperModel(str(whisper_model_dir()), compute_type="int8", cpu_threads=2)
    segments, _ = model.transcribe(to_whisper_input(pcm, rate_hz), beam_size=1, language="en")
    return " ".join(s.text for s in segments)


_model_cache: dict[str, Any] = {}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def voiced_spans(
    pcm: np.ndarray, rate_hz: int, *, threshold: int = 600, gap_s: float = 0.35
) -> list[tuple[float, float]]:
    """(start_s, end_s) of audible stretches in 10 ms windows; gaps shorter than `gap_s` are bridged."""
    win = rate_hz // 100
    n = len(pcm) // win
    if n == 0:
        return []
    peaks = np.abs(pcm[: n * win].astype(np.int32)).reshape(n, win).max(axis=1)
    loud = np.flatnonzero(peaks > threshold)
    spans: list[tuple[float, float]] = []
    for i in loud:
        t = i / 100
        if spans and t - spans[-1][1] <= gap_s:
            spans[-1] = (spans[-1][0], t + 0.01)
        else:
            spans.append((t, t + 0.01))
    return spans
