"""The chat context of one phone call, and the adapter that lets the turn runner call a tenant's tools.

`Conversation` holds the system prompt and the OpenAI-format message history; `truncate_last_assistant`
rewrites the agent's last reply to what the caller actually heard before barging in, so the model does not
believe it said things the caller never heard. Plain data and list operations, no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from trunkline.tools.catalog import NEEDS_CONFIRMATION, ToolCatalog, ToolContext, ToolResult

Message = dict[str, Any]


class Conversation:
    """System prompt plus messages; the oldest are dropped beyond `max_messages` when a caller turn starts."""

    def __init__(self, system_prompt: str, *, max_messages: int = 80) -> None:
        if max_messages < 2:
            raise ValueError("max_messages must be at least 2")
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self.messages: list[Message] = []

    def request_messages(self) -> list[Message]:
        """What to send to the chat endpoint: the system prompt, then the history."""
        history = [dict(m) for m in self.messages]
        if not self.system_prompt:
            return history
        return [{"role": "system", "content": self.system_prompt}, *history]

    def add_user(self, text: str) -> None:
        """The caller's new utterance; starts a turn (and trims the history to `max_messages`)."""
        self._append({"role": "user", "content": text})
        self._trim()

    def add_assistant(self, text: str, tool_calls: list[Message] | None = None) -> None:
        """The agent's reply; `tool_calls` in OpenAI format (id, type, function{name, arguments})."""
        message: Message = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        self._append(message)

    def add_tool_result(self, call_id: str, content: str) -> None:
        self._append({"role": "tool", "tool_call_id": call_id, "content": content})

    def truncate_last_assistant(self, heard_text: str) -> None:
        """Barge-in: the caller heard only `heard_text` of the last reply. A reply nobody heard (and that
        asked for no tools) is removed; tool calls stay, as they were made whatever was heard."""
        for i in range(len(self.messages) - 1, -1, -1):
            message = self.messages[i]
            if message["role"] == "user":
                return
            if message["role"] != "assistant" or not message.get("content"):
                continue
            heard = heard_text.strip()
            if heard:
                self.messages[i] = {**message, "content": heard}
            elif message.get("tool_calls"):
                self.messages[i] = {**message, "content": None}
            else:
                del self.messages[i]
            return

    def last_assistant_text(self) -> str:
        """Text of the most recent assistant message that has any ('' if none)."""
        for message in reversed(self.messages):
            if message["role"] == "assistant" and message.get("content"):
                return str(message["content"])
        return ""

    def _append(self, message: Message) -> None:
        self.messages.append(message)

    def _trim(self) -> None:
        """Drop the oldest messages beyond `max_messages`, then any tool results left without their call.
        Runs only when a caller turn starts, so a turn's own tool calls and results are never split."""
        excess = len(self.messages) - self.max_messages
        if excess > 0:
            del self.messages[:excess]
        while self.messages and self.messages[0]["role"] == "tool":
            del self.messages[0]


class ToolInvoker(Protocol):
    """What the turn runner needs from tools: their definitions and one gate to call them through.
    (Named apart from `tools.catalog.ToolExecutor`, which is one tool's implementation.)"""

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools to offer, in the chat-completions `tools` format."""
        ...

    async def call(self, name: str, arguments_json: str) -> ToolResult:
        """Run one tool call; must not raise (a failed call is a ToolResult with ok=False)."""
        ...


class CatalogTools:
    """A tenant's `ToolCatalog` bound to one phone call. A confirm-first tool that the model calls again
    with the same arguments after the caller has spoken (`caller_spoke()`) runs as confirmed."""

    def __init__(self, catalog: ToolCatalog, ctx: ToolContext) -> None:
        self._catalog = catalog
        self._ctx = ctx
        self._asked: set[tuple[str, str]] = set()  # read back, awaiting the caller's answer
        self._answered: set[tuple[str, str]] = set()  # read back and the caller has spoken since

    def openai_tools(self) -> list[dict[str, Any]]:
        return self._catalog.openai_tools()

    def caller_spoke(self) -> None:
        """A new caller utterance arrived: pending read-backs have had their answer."""
        self._answered = self._asked
        self._asked = set()

    async def call(self, name: str, arguments_json: str) -> ToolResult:
        key = (name, _canonical_json(arguments_json))
        confirmed = key in self._answered
        result = await self._catalog.call(name, arguments_json, self._ctx, confirmed=confirmed)
        if result.status == NEEDS_CONFIRMATION:
            self._asked.add(key)
        else:
            self._answered.discard(key)
        return result


def _canonical_json(text: str) -> str:
    """Arguments compared by value, not by spacing or key order."""
    try:
        return json.dumps(json.loads(text or "{}"), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return text
