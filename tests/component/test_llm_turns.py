"""The turn runner with the real `openai` client against the OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.peers.openai_stub import (
    ChatStream,
    Hang,
    Hold,
    HttpError,
    OpenAIStub,
    text_chunks,
    tool_call_chunks,
)
from trunkline.pipeline.conversation import CatalogTools, Conversation
from trunkline.pipeline.llm import (
    INTERRUPTED_TOOL_CONTENT,
    Clause,
    FirstToken,
    LlmTurnRunner,
    LlmUnavailable,
    TextDelta,
    ToolCallRequest,
    ToolCallResult,
    TurnDone,
    TurnEvent,
    TurnLimits,
    Usage,
    make_openai_client,
)
from trunkline.tools.catalog import ToolCatalog, ToolContext, ToolOutcome, ToolSpec

FAST = TurnLimits(first_token_timeout_s=0.5, stall_timeout_s=0.5, turn_timeout_s=5.0, max_tool_rounds=2)
CTX = ToolContext("acme", "call-1")
SLOTS_SCHEMA = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}


class SlotsTool:
    """A tenant tool for the tests: records its arguments, optionally waits on a gate."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self._gate = gate

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        self.calls.append(arguments)
        self.started.set()
        if self._gate is not None:
            await self._gate.wait()
        return ToolOutcome(True, json.dumps({"day": arguments["day"], "slots": ["9:00", "14:30"]}))


def catalog_with(tool: SlotsTool, *, confirm_first: bool = False) -> ToolCatalog:
    spec = ToolSpec("find_slots", "Free slots on a day", SLOTS_SCHEMA, "builtin", confirm_first=confirm_first)
    return ToolCatalog("acme", [(spec, tool)])


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


@pytest.fixture
async def client(stub: OpenAIStub) -> AsyncIterator[Any]:
    api = make_openai_client(stub.base_url, "sk-test-key")
    yield api
    await api.close()


def conversation(user: str = "Do you have anything on Tuesday?") -> Conversation:
    conv = Conversation("You are the front desk of Acme Dental.")
    conv.add_user(user)
    return conv


async def collect(runner: LlmTurnRunner, conv: Conversation) -> list[TurnEvent]:
    async with asyncio.timeout(10):
        return [event async for event in runner.run(conv)]


