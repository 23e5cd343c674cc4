"""The composition root: config → tenants, call store, media engine, SIP service, per-call handler.

Lifecycle: SIGTERM/SIGINT drain (new INVITEs get 503, calls in progress finish or hit the drain timeout,
registrations are removed) and exit 0; SIGHUP (or a changed tenant file) reloads tenants without touching
calls. A call for a tenant that is not serving (disabled, broken, unknown) is refused with 480 before it is
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trunkline.config.model import Config
from trunkline.logs import bind_call, get_logger
from trunkline.store import (
    CallEnd,
    CallRecord,
    CallStore,
    Direction,
    MediaQuality,
    StoreSettings,
    open_call_store,
)
from trunkline.tenants.registry import ReloadReport, TenantRegistry, watch_tenants
from trunkline.tenants.routing import routing_mismatches

if TYPE_CHECKING:
    from trunkline.mediaserver.leg import Leg

log = get_logger("trunkline.server")
CallHandler = Callable[[Any], Awaitable[None]]


class StartupError(Exception):
    """The server cannot start as configured; the message reads `file: key: why`."""


def media_quality(leg: Leg | None) -> MediaQuality:
    """The leg's RTP counters at hang-up, in the store's terms (zeros for a call that never had a leg)."""
    if leg is None:
        return MediaQuality()
    try:
        stats = leg.stats()
    except Exception:  # the call record must still be written
        log.exception("call.media_stats_failed")
        return MediaQuality()
    counters, jb, rtcp = stats.counters, stats.jitter_buffer, stats.rtcp
    far = None if rtcp is None else rtcp.far_end  # the far end's RTCP report on our stream, if it sent one
    return MediaQuality(
        packets_received=counters.received,
        packets_sent=counters.sent,
        packets_lost=max(0, stats.rtp_lost),  # negative when duplicates outnumber losses (RFC 3550 A.3)
        packets_late=jb.late,
        packets_discarded=jb.overflow_dropped + jb.duplicate + jb.discarded,
        concealed_frames=counters.frames_concealed,
        jitter_mean_ms=stats.interarrival_jitter_ms,  # RFC 3550 smoothed interarrival jitter
        far_end_loss_pct=None if far is None else round(100 * far.fraction_lost, 2),
        far_end_jitter_ms=None if far is None else far.jitter_ms,
        round_trip_ms=None if rtcp is None else rtcp.max_round_trip_ms,
    )


class RecordedCalls:
    """Wraps the per-call handler: binds log context, writes the call record at start and end."""

    def __init__(self, store: CallStore, tenants: TenantRegistry, handler: CallHandler) -> None:
        self._store = store
        self._tenants = tenants
        self._handler = handler

    async def __call__(self, call: Any) -> None:
        tenant = call.tenant if call.tenant and self._tenants.get(call.tenant) else None
        if tenant is None:
            # The tenant stopped serving between admission and answer (a reload): hang up.
            log.warning("call.tenant_not_serving", tenant=call.tenant)
            return
        record_id = uuid.uuid4()
        call.record_id = record_id  # the agent writes its turns under the same id
        bind_call(call_id=str(record_id), tenant_id=tenant)
        started = datetime.now(UTC)
        codec = call.media.codec if call.media else None
        inbound = call.direction == "inbound"
        self._store.record_call_started(
            CallRecord(
                tenant_id=tenant,
                call_id=record_id,
                direction=Direction(call.direction),
                from_number=call.remote_number if inbound else call.did,
                to_number=call.did if inbound else call.remote_number,
                started_at=started,
                sip_call_id=call.call_id,
                codec=codec,
                answered_at=started,
            )
        )
        reason = "hangup"
        try:
            await self._handler(call)
        except Exception:
            reason = "error"
            log.exception("call.handler_failed")
            raise
        finally:
            self._store.record_call_ended(
                CallEnd(
                    tenant_id=tenant,
                    call_id=record_id,
                    ended_at=datetime.now(UTC),
                    end_reason=call.end_reason or reason,
                    codec=codec,
                    answered_at=started,
                    media=media_quality(call.leg),
                )
            )


def _serving(tenants: TenantRegistry) -> Callable[[Any, int], tuple[int, str] | None]:
    """Admission check before answering: only numbers of a serving tenant are answered (480 otherwise), and
    no more of its calls at once than its `[limits] max_concurrent_calls` (486 Busy Here beyond it)."""

    def admit(call: Any, tenant_calls: int) -> tuple[int, str] | None:
        tenant = tenants.get(call.tenant) if call.tenant else None
        if tenant is None:
            log.warning("call.tenant_not_serving", tenant=call.tenant)
            return 480, "Temporarily Unavailable"
        cap = tenant.limits.max_concurrent_calls
        if cap is not None and tenant_calls >= cap:
            log.warning("call.tenant_at_capacity", tenant=call.tenant, max_concurrent_calls=cap)
            return 486, "Busy Here"
        return None

    return admit


def load_tenants(config: Config, environ: Mapping[str, str]) -> TenantRegistry:
    registry = TenantRegistry(config.server.tenants_dir, env=dict(environ))
    report = registry.reload()
    for line in report.problem_lines():
        log.error("tenants.problem", problem=line)
    log.info("tenants.loaded", serving=sorted(registry.serving()))
    warn_routing_mismatches(config, registry)
    return registry


def warn_routing_mismatches(config: Config, tenants: TenantRegistry) -> None:
    for line in routing_mismatches(config.trunks, tenants.serving()):
        log.warning("tenants.routing_mismatch", problem=line)


async def open_store(config: Config, environ: Mapping[str, str]) -> Any:
    settings = StoreSettings.from_env(
        environ, state_dir=config.server.state_dir, spool_dir=config.store.spool_dir
    )
    if config.store.dsn:
        settings = StoreSettings(
            database_url=config.store.dsn,
            admin_database_url=settings.admin_database_url,
            state_dir=settings.state_dir,
            spool_dir=settings.spool_dir,
        )
    return await open_call_store(settings)


def record_handler(config: Config) -> CallHandler:
    """`call_handler = "record"`, for checking a trunk: greet the caller, record what they say per call."""
    from trunkline.sip.demo_call import DemoCalls, ensure_greeting, greeting_path, read_wav

    greeting = read_wav(ensure_greeting(greeting_path(config)))
    return DemoCalls(greeting, config.server.state_dir / "recordings")


async def call_handler(
    config: Config, tenants: TenantRegistry, store: CallStore, environ: Mapping[str, str]
) -> tuple[CallHandler, Callable[[], Awaitable[None]] | None]:
    """The per-call handler the config asks for, warmed up (models loaded once), and how to close it."""
    if config.server.call_handler == "record":
        return record_handler(config), None
    from trunkline.pipeline.handler import build_call_handler

    agent = build_call_handler(config, tenants, store, environ)
    await agent.warm()
    return agent, agent.aclose


class TenantReloads:
    """SIGHUP and the tenant file watcher both end here: log each problem, then sync the store's tenants."""

    def __init__(self, tenants: TenantRegistry, config: Config) -> None:
        self._tenants = tenants
        self._config = config
        self.store: CallStore | None = None  # set once open; until then only the registry reloads
        self._syncs: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps only weak ones

    def on_sighup(self) -> None:
        log.info("tenants.reload_requested")
        self.after_reload(self._tenants.reload(force=True))

    def after_reload(self, report: ReloadReport) -> None:
        for line in report.problem_lines():
            log.error("tenants.problem", problem=line)
        warn_routing_mismatches(self._config, self._tenants)
        if self.store is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.store.sync_tenants(self._tenants.serving().values())
        )
        self._syncs.add(task)
        task.add_done_callback(self._synced)

    def _synced(self, task: asyncio.Task[None]) -> None:
        self._syncs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("store.tenant_sync_failed", error=type(task.exception()).__name__)


