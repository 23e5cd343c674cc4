"""Reply policies: what the agent says to one caller turn. `LlmPolicy` streams an OpenAI-compatible model
with the tenant's tools; `IntentsPolicy` is the deterministic offline policy from the tenant file (intents
with example phrases → reply templates and optional tool calls with slots). The intents policy also answers
when the LLM endpoint fails or stalls, so the caller hears something useful within the fallback budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from trunkline.logs import get_logger
from trunkline.pipeline.clauses import FAST_FIRST_SOFT_WORDS, split_clauses
from trunkline.pipeline.conversation import CatalogTools, Conversation
from trunkline.pipeline.llm import (
    Clause,
    FirstToken,
    LlmTurnRunner,
    LlmUnavailable,
    ToolCallRequest,
    ToolCallResult,
    TurnDone,
)
from trunkline.tenants.intents import render_template
from trunkline.tenants.matcher import extract_slots, match_intent, spoken_slots
from trunkline.tenants.model import Intent, TenantConfig
from trunkline.tools.catalog import ToolCatalog, ToolContext, ToolResult

log = get_logger("trunkline.pipeline.policy")

BUILTIN_AFTER_SPEECH = frozenset({"end_call", "transfer_call"})  # said first, then done
DEFAULT_FALLBACK_LINE = "Sorry, I'm having trouble right now. Could you say that again?"


@dataclass(frozen=True, slots=True)
class SayClause:
    """Speak this clause next; `fallback` marks a line said because the model failed."""

    text: str
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class Decided:
    """The policy produced its first output (the LLM's first token; the matcher's decision)."""

    at_s: float


@dataclass(frozen=True, slots=True)
class ToolUsed:
    name: str
    arguments_json: str
    result: ToolResult
    started_at_s: float


@dataclass(frozen=True, slots=True)
class TokensUsed:
    prompt_tokens: int
    completion_tokens: int


PolicyEvent = SayClause | Decided | ToolUsed | TokensUsed


class ReplyPolicy(Protocol):
    """Answers caller turns of one call; keeps whatever per-call state it needs."""

    def reply(self, text: str) -> AsyncIterator[PolicyEvent]:
        """Events for the answer to `text` (the caller's words, or "The caller pressed 1.")."""
        ...

    def heard(self, text: str) -> None:
        """Barge-in: the caller heard only `text` of the last reply (the context is truncated to it)."""
        ...

    def said(self, text: str) -> None:
        """The agent said `text` on its own (a prompt, a fallback, a resumed sentence): keep it in context."""
        ...


def _now() -> float:
    return asyncio.get_running_loop().time()


def _clauses(text: str) -> list[str]:
    """A reply's clauses for TTS; the first one ends at its first comma so the caller hears it sooner."""
    return split_clauses(text, first_min_soft_words=FAST_FIRST_SOFT_WORDS)


@dataclass(slots=True)
class _Pending:
    intent: Intent
    slots: dict[str, str]


class IntentsPolicy:
    """The tenant's intents: word-overlap matching, slot filling over turns, templates, optional tools.

    Tools run as confirmed (the reply template reads the values back); built-ins that end the conversation
    (end_call, transfer_call) run after the reply is spoken, other tools before it."""

    def __init__(self, tenant: TenantConfig, catalog: ToolCatalog | None, ctx: ToolContext | None) -> None:
        self._tenant = tenant
        self._catalog = catalog
        self._ctx = ctx
        self._pending: _Pending | None = None

    def heard(self, text: str) -> None:
        return None

    def said(self, text: str) -> None:
        return None

    async def reply(self, text: str) -> AsyncIterator[PolicyEvent]:
        tenant = self._tenant
        found = self._match(text)
        yield Decided(_now())
        if found is None:
            log.info("policy.intent_unmatched")
            for clause in _clauses(tenant.policy.fallback_reply):
                yield SayClause(clause)
            return
        intent, slots = found
        values = {**tenant.template_fields(), **slots}
        spoken = {**tenant.template_fields(), **spoken_slots(slots, tenant.slots)}
        missing = [s for s in intent.slots if s not in slots]
        log.info("policy.intent_matched", intent=intent.name, missing=len(missing))
        if missing:
            self._pending = _Pending(intent, slots)
            ask = intent.ask.get(missing[0]) or f"Could you tell me the {missing[0]}?"
            for clause in _clauses(render_template(ask, spoken)):
                yield SayClause(clause)
            return
        self._pending = None
        reply = _clauses(render_template(intent.reply, spoken)) if intent.reply else []
        tool = intent.tool if intent.tool and self._has_tool(intent.tool.name) else None
        if tool is None or tool.name in BUILTIN_AFTER_SPEECH:
            for clause in reply:
                yield SayClause(clause)
        if tool is not None:
            arguments = {k: render_template(v, values) for k, v in tool.arguments}
            used = await self._call(tool.name, arguments)
            yield used
            if not used.result.ok and used.result.spoken_fallback and tool.name not in BUILTIN_AFTER_SPEECH:
                yield SayClause(used.result.spoken_fallback, fallback=True)
                return
            if tool.name not in BUILTIN_AFTER_SPEECH:
                for clause in reply:
                    yield SayClause(clause)

    def _match(self, text: str) -> tuple[Intent, dict[str, str]] | None:
        tenant = self._tenant
        match = match_intent(tenant.intents, tenant.slots, text)
        pending = self._pending
        if pending is not None and (match is None or match.intent is pending.intent or not match.slots):
            extra = extract_slots(pending.intent, tenant.slots, text)
            if extra or (match is not None and match.intent is pending.intent):
                merged = {**pending.slots, **(match.slots if match else {}), **extra}
                return pending.intent, merged
        if match is None:
            return None
        return match.intent, dict(match.slots)

    def _has_tool(self, name: str) -> bool:
        if self._catalog is not None and self._catalog.spec(name) is not None:
            return True
        log.info("policy.intent_tool_unavailable", tool=name[:64])
        return False

    async def _call(self, name: str, arguments: Mapping[str, str]) -> ToolUsed:
        assert self._catalog is not None and self._ctx is not None
        arguments_json = json.dumps(dict(arguments))
        started = _now()
        result = await self._catalog.call(name, arguments_json, self._ctx, confirmed=True)
        return ToolUsed(name, arguments_json, result, started)


class LlmPolicy:
    """The tenant's model with its tools; on an endpoint failure the fallback policy (intents) or a fixed
    line answers instead, and the call goes on."""

    def __init__(
        self,
        runner: LlmTurnRunner,
        conversation: Conversation,
        *,
        tools: CatalogTools | None = None,
        fallback: IntentsPolicy | None = None,
        fallback_line: str = DEFAULT_FALLBACK_LINE,
    ) -> None:
        self._runner = runner
        self.conversation = conversation
        self._tools = tools
        self._fallback = fallback
        self._fallback_line = fallback_line
        self.failures = 0

    def heard(self, text: str) -> None:
        self.conversation.truncate_last_assistant(text)

    def said(self, text: str) -> None:
        """Lines said on the agent's own; one that follows an agent message (a resumed sentence after a
        cut, a prompt after a reply) is merged into it, so the model sees one coherent reply."""
        text = text.strip()
        if not text:
            return
        messages = self.conversation.messages
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and last.get("content"):
            messages[-1] = {**last, "content": f"{last['content']} {text}"}
        else:
            self.conversation.add_assistant(text)

    async def reply(self, text: str) -> AsyncIterator[PolicyEvent]:
        if self._tools is not None:
            self._tools.caller_spoke()
        self.conversation.add_user(text)
        decided = False
        arguments: dict[str, str] = {}
        try:
            events = self._runner.run(self.conversation)
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, FirstToken):
                        decided = True
                        yield Decided(event.at_s)
                    elif isinstance(event, Clause):
                        yield SayClause(event.text)
                    elif isinstance(event, ToolCallRequest):
                        arguments[event.call_id] = event.arguments_json
                    elif isinstance(event, ToolCallResult):
                        started = _now() - event.result.duration_ms / 1000
                        yield ToolUsed(event.name, arguments.get(event.call_id, ""), event.result, started)
                    elif isinstance(event, TurnDone):
                        yield TokensUsed(event.prompt_tokens, event.completion_tokens)
        except LlmUnavailable as exc:
            self.failures += 1
            log.warning("policy.llm_fallback", reason=exc.reason, spoken=exc.spoken)
            if not decided:
                yield Decided(_now())
            async for fallback_event in self._fallback_reply(text, exc.spoken):
                yield fallback_event

    async def _fallback_reply(self, text: str, spoken: bool) -> AsyncIterator[PolicyEvent]:
        said: list[str] = []
        if self._fallback is not None and not spoken:
            async for event in self._fallback.reply(text):
                if isinstance(event, SayClause):
                    said.append(event.text)
                    yield SayClause(event.text, fallback=True)
                elif isinstance(event, ToolUsed):
                    yield event
        if not said:
            said.append(self._fallback_line)
            yield SayClause(self._fallback_line, fallback=True)
        self.said(" ".join(said))
