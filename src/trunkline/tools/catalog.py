"""Per-tenant tool catalog: what the LLM is offered, and the one gate every tool call goes through.

`ToolCatalog.call()` refuses tools of other tenants and unknown names (logged), validates arguments
against the schema before anything runs, enforces confirm-first and the per-call budget, bounds the run
with a deadline, and always returns a `ToolResult` (with a spoken fallback on failure), never raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from trunkline.logs import get_logger
from trunkline.tools.schema import ArgumentsError, ArgumentValidator

log = get_logger("trunkline.tools")

DEFAULT_FALLBACK = "Sorry, I couldn't get that done just now."
MAX_CONTENT_CHARS = 8000
ToolKind = Literal["builtin", "webhook", "mcp"]

# ToolResult.status values
OK = "ok"
REFUSED = "refused"
INVALID_ARGUMENTS = "invalid_arguments"
NEEDS_CONFIRMATION = "needs_confirmation"
LIMIT = "limit"
TIMEOUT = "timeout"
HTTP_ERROR = "http_error"
TOO_LARGE = "too_large"
BLOCKED = "blocked"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the LLM sees it, plus how it is run: `deadline_s` bounds the whole call, retries included."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    kind: ToolKind
    confirm_first: bool = False
    idempotent: bool = False
    deadline_s: float = 10.0
    fallback: str = DEFAULT_FALLBACK

    def openai_tool(self) -> dict[str, Any]:
        """This tool in the OpenAI chat-completions `tools` format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What an executor reports; the catalog adds timing and the spoken fallback."""

    ok: bool
    content: str
    status: str = OK


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call's answer: `content` goes to the LLM, `spoken_fallback` to the caller on failure."""

    ok: bool
    content: str
    status: str
    duration_ms: float
    spoken_fallback: str | None


class CallControl(Protocol):
    """What built-in tools need from the live call; the agent implements it."""

    async def hang_up(self, reason: str) -> None:
        """End the call once the agent's queued speech has played."""

    async def transfer(self, target: str) -> None:
        """Hand the caller to `target` (E.164 number or sip: URI from the tenant config)."""


class ToolBudget:
    """Tool calls left on one phone call (tenant `limits.max_tool_calls`); every attempt counts."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.used = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.max_calls

    def take(self) -> None:
        self.used += 1


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling a tool: the tenant and call it runs for, and the live call's controls."""

    tenant_id: str
    call_id: str
    call_control: CallControl | None = None
    budget: ToolBudget | None = None


class ToolExecutor(Protocol):
    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    spec: ToolSpec
    executor: ToolExecutor
    validator: ArgumentValidator