async def serve(config: Config, environ: Mapping[str, str], ready: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain and return 0."""
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.sip.service import SipService

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config.server.state_dir.mkdir(parents=True, exist_ok=True)
    tenants = load_tenants(config, environ)
    reloads = TenantReloads(tenants, config)
    loop.add_signal_handler(signal.SIGHUP, reloads.on_sighup)
    store = await open_store(config, environ)
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    service = SipService()
    close_handler: Callable[[], Awaitable[None]] | None = None
    try:
        await store.sync_tenants(tenants.serving().values())
        reloads.store = store
        handler, close_handler = await call_handler(config, tenants, store, environ)
        await engine.start()
        try:
            await service.start(
                loop, config, engine, RecordedCalls(store, tenants, handler), admit=_serving(tenants)
            )
        except OSError as exc:
            address = f"{config.sip.listen_host}:{config.sip.listen_port}"
            raise StartupError(
                f"{config.source}: sip.listen_port: cannot listen on {address}: {exc.strerror or exc}"
            ) from exc
        watcher = asyncio.create_task(watch_tenants(tenants, on_reload=reloads.after_reload, stop=stop))
        # Models, tenants and the SIP stack are loaded: move them out of the collector's sight, so a full
        # collection during calls walks only per-call objects (it paused the 20 ms tick for 20-40 ms).
        gc.collect()
        gc.freeze()
        log.info("server.ready", sip_port=config.sip.listen_port, tenants=len(tenants.serving()))
        print("TRUNKLINE-READY", flush=True)
        if ready:
            ready()
        await stop.wait()
        log.info("server.draining")
        await service.drain()
        await watcher  # returns once `stop` is set
    finally:
        with contextlib.suppress(Exception):
            await service.aclose()
        if close_handler is not None:
            await close_handler()
        await engine.aclose()
        await store.aclose()
    log.info("server.stopped")
    print("TRUNKLINE-STOPPED", flush=True)
    return 0