def of_type(events: list[TurnEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_text_streams_as_clauses_before_the_reply_ends(stub: OpenAIStub, client: Any) -> None:
    gate = stub.gate()
    chunks = text_chunks(["Sure", ".", " We have", " openings on Tuesday", ", Wednesday", " and", " Thursday",
                          " morning", ". Which", " works", " for you?"], usage=(42, 17))  # fmt: skip
    stub.chat.append(ChatStream((*chunks[:4], Hold(gate), *chunks[4:])))
    conv = conversation()
    runner = LlmTurnRunner(client, model="stub-model", limits=FAST)
    events: list[TurnEvent] = []
    async with asyncio.timeout(10), contextlib.aclosing(runner.run(conv)) as turn:
        async for event in turn:
            events.append(event)
            if isinstance(event, Clause) and event.index == 0:
                assert not gate.is_set()  # the first clause arrived while the stream was still open
                gate.set()
    assert isinstance(events[0], FirstToken) and len(of_type(events, FirstToken)) == 1
    clauses = [c.text for c in of_type(events, Clause)]
    assert clauses == ["Sure.", "We have openings on Tuesday,", "Wednesday and Thursday morning.",
                       "Which works for you?"]  # fmt: skip
    assert [c.index for c in of_type(events, Clause)] == [0, 1, 2, 3]
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert done.text == "".join(d.text for d in of_type(events, TextDelta))
    assert done.text.startswith("Sure. We have openings")
    assert (done.prompt_tokens, done.completion_tokens, done.rounds) == (42, 17, 1)
    assert done.finish_reason == "stop"
    assert done.first_token_ms is not None and done.first_token_ms >= 0
    assert of_type(events, Usage) == [Usage(42, 17, 0)]
    body = stub.requests_to("/chat/completions")[0].json
    assert body is not None
    assert body["model"] == "stub-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "You are the front desk of Acme Dental."}
    assert body["messages"][-1] == {"role": "user", "content": "Do you have anything on Tuesday?"}
    assert "tools" not in body
    assert stub.requests_to("/chat/completions")[0].headers["authorization"] == "Bearer sk-test-key"
    assert conv.messages[-1] == {"role": "assistant", "content": done.text}


async def test_tool_call_round_trip(stub: OpenAIStub, client: Any) -> None:
    call = ("call_abc123", "find_slots", ['{"da', 'y": "Tue', 'sday"}'])
    stub.chat.append(ChatStream(tuple(tool_call_chunks([call], text=["Let me check."], usage=(50, 12)))))
    stub.chat.append(ChatStream(tuple(text_chunks(["I have 9 and 2:30", " on Tuesday."], usage=(80, 9)))))
    tool = SlotsTool()
    runner = LlmTurnRunner(
        client, model="stub-model", limits=FAST, tools=CatalogTools(catalog_with(tool), CTX)
    )
    conv = conversation()
    events = await collect(runner, conv)

    assert tool.calls == [{"day": "Tuesday"}]
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta | Usage)]
    assert kinds == ["FirstToken", "Clause", "ToolCallRequest", "ToolCallResult", "Clause", "TurnDone"]
    request = of_type(events, ToolCallRequest)[0]
    assert request == ToolCallRequest("call_abc123", "find_slots", '{"day": "Tuesday"}')
    result = of_type(events, ToolCallResult)[0].result
    assert result.ok and json.loads(result.content)["slots"] == ["9:00", "14:30"]
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert (done.rounds, done.prompt_tokens, done.completion_tokens) == (2, 130, 21)
    assert [u.round for u in of_type(events, Usage)] == [0, 1]

    first, second = (r.json for r in stub.requests_to("/chat/completions"))
    assert first is not None and second is not None
    assert [t["function"]["name"] for t in first["tools"]] == ["find_slots"]
    assert "tool_choice" not in first
    assistant, tool_message = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me check."
    function = {"name": "find_slots", "arguments": '{"day": "Tuesday"}'}
    assert assistant["tool_calls"] == [{"id": "call_abc123", "type": "function", "function": function}]
    assert tool_message == {"role": "tool", "tool_call_id": "call_abc123", "content": result.content}
    assert conv.messages[-1] == {"role": "assistant", "content": "I have 9 and 2:30 on Tuesday."}


async def test_first_token_of_a_tool_call_is_reported_while_its_arguments_stream(
    stub: OpenAIStub, client: Any
) -> None:
    """The first-token time (the turn's "first LLM token" latency stage) is the first tool-call delta, not
    the end of the round when the call is complete."""
    gate = stub.gate()
    chunks = tool_call_chunks([("call_1", "find_slots", ['{"day": ', '"Friday"}'])])
    stub.chat.append(ChatStream((*chunks[:2], Hold(gate), *chunks[2:])))
    stub.chat.append(ChatStream(tuple(text_chunks(["Yes, Friday at nine works", ". Shall I book it?"]))))
    runner = LlmTurnRunner(client, model="stub-model", limits=FAST,
                           tools=CatalogTools(catalog_with(SlotsTool()), CTX))  # fmt: skip
    events: list[TurnEvent] = []
    async with asyncio.timeout(10), contextlib.aclosing(runner.run(conversation())) as turn:
        async for event in turn:
            events.append(event)
            if isinstance(event, FirstToken):
                assert not gate.is_set()  # the tool call's arguments were still streaming
                gate.set()
    (first,) = of_type(events, FirstToken)
    done = events[-1]
    assert isinstance(done, TurnDone) and done.first_token_at == first.at_s
    # after the tool, the reply's first clause ends at its first comma: it reaches TTS sooner
    assert [c.text for c in of_type(events, Clause)] == ["Yes,", "Friday at nine works.", "Shall I book it?"]


