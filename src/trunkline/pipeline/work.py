"""What one call's agent works through and reports to: the items its responder says or does one at a time
(caller turns, fixed prompts, hang-up, transfer), the recorder that stores them, and the call actions.
Plain data and Protocols, shared by the agent (`agent.py`) and its listening side (`hearing.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trunkline.pipeline.latency import TurnLatency
from trunkline.pipeline.policy import TokensUsed, ToolUsed
from trunkline.pipeline.speaker import Playback


@dataclass(frozen=True, slots=True)
class CallerTurn:
    """Something the caller said (or pressed) for the policy to answer."""

    text: str
    latency: TurnLatency | None
    onset_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Prompt:
    """A fixed line said on the agent's own initiative (greeting, re-prompt, goodbye); cached TTS."""

    key: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndCall:
    """Hang up once everything before it has been said."""

    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str


WorkItem = CallerTurn | Prompt | EndCall | Transfer


class TurnRecorder(Protocol):
    """Where turns, tool calls and usage go (the call store, the log)."""

    def caller_turn(self, turn: CallerTurn) -> None: ...

    def agent_turn(self, playback: Playback, heard: str | None, ended_s: float) -> None: ...

    def tool_used(self, used: ToolUsed) -> None: ...

    def tokens_used(self, used: TokensUsed) -> None: ...


@dataclass(frozen=True, slots=True)
class CallActions:
    """What the agent may do to the call itself."""

    hangup: Callable[[], Awaitable[None]]
    transfer: Callable[[str], Awaitable[Any]]