class ToolCatalog:
    """The tools of one tenant. Built by the composition root; shared by all of that tenant's calls."""

    def __init__(
        self,
        tenant_id: str,
        tools: Iterable[tuple[ToolSpec, ToolExecutor]] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        max_content_chars: int = MAX_CONTENT_CHARS,
    ) -> None:
        self.tenant_id = tenant_id
        self._clock = clock
        self._max_chars = max_content_chars
        self._entries: dict[str, _Entry] = {}
        for spec, executor in tools:
            self._add(spec, executor)

    def _add(self, spec: ToolSpec, executor: ToolExecutor) -> None:
        if spec.name in self._entries:
            log.warning("tools.duplicate_skipped", tenant_id=self.tenant_id, tool=spec.name, kind=spec.kind)
            return
        self._entries[spec.name] = _Entry(spec, executor, ArgumentValidator(spec.parameters))

    def with_tools(self, tools: Iterable[tuple[ToolSpec, ToolExecutor]]) -> ToolCatalog:
        """A new catalog with `tools` added (names already present are skipped and logged)."""
        entries = [(e.spec, e.executor) for e in self._entries.values()]
        return ToolCatalog(
            self.tenant_id, [*entries, *tools], clock=self._clock, max_content_chars=self._max_chars
        )

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(e.spec for e in self._entries.values())

    def spec(self, name: str) -> ToolSpec | None:
        entry = self._entries.get(name)
        return entry.spec if entry else None

    def openai_tools(self) -> list[dict[str, Any]]:
        """Exactly this tenant's tools, in the OpenAI `tools` request format."""
        return [e.spec.openai_tool() for e in self._entries.values()]

    async def call(
        self, name: str, arguments_json: str | None, ctx: ToolContext, *, confirmed: bool = False
    ) -> ToolResult:
        """Run tool `name` for the call in `ctx`; never raises (cancellation aside)."""
        start = self._clock()
        if ctx.tenant_id != self.tenant_id:
            return self._refuse(name, ctx, start, "other_tenant")
        if ctx.budget is not None and ctx.budget.exhausted:
            return self._finish(
                name, None, ctx, start, ToolOutcome(False, "Tool call limit reached for this call.", LIMIT)
            )
        entry = self._entries.get(name)
        if entry is None:
            if ctx.budget is not None:
                ctx.budget.take()
            return self._refuse(name, ctx, start, "unknown_tool")
        try:
            arguments = entry.validator.parse(arguments_json)
        except ArgumentsError as exc:
            if ctx.budget is not None:
                ctx.budget.take()
            content = f"Invalid arguments for {name}: " + "; ".join(exc.problems)
            return self._finish(name, entry.spec, ctx, start, ToolOutcome(False, content, INVALID_ARGUMENTS))
        if entry.spec.confirm_first and not confirmed:
            content = "Read the details back to the caller and call this tool again once they clearly agree."
            return self._finish(name, entry.spec, ctx, start, ToolOutcome(False, content, NEEDS_CONFIRMATION))
        if ctx.budget is not None:
            ctx.budget.take()
        outcome = await self._run(entry, arguments, ctx)
        return self._finish(name, entry.spec, ctx, start, outcome)

    async def _run(self, entry: _Entry, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        try:
            async with asyncio.timeout(entry.spec.deadline_s):
                return await entry.executor.run(arguments, ctx)
        except TimeoutError:
            return ToolOutcome(False, f"{entry.spec.name} did not finish in time.", TIMEOUT)
        except Exception as exc:  # a tool bug must not end the call
            log.warning(
                "tools.executor_crashed",
                tenant_id=self.tenant_id,
                tool=entry.spec.name,
                error=type(exc).__name__,
            )
            return ToolOutcome(False, f"{entry.spec.name} failed.", ERROR)

    def _refuse(self, name: str, ctx: ToolContext, start: float, reason: str) -> ToolResult:
        shown = name[:64]
        log.warning(
            "tools.refused",
            tenant_id=self.tenant_id,
            call_tenant_id=ctx.tenant_id,
            call_id=ctx.call_id,
            tool=shown,
            reason=reason,
        )
        outcome = ToolOutcome(
            False, f"There is no tool named {shown!r}. Use only the tools offered.", REFUSED
        )
        return self._finish(name, None, ctx, start, outcome, logged=True)

    def _finish(
        self,
        name: str,
        spec: ToolSpec | None,
        ctx: ToolContext,
        start: float,
        outcome: ToolOutcome,
        *,
        logged: bool = False,
    ) -> ToolResult:
        duration_ms = (self._clock() - start) * 1000.0
        content = outcome.content
        if len(content) > self._max_chars:
            content = content[: self._max_chars] + " [truncated]"
        if not logged:
            log.info(
                "tools.call_finished",
                tenant_id=self.tenant_id,
                call_id=ctx.call_id,
                tool=name[:64],
                status=outcome.status,
                duration_ms=round(duration_ms, 1),
            )
        failed = not outcome.ok and outcome.status != NEEDS_CONFIRMATION  # confirming is not a failure
        fallback = (spec.fallback if spec else DEFAULT_FALLBACK) if failed else None
        return ToolResult(outcome.ok, content, outcome.status, duration_ms, fallback)