async def test_confirm_first_tool_runs_after_the_caller_answers(stub: OpenAIStub, client: Any) -> None:
    args = ['{"day": ', '"Friday"}']
    for _ in range(2):
        stub.chat.append(ChatStream(tuple(tool_call_chunks([("call_1", "find_slots", args)]))))
        stub.chat.append(ChatStream(tuple(text_chunks(["Okay."]))))
    tool = SlotsTool()
    tools = CatalogTools(catalog_with(tool, confirm_first=True), CTX)
    runner = LlmTurnRunner(client, model="stub-model", limits=FAST, tools=tools)
    conv = conversation("Book Friday please.")
    first = of_type(await collect(runner, conv), ToolCallResult)[0].result
    assert first.status == "needs_confirmation" and tool.calls == []
    conv.add_user("Yes, that's right.")
    tools.caller_spoke()
    second = of_type(await collect(runner, conv), ToolCallResult)[0].result
    assert second.ok and tool.calls == [{"day": "Friday"}]


async def test_tool_rounds_are_bounded(stub: OpenAIStub, client: Any) -> None:
    for n in range(3):
        stub.chat.append(
            ChatStream(tuple(tool_call_chunks([(f"call_{n}", "find_slots", ['{"day": "Monday"}'])])))
        )
    tool = SlotsTool()
    runner = LlmTurnRunner(
        client, model="stub-model", limits=FAST, tools=CatalogTools(catalog_with(tool), CTX)
    )
    conv = conversation()
    events = await collect(runner, conv)
    assert len(tool.calls) == 2  # max_tool_rounds
    bodies = [r.json for r in stub.requests_to("/chat/completions")]
    assert [b.get("tool_choice") for b in bodies if b] == [None, None, "none"]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.rounds == 3
    # the ignored third call left no unanswered tool call in the history
    asked = {c["id"] for m in conv.messages for c in m.get("tool_calls", ())}
    answered = {m["tool_call_id"] for m in conv.messages if m["role"] == "tool"}
    assert asked == answered == {"call_0", "call_1"}


async def test_http_500_fails_fast_without_sdk_retries(stub: OpenAIStub, client: Any) -> None:
    stub.chat.append(HttpError(500, "upstream exploded"))
    stub.chat.append(ChatStream(tuple(text_chunks(["should never be used"]))))
    conv = conversation()
    with pytest.raises(LlmUnavailable) as info:
        await collect(LlmTurnRunner(client, model="stub-model", limits=FAST), conv)
    assert info.value.reason == "http_500" and info.value.retryable and not info.value.spoken
    assert len(stub.requests_to("/chat/completions")) == 1
    assert conv.messages == [{"role": "user", "content": "Do you have anything on Tuesday?"}]


async def test_client_error_is_not_retryable(stub: OpenAIStub, client: Any) -> None:
    stub.chat.append(HttpError(400, "bad model"))
    with pytest.raises(LlmUnavailable) as info:
        await collect(LlmTurnRunner(client, model="stub-model", limits=FAST), conversation())
    assert info.value.reason == "http_400" and not info.value.retryable


async def test_no_response_headers_hits_the_first_token_timeout(stub: OpenAIStub, client: Any) -> None:
    stub.chat.append(Hang(stub.gate()))
    with pytest.raises(LlmUnavailable) as info:
        await collect(LlmTurnRunner(client, model="stub-model", limits=FAST), conversation())
    assert info.value.reason == "first_token_timeout" and not info.value.spoken


