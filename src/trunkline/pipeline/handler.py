"""The per-call handler the SIP service runs for every answered call: it builds one `Agent` from the call's
tenant (policy, tools, ASR, TTS, timers) and runs it until the call ends.

`build_call_handler(config, tenants, store, environ)` is the composition root's entry point. Models are
loaded lazily, once per process (`warm()` loads them ahead of the first call); worker pools and the HTTP
client for webhook tools are shared by all calls; tool catalogs without MCP servers are built once per
tenant version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from trunkline.config.cores import speech_workers, usable_cores
from trunkline.config.model import Config
from trunkline.logs import get_logger
from trunkline.pipeline.agent import HOLD_LINE, TRANSFER_FAILED_KEY, Agent
from trunkline.pipeline.asr import LocalWhisper, OpenAITranscriber, SpeechRecognizer
from trunkline.pipeline.clauses import FAST_FIRST_SOFT_WORDS, split_clauses
from trunkline.pipeline.conversation import CatalogTools, Conversation
from trunkline.pipeline.llm import LlmTurnRunner, TurnLimits, make_openai_client
from trunkline.pipeline.models import BoundedPool
from trunkline.pipeline.policy import IntentsPolicy, LlmPolicy, ReplyPolicy, TokensUsed, ToolUsed
from trunkline.pipeline.speaker import STOCK_LEADS, Playback, Speaker, is_stock_phrase
from trunkline.pipeline.tts import LocalPiper, OpenAISpeech, PromptCache, SpeechSynthesizer
from trunkline.pipeline.work import CallActions, CallerTurn
from trunkline.store import CallStore, ToolCallRecord, ToolStatus, TurnRecord, UsageRecord
from trunkline.store import Speaker as Who
from trunkline.tenants.intents import render_template, template_names
from trunkline.tenants.model import TenantConfig
from trunkline.tenants.registry import TenantRegistry
from trunkline.tools.catalog import ToolBudget, ToolCatalog, ToolContext
from trunkline.tools.factory import base_catalog, build_catalog
from trunkline.vad.bargein import BargeInPolicy
from trunkline.vad.listener import TurnListener, agent_segmenter
from trunkline.vad.turns import CallTimers, CallTimersConfig
from trunkline.vad.vad import WebRtcVad

log = get_logger("trunkline.pipeline.handler")
CallHandler = Callable[[Any], Awaitable[None]]
WARM_RATE_HZ = 8000  # G.711, the usual trunk codec: its prompts are synthesized before the first call
MAX_DURATION_WARNING = "We're almost out of time for this call."
MAX_DURATION_GOODBYE = "I'm sorry, we've reached the time limit for this call. Goodbye!"


def prompt_texts(tenant: TenantConfig) -> dict[str, str]:
    """The fixed lines of a call, keyed as `CallTimersConfig` names them, rendered with tenant fields."""
    fields = tenant.template_fields()
    texts = {
        "greeting": tenant.greeting,
        "reprompt": tenant.silence.reprompt_text,
        "goodbye_silence": tenant.silence.goodbye_text,
        "max_duration_warning": MAX_DURATION_WARNING,
        "goodbye_max_duration": MAX_DURATION_GOODBYE,
        TRANSFER_FAILED_KEY: tenant.transfer.failed_message,
    }
    if tenant.recording.enabled and tenant.recording.disclosure:
        texts["disclosure"] = tenant.recording.disclosure
    return {key: render_template(text, fields) for key, text in texts.items()}


def fixed_reply_leads(tenant: TenantConfig) -> list[str]:
    """Short first clauses of intent replies that need no slot: replayed from the prompt cache, so the first
    word of such a reply has no synthesis gap (a live first clause can underrun on a starved core)."""
    fields = tenant.template_fields()
    leads = []
    for intent in tenant.intents:
        if intent.reply and set(template_names(intent.reply)) <= fields.keys():
            first = split_clauses(
                render_template(intent.reply, fields), first_min_soft_words=FAST_FIRST_SOFT_WORDS
            )
            leads += [c for c in first[:1] if is_stock_phrase(c)]
    return leads


def timers_config(tenant: TenantConfig) -> CallTimersConfig:
    max_call_s = max(60.0, tenant.limits.max_call_minutes * 60.0)
    return CallTimersConfig(
        reprompt_after_s=tenant.silence.reprompt_after_s,
        max_silences=tenant.silence.max_reprompts + 1,
        max_call_s=max_call_s,
        warn_before_end_s=min(30.0, max_call_s / 4),
        consent_required=bool(tenant.recording.enabled and tenant.recording.disclosure),
    )


def record_id_of(call: Any) -> uuid.UUID:
    """The call record's id: `call.record_id` if the composition root set it, else the `call_id` bound in
    the log context by `RecordedCalls`, else one derived from the SIP Call-ID."""
    for value in (getattr(call, "record_id", None), structlog.contextvars.get_contextvars().get("call_id")):
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sip:{call.call_id}")


class StoreRecorder:
    """Turns, tool calls and usage of one call into the store, and turn latencies into the log."""

    def __init__(
        self, store: CallStore, tenant_id: str, call_id: uuid.UUID, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._tenant_id = tenant_id
        self._call_id = call_id
        self._clock = clock
        self._seq = 0
        self.turns: list[TurnRecord] = []

    def _wall(self, monotonic_s: float) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=max(0.0, self._clock() - monotonic_s))

    def _add(self, record: TurnRecord) -> None:
        self.turns.append(record)
        self._store.record_turn(record)

    def caller_turn(self, turn: CallerTurn) -> None:
        self._seq += 1
        latency = turn.latency.breakdown_ms() if turn.latency else {}
        self._add(TurnRecord(self._tenant_id, self._call_id, self._seq, Who.CALLER, turn.text,
                             self._wall(turn.onset_s), self._wall(turn.end_s), latency))  # fmt: skip

    def agent_turn(self, playback: Playback, heard: str | None, ended_s: float) -> None:
        if not playback.clauses:
            return
        self._seq += 1
        latency = playback.latency.breakdown_ms() if playback.latency else {}
        if latency:
            log.info("agent.turn_latency", **{f"{k}_ms": v for k, v in latency.items()})
        started = playback.started_at if playback.started_at is not None else ended_s
        self._add(TurnRecord(self._tenant_id, self._call_id, self._seq, Who.AGENT, playback.text,
                             self._wall(started), self._wall(ended_s), latency,
                             interrupted=playback.interrupted, heard_text=heard))  # fmt: skip

    def tool_used(self, used: ToolUsed) -> None:
        try:
            arguments = json.loads(used.arguments_json or "{}")
        except ValueError:
            arguments = {"_": used.arguments_json}
        status = (
            ToolStatus.OK
            if used.result.ok
            else (ToolStatus.TIMEOUT if used.result.status == "timeout" else ToolStatus.ERROR)
        )
        self._store.record_tool_call(ToolCallRecord(
            self._tenant_id, self._call_id, used.name, arguments if isinstance(arguments, dict) else {},
            used.result.content, status, self._wall(used.started_at_s), used.result.duration_ms,
        ))  # fmt: skip

    def tokens_used(self, used: TokensUsed) -> None:
        self._store.record_usage(UsageRecord(self._tenant_id, self._call_id, datetime.now(UTC),
                                             llm_tokens_in=used.prompt_tokens,
                                             llm_tokens_out=used.completion_tokens))  # fmt: skip


class AgentCallControl:
    """`CallControl` for built-in tools: both act once the agent's queued speech has played."""

    def __init__(self) -> None:
        self.agent: Agent | None = None

    async def hang_up(self, reason: str) -> None:
        if self.agent is not None:
            self.agent.end_call(reason)

    async def transfer(self, target: str) -> None:
        if self.agent is not None:
            self.agent.transfer(target)


