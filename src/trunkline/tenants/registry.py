"""All tenants of this process: load, look up by dialled number, reload without dropping calls.

A call keeps the `TenantConfig` it started with (configs are immutable); `reload()` swaps in new
versions atomically. A broken file is reported and the tenant keeps its last good version (or stays
absent); other tenants are never affected. SIGHUP is wired by the server calling `reload(force=True)`;
`watch_tenants()` is the small polling adapter that reloads on file change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trunkline.logs import get_logger
from trunkline.tenants.changes import (
    ChangeSet,
    FileStamp,
    Fingerprint,
    detect_changes,
    normalize_did,
    resolve_did_conflicts,
)
from trunkline.tenants.loader import TENANT_FILE, load_tenant
from trunkline.tenants.model import TenantConfig
from trunkline.tenants.reader import TenantConfigError, TenantFileInvalid
from trunkline.tenants.sections import LoadContext

log = get_logger("trunkline.tenants")
MAX_FILES_PER_TENANT = 64


@dataclass(frozen=True, slots=True)
class TenantProblem:
    """A tenant whose file could not be (re)loaded; `kept_previous` says whether an older version serves."""

    tenant_id: str
    errors: tuple[TenantConfigError, ...]
    kept_previous: bool


@dataclass(frozen=True, slots=True)
class ReloadReport:
    generation: int
    loaded: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    failed: tuple[TenantProblem, ...] = ()
    serving: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failed

    def problem_lines(self) -> list[str]:
        """Every problem as 'file: key: why'."""
        return [str(err) for problem in self.failed for err in problem.errors]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    configs: dict[str, TenantConfig]
    dids: dict[str, str]


def scan_tenants(root: Path) -> dict[str, Fingerprint]:
    """Fingerprint every `<root>/<id>/` that holds a tenant.toml (all regular files in that directory)."""
    found: dict[str, Fingerprint] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        stamps: list[FileStamp] = []
        try:
            for item in sorted(os.scandir(entry.path), key=lambda e: e.name)[:MAX_FILES_PER_TENANT]:
                if item.is_file():
                    st = item.stat()
                    stamps.append(FileStamp(item.name, st.st_mtime_ns, st.st_size))
        except OSError:
            continue
        if any(s.name == TENANT_FILE for s in stamps):
            found[entry.name] = tuple(stamps)
    return found


class TenantRegistry:
    """Tenants under `root`, keyed by id and by E.164 DID; only enabled, valid tenants serve."""

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str],
        allowed_mcp_commands: Collection[str] | None = None,
    ) -> None:
        self.root = Path(root)
        allowed = frozenset(allowed_mcp_commands) if allowed_mcp_commands is not None else None
        self._ctx = LoadContext(env=dict(env), allowed_mcp_commands=allowed)
        self._snapshot = _Snapshot({}, {})
        self._stamps: dict[str, Fingerprint] = {}
        self._failing: dict[str, TenantProblem] = {}
        self.generation = 0

    # ---- lookups (what calls use) ----
    def lookup_did(self, dialled: str) -> TenantConfig | None:
        """The tenant serving this dialled number (any common DID spelling), or None."""
        snap = self._snapshot
        did = normalize_did(dialled)
        tenant_id = snap.dids.get(did) if did else None
        return snap.configs.get(tenant_id) if tenant_id else None

    def get(self, tenant_id: str) -> TenantConfig | None:
        """A serving tenant by id (disabled or unknown tenants give None)."""
        config = self._snapshot.configs.get(tenant_id)
        return config if config is not None and config.enabled else None

    def serving(self) -> dict[str, TenantConfig]:
        return {tid: c for tid, c in self._snapshot.configs.items() if c.enabled}

    def problems(self) -> tuple[TenantProblem, ...]:
        """Tenants whose current file is broken (some may still serve an older version)."""
        return tuple(self._failing[tid] for tid in sorted(self._failing))

    def pending_changes(self) -> ChangeSet:
        return detect_changes(self._stamps, scan_tenants(self.root))

    # ---- reload ----
    def reload(self, *, force: bool = False) -> ReloadReport:
        """Re-read changed (or, with `force`, all) tenant files and swap in every valid new version."""
        if not self.root.is_dir():
            # A missing tenants directory (mount gone, deploy swap) must not unload everyone.
            why = "tenant directory is missing or unreadable; keeping the tenants already loaded"
            problem = TenantProblem(
                "(all)", (TenantConfigError(str(self.root), "(dir)", why),), kept_previous=True
            )
            log.warning("tenants.dir_missing", dir=str(self.root))
            return ReloadReport(self.generation, failed=(problem,), serving=tuple(sorted(self.serving())))
        current = scan_tenants(self.root)
        changes = detect_changes(self._stamps, current)
        attempt = set(current) if force else set(changes.added) | set(changes.changed)
        if changes or force:
            attempt |= set(self._failing) & set(current)  # a conflict elsewhere may have cleared
        previous = dict(self._snapshot.configs)
        candidates = {tid: c for tid, c in previous.items() if tid in current}
        errors: dict[str, list[TenantConfigError]] = {}
        fresh: set[str] = set()
        for tid in sorted(attempt):
            result = self._load_one(tid)
            if isinstance(result, TenantConfig):
                candidates[tid] = result
                fresh.add(tid)
            else:
                errors[tid] = result
        owners = dict(self._snapshot.dids)
        resolution = resolve_did_conflicts(candidates, fresh, previous, owners)
        for tid, errs in resolution.rejected.items():
            errors.setdefault(tid, []).extend(errs)
        return self._commit(current, resolution.accepted, fresh - set(resolution.rejected), errors, changes)

    def _load_one(self, tenant_id: str) -> TenantConfig | list[TenantConfigError]:
        tenant_dir = self.root / tenant_id
        try:
            return load_tenant(tenant_dir, self._ctx)
        except TenantFileInvalid as exc:
            return list(exc.errors)
        except Exception as exc:  # a loader bug must not take other tenants down
            log.exception("tenants.load_crashed", tenant_id=tenant_id)
            return [
                TenantConfigError(
                    str(tenant_dir / TENANT_FILE), "(file)", f"internal error: {type(exc).__name__}"
                )
            ]

    def _commit(
        self,
        current: dict[str, Fingerprint],
        accepted: dict[str, TenantConfig],
        loaded: set[str],
        errors: dict[str, list[TenantConfigError]],
        changes: ChangeSet,
    ) -> ReloadReport:
        failed = tuple(
            TenantProblem(tid, tuple(errs), kept_previous=tid in accepted)
            for tid, errs in sorted(errors.items())
        )
        dids = {n: tid for tid, c in accepted.items() if c.enabled for n in c.numbers}
        self._snapshot = _Snapshot(accepted, dids)  # one store: a reader sees old or new, never a mix
        self._stamps = current
        self._failing = {p.tenant_id: p for p in failed} | {
            tid: p
            for tid, p in self._failing.items()
            if tid in current and tid not in errors and tid not in loaded
        }
        self.generation += 1
        report = ReloadReport(
            generation=self.generation,
            loaded=tuple(sorted(loaded)),
            unchanged=tuple(sorted(set(accepted) - loaded)),
            removed=tuple(changes.removed),
            disabled=tuple(sorted(tid for tid, c in accepted.items() if not c.enabled)),
            failed=failed,
            serving=tuple(sorted(tid for tid, c in accepted.items() if c.enabled)),
        )
        self._log(report)
        return report

    @staticmethod
    def _log(report: ReloadReport) -> None:
        for problem in report.failed:
            for err in problem.errors:
                log.warning(
                    "tenants.load_failed",
                    tenant_id=problem.tenant_id,
                    file=err.file,
                    key=err.key,
                    why=err.why,
                    kept_previous=problem.kept_previous,
                )
        log.info(
            "tenants.reloaded",
            generation=report.generation,
            loaded=list(report.loaded),
            removed=list(report.removed),
            failed=[p.tenant_id for p in report.failed],
            serving=len(report.serving),
        )


async def watch_tenants(
    registry: TenantRegistry,
    *,
    interval_s: float = 2.0,
    on_reload: Callable[[ReloadReport], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Poll the tenant directory every `interval_s` and reload when a file changed, until `stop` is set."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        if stop.is_set():
            return
        try:
            if registry.pending_changes():
                report = registry.reload()
                if on_reload is not None:
                    on_reload(report)
        except Exception:  # keep watching: the next poll may succeed
            log.exception("tenants.watch_failed")
