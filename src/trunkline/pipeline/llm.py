"""The turn runner: one caller turn against any OpenAI-compatible chat endpoint, streamed, with tools.

`LlmTurnRunner.run(conversation)` streams a chat completion through the `openai` AsyncOpenAI client and
yields events as tokens arrive: the first token's time, text deltas, speakable clauses (for TTS; the first
one cut short at its first comma), tool calls and their results (tools run through an injected
`ToolInvoker`, results go back to the model, which continues; rounds are bounded), token usage, and a final
`TurnDone`. A slow first token, a stalled stream or an HTTP/connection error raises `LlmUnavailable` within
the configured budget, so the caller can hear a fallback line at once. Consume it inside
`contextlib.aclosing(...)`: closing it early (barge-in) records what was said so far.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from trunkline.logs import get_logger
from trunkline.pipeline.clauses import DEFAULT_MIN_SOFT_WORDS, FAST_FIRST_SOFT_WORDS, ClauseSplitter
from trunkline.pipeline.conversation import Conversation, ToolInvoker
from trunkline.tools.catalog import DEFAULT_FALLBACK, ERROR, ToolResult

log = get_logger("trunkline.pipeline.llm")

INTERRUPTED_TOOL_CONTENT = "Interrupted before it finished; the outcome is unknown."


class LlmUnavailable(RuntimeError):
    """The chat endpoint failed, stalled or was too slow. `reason` is a static token (first_token_timeout,
    stall_timeout, turn_timeout, http_<status>, timeout, connection, stream_error); `spoken` says whether
    clauses of this turn were already handed out before the failure."""

    def __init__(self, reason: str, *, retryable: bool, spoken: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.spoken = spoken


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The model's first text or tool-call delta of the turn arrived (loop time `at_s`), once per turn."""

    at_s: float


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Clause:
    """A speakable piece of the reply, in order (`index` counts clauses within the turn)."""

    text: str
    index: int


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ToolCallResult:
    call_id: str
    name: str
    result: ToolResult


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request (`round` 0 is the first, later ones follow tool results)."""

    prompt_tokens: int
    completion_tokens: int
    round: int


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The turn finished; `first_token_ms` is from the start of the turn to its first text/tool delta."""

    text: str
    rounds: int
    first_token_ms: float | None
    first_token_at: float | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


TurnEvent = FirstToken | TextDelta | Clause | ToolCallRequest | ToolCallResult | Usage | TurnDone


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """Time budgets (seconds) and bounds for one turn. `first_token_timeout_s` applies to every request of
    the turn (also after tool results), `stall_timeout_s` between chunks, `turn_timeout_s` to the whole turn
    minus time spent inside tools."""

    first_token_timeout_s: float = 1.5
    stall_timeout_s: float = 2.0
    turn_timeout_s: float = 30.0
    max_tool_rounds: int = 3
    temperature: float | None = None
    max_tokens: int | None = None
    include_usage: bool = True


def make_openai_client(base_url: str, api_key: str | None, *, timeout_s: float = 30.0) -> Any:
    """An AsyncOpenAI client for any compatible endpoint, with SDK retries off: our own budgets decide
    when to give up (the SDK's backoff alone could exceed the 2 s fallback deadline)."""
    import openai

    return openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout_s
    )


@dataclass(slots=True)
class _PendingCall:
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }


@dataclass(slots=True)
class _Turn:
    """Mutable bookkeeping of one running turn."""

    started_at: float
    budget_used_s: float = 0.0  # LLM time so far (tool time excluded)
    first_token_at: float | None = None
    clauses: int = 0
    text: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class LlmTurnRunner:
    """Runs turns of one call's conversation; stateless between turns apart from the injected objects."""

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        limits: TurnLimits | None = None,
        tools: ToolInvoker | None = None,
        min_soft_words: int = DEFAULT_MIN_SOFT_WORDS,
        first_min_soft_words: int = FAST_FIRST_SOFT_WORDS,
    ) -> None:
        self._client = client
        self._model = model
        self._limits = limits or TurnLimits()
        self._tools = tools
        self._min_soft_words = min_soft_words
        self._first_min_soft_words = first_min_soft_words

    async def run(self, conversation: Conversation) -> AsyncGenerator[TurnEvent, None]:
        """One turn: the conversation must end with the caller's new message. Appends the reply, tool calls
        and tool results to `conversation` as they happen."""
        loop = asyncio.get_running_loop()
        turn = _Turn(started_at=loop.time())
        offered = self._tools.openai_tools() if self._tools is not None else []
        rounds = 0
        for round_no in range(self._limits.max_tool_rounds + 1):
            rounds = round_no + 1
            final = round_no == self._limits.max_tool_rounds
            calls: list[_PendingCall] = []
            round_events = self._round(conversation, turn, round_no, offered, final, calls)
            async with contextlib.aclosing(round_events):
                async for event in round_events:
                    yield event
            if not calls:
                break
            async with contextlib.aclosing(self._run_tools(conversation, calls)) as tool_events:
                async for event in tool_events:
                    yield event
        first_ms = None if turn.first_token_at is None else (turn.first_token_at - turn.started_at) * 1000.0
        yield TurnDone("".join(turn.text), rounds, first_ms, turn.first_token_at, turn.prompt_tokens,
                       turn.completion_tokens, turn.finish_reason)  # fmt: skip

    async def _round(
        self,
        conversation: Conversation,
        turn: _Turn,
        round_no: int,
        offered: list[dict[str, Any]],
        final: bool,
        calls: list[_PendingCall],
    ) -> AsyncGenerator[TurnEvent, None]:
        """One streamed request. Records the assistant message when it ends, however it ends."""
        loop = asyncio.get_running_loop()
        splitter = ClauseSplitter(
            min_soft_words=self._min_soft_words, first_min_soft_words=self._first_min_soft_words
        )
        text: list[str] = []
        pending: dict[int, _PendingCall] = {}
        completed = False
        round_started = loop.time()
        stream: Any = None
        try:
            stream = await self._within(self._open(conversation, offered, final), turn, round_started, None)
            got_token = False
            while True:
                chunk = await self._within(anext(stream, None), turn, round_started, got_token)
                if chunk is None:
                    break
                events = self._chunk_events(chunk, turn, round_no, splitter, text, pending)
                got_token = got_token or bool(pending) or any(isinstance(e, TextDelta) for e in events)
                if got_token and turn.first_token_at is None:
                    turn.first_token_at = loop.time()
                    yield FirstToken(turn.first_token_at)
                for event in events:
                    yield event
            for clause in splitter.flush():
                yield self._clause(turn, clause)
            completed = True
        finally:
            turn.budget_used_s += loop.time() - round_started
            if stream is not None:
                await stream.close()
            said = "".join(text)
            if completed and pending and not final and self._tools is not None:
                calls.extend(pending[i] for i in sorted(pending))
            elif pending:
                log.info("llm.tool_calls_ignored", count=len(pending), completed=completed, final=final)
            if said or calls:
                conversation.add_assistant(said, [c.openai() for c in calls] or None)

    async def _within(self, awaitable: Any, turn: _Turn, round_started: float, got_token: bool | None) -> Any:
        """Await one step of the stream under the tightest applicable deadline; map failures to
        LlmUnavailable. `got_token` None means opening the request (first-token budget)."""
        import openai

        loop = asyncio.get_running_loop()
        limits = self._limits
        now = loop.time()
        turn_left = limits.turn_timeout_s - turn.budget_used_s - (now - round_started)
        step = limits.stall_timeout_s if got_token else limits.first_token_timeout_s - (now - round_started)
        kind = "stall_timeout" if got_token else "first_token_timeout"
        if turn_left < step:
            step, kind = turn_left, "turn_timeout"
        spoken = turn.clauses > 0
        try:
            async with asyncio.timeout(max(step, 0.0)):
                return await awaitable
        except TimeoutError:
            log.warning("llm.timeout", kind=kind, model=self._model)
            raise LlmUnavailable(kind, retryable=True, spoken=spoken) from None
        except openai.APIStatusError as exc:
            log.warning("llm.http_error", status=exc.status_code, model=self._model)
            retry = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            raise LlmUnavailable(f"http_{exc.status_code}", retryable=retry, spoken=spoken) from exc
        except openai.APITimeoutError as exc:
            log.warning("llm.timeout", kind="client", model=self._model)
            raise LlmUnavailable("timeout", retryable=True, spoken=spoken) from exc
        except openai.APIConnectionError as exc:
            log.warning("llm.connection_failed", model=self._model)
            raise LlmUnavailable("connection", retryable=True, spoken=spoken) from exc
        except (openai.APIError, ValueError) as exc:  # ValueError: an SSE event that is not JSON
            log.warning("llm.stream_error", error=type(exc).__name__, model=self._model)
            raise LlmUnavailable("stream_error", retryable=True, spoken=spoken) from exc

    async def _open(self, conversation: Conversation, offered: list[dict[str, Any]], final: bool) -> Any:
        """Send the request; returns the SDK's async chunk stream once response headers arrived."""
        kwargs: dict[str, Any] = {}
        if offered:
            kwargs["tools"] = offered
            if final:
                kwargs["tool_choice"] = "none"  # out of tool rounds: the model must answer in words
        if self._limits.temperature is not None:
            kwargs["temperature"] = self._limits.temperature
        if self._limits.max_tokens is not None:
            kwargs["max_tokens"] = self._limits.max_tokens
        if self._limits.include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return await self._client.chat.completions.create(
            model=self._model, messages=conversation.request_messages(), stream=True, **kwargs
        )

    def _chunk_events(
        self,
        chunk: Any,
        turn: _Turn,
        round_no: int,
        splitter: ClauseSplitter,
        text: list[str],
        pending: dict[int, _PendingCall],
    ) -> list[TurnEvent]:
        """Events for one streamed chunk; tool-call deltas are assembled into `pending` by index."""
        events: list[TurnEvent] = []
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            prompt, completion = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
            turn.prompt_tokens += prompt
            turn.completion_tokens += completion
            events.append(Usage(prompt, completion, round_no))
        for choice in chunk.choices or ():
            if choice.finish_reason:
                turn.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                text.append(delta.content)
                turn.text.append(delta.content)
                events.append(TextDelta(delta.content))
                events.extend(self._clause(turn, c) for c in splitter.push(delta.content))
            for tc in delta.tool_calls or ():
                _merge_tool_delta(pending, tc)
        return events

    def _clause(self, turn: _Turn, text: str) -> Clause:
        turn.clauses += 1
        return Clause(text, turn.clauses - 1)

    async def _run_tools(
        self, conversation: Conversation, calls: list[_PendingCall]
    ) -> AsyncGenerator[TurnEvent, None]:
        """Execute the round's tool calls in order and record every result, even when cut short: a history
        with an unanswered tool call is rejected by the endpoint on the next turn."""
        assert self._tools is not None
        answered = 0
        try:
            for call in calls:
                arguments = "".join(call.arguments)
                yield ToolCallRequest(call.call_id, call.name, arguments)
                try:
                    result = await self._tools.call(call.name, arguments)
                except Exception as exc:  # a ToolInvoker should not raise; if it does, the model hears why
                    log.warning("llm.tool_invoker_raised", tool=call.name[:64], error=type(exc).__name__)
                    result = ToolResult(False, f"{call.name} failed.", ERROR, 0.0, DEFAULT_FALLBACK)
                conversation.add_tool_result(call.call_id, result.content)
                answered += 1
                yield ToolCallResult(call.call_id, call.name, result)
        finally:
            for call in calls[answered:]:
                conversation.add_tool_result(call.call_id, INTERRUPTED_TOOL_CONTENT)


def _merge_tool_delta(pending: dict[int, _PendingCall], tc: Any) -> None:
    """Fold one streamed tool-call delta in: id and name come first, arguments arrive in pieces."""
    index = tc.index
    if index is None:  # some compatible servers omit it: a new id starts a new call
        index = len(pending) if (tc.id or not pending) else max(pending)
    call = pending.setdefault(index, _PendingCall(f"call_{index}", ""))
    fn = tc.function
    if tc.id:
        call.call_id = tc.id
    if fn is not None and fn.name and not call.name:
        call.name = fn.name
    if fn is not None and fn.arguments:
        call.arguments.append(fn.arguments)