class AgentCalls:
    """The `on_call` handler: one agent per answered call.

    ASR and TTS have separate pools, so a reply's synthesis never queues behind a decode (a stale
    speculative one included); each model already uses both cores for one job, so one ASR worker is
    enough, and two TTS workers let a second call's reply start while the first one's clause is made."""

    def __init__(
        self, tenants: TenantRegistry, store: CallStore, *, asr_workers: int = 1, tts_workers: int = 2
    ) -> None:
        self._tenants = tenants
        self._store = store
        self.asr_pool = BoundedPool("asr", asr_workers, 8)
        self.tts_pool = BoundedPool("tts", tts_workers, 16)
        # word timings let the endpointer spot words the decode dropped ("bathroom and" -> "bathroom.")
        self.whisper = LocalWhisper(self.asr_pool, cpu_threads=2, fitted_window=True, word_timestamps=True)
        self.prompts = PromptCache(256)
        self._catalogs: dict[int, tuple[TenantConfig, ToolCatalog]] = {}
        self._openai_clients: dict[tuple[str, str | None], Any] = {}
        self._http: httpx.AsyncClient | None = None
        self._warmed = False

    async def warm(self) -> None:
        """Load whisper and piper now (in worker threads) so the first caller does not wait."""
        if self._warmed:
            return
        piper = LocalPiper(self.tts_pool)
        await asyncio.gather(
            asyncio.to_thread(self.whisper.preload),
            asyncio.to_thread(piper.preload),
            asyncio.to_thread(self._make_openai_clients, list(self._tenants.serving().values())),
        )
        if self._http is None:  # its SSL context takes ~0.1-0.3 s to load: not on the loop mid-call
            self._http = await asyncio.to_thread(httpx.AsyncClient, follow_redirects=False)
        self._warmed = True
        for tenant in self._tenants.serving().values():
            if tenant.tts.engine == "local":
                lines = [*prompt_texts(tenant).values(), tenant.policy.fallback_reply, HOLD_LINE]
                lines += STOCK_LEADS
                lines += fixed_reply_leads(tenant)
                await self.prompts.warm(LocalPiper(self.tts_pool, output_rate_hz=WARM_RATE_HZ), lines)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        for client in self._openai_clients.values():
            await client.close()
        self._openai_clients.clear()

    def _make_openai_clients(self, tenants: list[TenantConfig]) -> None:
        """In a worker thread: import the SDK and build the tenants' clients (seconds of work that must not
        stall the event loop, and so the media, when the first call arrives)."""
        for tenant in tenants:
            for settings in (tenant.llm, tenant.asr, tenant.tts):
                base_url = getattr(settings, "base_url", None)
                if base_url and getattr(settings, "engine", "openai") == "openai":
                    client = self._openai(base_url, getattr(settings, "api_key", None))
                    _ = client.chat.completions, client.audio.speech, client.audio.transcriptions

    def _openai(self, base_url: str, api_key: Any) -> Any:
        """One shared client (and connection pool) per endpoint and key, for every call."""
        key = api_key.reveal() if api_key else None
        client = self._openai_clients.get((base_url, key))
        if client is None:
            client = self._openai_clients[(base_url, key)] = make_openai_client(base_url, key)
        return client

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def _catalog(self, tenant: TenantConfig, stack: contextlib.AsyncExitStack) -> ToolCatalog:
        if any(s.enabled for s in tenant.mcp_servers):  # MCP sessions live in the call's task
            return await build_catalog(tenant, self._client(), stack)
        cached = self._catalogs.get(id(tenant))
        if cached is None or cached[0] is not tenant:
            cached = (tenant, base_catalog(tenant, self._client()))
            self._catalogs[id(tenant)] = cached
        return cached[1]

    def _asr(self, tenant: TenantConfig) -> SpeechRecognizer:
        s = tenant.asr
        if s.engine == "openai" and s.base_url:
            return OpenAITranscriber(self._openai(s.base_url, s.api_key), model=s.model)
        return self.whisper

    def _tts(self, tenant: TenantConfig, rate_hz: int) -> SpeechSynthesizer:
        s = tenant.tts
        if s.engine == "openai" and s.base_url:
            client = self._openai(s.base_url, s.api_key)
            return OpenAISpeech(client, model=s.model or "tts-1", voice=s.voice, output_rate_hz=rate_hz)
        return LocalPiper(self.tts_pool, output_rate_hz=rate_hz)

    def _policy(self, tenant: TenantConfig, catalog: ToolCatalog, ctx: ToolContext) -> ReplyPolicy:
        intents = IntentsPolicy(tenant, catalog, ctx)
        llm = tenant.llm
        if tenant.policy.mode != "llm" or llm is None:
            return intents
        client = self._openai(llm.base_url, llm.api_key)
        tools = CatalogTools(catalog, ctx)
        limits = TurnLimits(
            turn_timeout_s=llm.timeout_s + 10, temperature=llm.temperature, max_tokens=llm.max_tokens
        )
        runner = LlmTurnRunner(client, model=llm.model, limits=limits, tools=tools)
        return LlmPolicy(runner, Conversation(tenant.system_prompt), tools=tools,
                         fallback=intents if tenant.intents else None,
                         fallback_line=tenant.policy.fallback_reply)  # fmt: skip

    async def __call__(self, call: Any) -> None:
        tenant = self._tenants.get(call.tenant) if call.tenant else None
        if tenant is None:
            log.warning("agent.no_tenant", tenant=call.tenant)
            return
        if not self._warmed:
            await self.warm()
        async with contextlib.AsyncExitStack() as stack:
            agent = await self._build(call, tenant, stack)
            await agent.run()

    async def _build(self, call: Any, tenant: TenantConfig, stack: contextlib.AsyncExitStack) -> Agent:
        leg = call.leg
        loop = asyncio.get_running_loop()
        control = AgentCallControl()
        record_id = record_id_of(call)
        ctx = ToolContext(tenant.tenant_id, str(record_id), control, ToolBudget(tenant.limits.max_tool_calls))
        catalog = await self._catalog(tenant, stack)
        prompts = prompt_texts(tenant)
        speaker = Speaker(leg, self._tts(tenant, leg.sample_rate_hz), self.prompts, clock=loop.time)
        agent = Agent(
            leg,
            vad=WebRtcVad(leg.sample_rate_hz, aggressiveness=2, frame_ms=20),
            listener=TurnListener(agent_segmenter()),
            barge_in=BargeInPolicy(),
            timers=CallTimers(timers_config(tenant)),
            asr=self._asr(tenant),
            speaker=speaker,
            policy=self._policy(tenant, catalog, ctx),
            prompts=prompts,
            actions=CallActions(call.hangup, call.transfer),
            recorder=StoreRecorder(self._store, tenant.tenant_id, record_id, loop.time),
            events=call.events,
            language=tenant.language.split("-")[0] or "en",
        )
        control.agent = agent
        return agent


def build_call_handler(
    config: Config, tenants: TenantRegistry, store: CallStore, environ: Mapping[str, str]
) -> AgentCalls:
    """The per-call coroutine for `SipService` (wrap it in `RecordedCalls`); models load on first use. One
    whisper worker per two usable cores (each decode runs on two threads), and as many piper workers (at
    least two)."""
    del config, environ  # per-call settings come from the tenant
    workers = speech_workers(usable_cores())
    return AgentCalls(tenants, store, asr_workers=workers, tts_workers=max(2, workers))