async def test_headers_but_no_tokens_hits_the_first_token_timeout(stub: OpenAIStub, client: Any) -> None:
    role_only = text_chunks([])[:1]  # a role chunk carries no token: the first-token clock keeps running
    stub.chat.append(ChatStream((*role_only, Hold(stub.gate()))))
    with pytest.raises(LlmUnavailable) as info:
        await collect(LlmTurnRunner(client, model="stub-model", limits=FAST), conversation())
    assert info.value.reason == "first_token_timeout"


async def test_stall_mid_reply_times_out_and_keeps_what_was_said(stub: OpenAIStub, client: Any) -> None:
    chunks = text_chunks(["One moment", ".", " I am", " checking"])
    stub.chat.append(ChatStream((*chunks[:4], Hold(stub.gate()))))
    conv = conversation()
    seen: list[TurnEvent] = []
    with pytest.raises(LlmUnavailable) as info:
        async with asyncio.timeout(10):
            async for event in LlmTurnRunner(client, model="stub-model", limits=FAST).run(conv):
                seen.append(event)
    assert info.value.reason == "stall_timeout" and info.value.spoken
    assert [c.text for c in of_type(seen, Clause)] == ["One moment."]
    assert conv.messages[-1] == {"role": "assistant", "content": "One moment. I am"}


async def test_barge_in_closes_the_stream_and_truncates_to_what_was_heard(
    stub: OpenAIStub, client: Any
) -> None:
    chunks = text_chunks(["We open at nine", ".", " On Saturdays", " we open at ten", "."])
    stub.chat.append(ChatStream((*chunks[:4], Hold(stub.gate()), *chunks[4:])))
    conv = conversation("When do you open?")
    async with (
        asyncio.timeout(10),
        contextlib.aclosing(LlmTurnRunner(client, model="stub-model").run(conv)) as t,
    ):
        async for event in t:
            if isinstance(event, Clause):
                break  # the caller starts talking while the first clause plays
    assert conv.messages[-1] == {"role": "assistant", "content": "We open at nine. On Saturdays"}
    conv.truncate_last_assistant("We open at")
    assert conv.messages[-1] == {"role": "assistant", "content": "We open at"}


async def test_cancel_during_a_tool_leaves_a_valid_history(stub: OpenAIStub, client: Any) -> None:
    stub.chat.append(ChatStream(tuple(tool_call_chunks([("call_9", "find_slots", ['{"day": "Monday"}'])]))))
    tool = SlotsTool(gate=stub.gate())
    runner = LlmTurnRunner(
        client, model="stub-model", limits=FAST, tools=CatalogTools(catalog_with(tool), CTX)
    )
    conv = conversation()
    task = asyncio.create_task(collect(runner, conv))
    async with asyncio.timeout(10):
        await tool.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert conv.messages[-2]["tool_calls"][0]["id"] == "call_9"
    assert conv.messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_9",
        "content": INTERRUPTED_TOOL_CONTENT,
    }


async def test_error_event_mid_stream_is_unavailable(stub: OpenAIStub, client: Any) -> None:
    chunks = text_chunks(["Let me see", ". One"])
    stub.chat.append(ChatStream((*chunks[:3], {"error": {"message": "overloaded", "type": "server_error"}})))
    conv = conversation()
    with pytest.raises(LlmUnavailable) as info:
        await collect(LlmTurnRunner(client, model="stub-model", limits=FAST), conv)
    assert info.value.reason == "stream_error" and info.value.spoken
    assert conv.messages[-1] == {"role": "assistant", "content": "Let me see. One"}


async def test_endpoint_down_is_unavailable_at_once() -> None:
    with socket.socket() as probe:  # a port on 127.0.0.1 that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = make_openai_client(f"http://127.0.0.1:{port}/v1", None)
    try:
        with pytest.raises(LlmUnavailable) as info:
            await collect(LlmTurnRunner(api, model="m", limits=FAST), conversation())
    finally:
        await api.close()
    assert info.value.reason == "connection" and info.value.retryable
