"""The voice agent of one answered call: listen (`hearing.py`: VAD → segmenter/endpointer → speculative
ASR), answer (reply policy → clauses → TTS → leg), and stop the instant the caller barges in.

One `asyncio.TaskGroup` per call holds the listener, responder, playout, timer and event tasks; they talk
through one bounded queue of work for the responder. Everything the agent says (greeting, replies,
re-prompts, fallbacks) goes through the responder one item at a time, so an interruption always cancels
exactly the item being spoken. Hang-up cancels the group; nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from trunkline.logs import get_logger
from trunkline.mediaserver.dtmf import DtmfDigit
from trunkline.pipeline.asr import SpeechRecognizer
from trunkline.pipeline.hearing import NO_SPEECH_DROP, Hearing, likely_hallucination
from trunkline.pipeline.latency import TurnLatency
from trunkline.pipeline.policy import Decided, ReplyPolicy, SayClause, TokensUsed, ToolUsed
from trunkline.pipeline.speaker import Playback, Speaker
from trunkline.pipeline.work import (
    CallActions,
    CallerTurn,
    EndCall,
    Prompt,
    Transfer,
    TurnRecorder,
    WorkItem,
)
from trunkline.vad.bargein import BargeInPolicy
from trunkline.vad.listener import TurnListener
from trunkline.vad.turns import CallTimers, HangUp, Say
from trunkline.vad.vad import VoiceActivityDetector

__all__ = ["HOLD_LINE", "NO_SPEECH_DROP", "Agent", "CallActions", "CallerTurn", "EndCall", "Prompt",
           "Transfer", "TurnRecorder", "WorkItem", "likely_hallucination"]  # fmt: skip
log = get_logger("trunkline.pipeline.agent")
QUEUE_MAX = 8
HOLD_LINE = "One moment."
HOLD_AFTER_S = 1.0
TRANSFER_FAILED_KEY = "transfer_failed"  # the prompt said when the carrier refuses our transfer
_END = object()


class Agent:
    """One call's agent. Build it (constructors start nothing), then `await run()` until the call ends."""

    def __init__(
        self,
        leg: Any,
        *,
        vad: VoiceActivityDetector,
        listener: TurnListener,
        barge_in: BargeInPolicy,
        timers: CallTimers,
        asr: SpeechRecognizer,
        speaker: Speaker,
        policy: ReplyPolicy,
        prompts: Mapping[str, str],
        actions: CallActions,
        recorder: TurnRecorder,
        events: asyncio.Queue[Any] | None = None,
        language: str = "en",
        hold_line: str = HOLD_LINE,
        hold_after_s: float = HOLD_AFTER_S,
    ) -> None:
        self._leg = leg
        self._hold_line = hold_line
        self._hold_after_s = hold_after_s
        self._barge_in = barge_in
        self._timers = timers
        self._speaker = speaker
        self._policy = policy
        self._prompts = prompts
        self._actions = actions
        self._recorder = recorder
        self._events = events
        self._work: asyncio.Queue[WorkItem] = asyncio.Queue(QUEUE_MAX)
        self._timers_changed = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._current: asyncio.Task[None] | None = None
        self._pending_action: EndCall | Transfer | None = None
        self.hearing = Hearing(
            leg, vad=vad, listener=listener, barge_in=barge_in, timers=timers, asr=asr, speaker=speaker,
            language=language, clock=self.clock, submit=self._submit, cancel_current=self._cancel_current,
            timers_changed=self._timers_changed.set,
        )  # fmt: skip
        speaker.on_started = self.agent_started
        speaker.on_finished = self.agent_finished

    @property
    def interruptions(self) -> int:
        return self.hearing.interruptions

    @property
    def dropped_turns(self) -> int:
        return self.hearing.dropped_turns

    @staticmethod
    def clock() -> float:
        return asyncio.get_running_loop().time()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Greet, then listen and answer until cancelled (hang-up) or the agent ends the call."""
        for action in self._timers.answered(self.clock()):
            self._on_timer_action(action)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self.hearing.run(group))
                group.create_task(self._respond())
                group.create_task(self._playout())
                group.create_task(self._run_timers())
                if self._events is not None:
                    group.create_task(self._call_events(self._events))
        finally:
            self._group = None
            self.hearing.close()

    def end_call(self, reason: str) -> None:
        """`end_call` tool: hang up after what is queued has been said."""
        self._pending_action = EndCall(reason)

    def transfer(self, target: str) -> None:
        """`transfer_call` tool: transfer after what is queued has been said."""
        self._pending_action = Transfer(target)

    # --- answering ----------------------------------------------------------------------------------

    def _cancel_current(self) -> None:
        """Barge-in: stop the item being said (its task records what was heard)."""
        if self._current is not None:
            self._current.cancel()

    def _submit(self, item: WorkItem) -> None:
        try:
            self._work.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("agent.work_dropped", kind=type(item).__name__)

    async def _respond(self) -> None:
        assert self._group is not None
        while True:
            item = await self._work.get()
            if isinstance(item, EndCall | Transfer):
                await self._act(item)
                continue
            await self._say_now(item)
            if self._pending_action is not None and not self._speaker.speaking:
                action, self._pending_action = self._pending_action, None
                await self._act(action)

    async def _act(self, action: EndCall | Transfer) -> None:
        if isinstance(action, EndCall):
            log.info("agent.hangup", reason=action.reason)
            await self._actions.hangup()
        else:
            log.info("agent.transfer")
            # False: the carrier refused or did not answer, and the caller is still on the line: tell them
            # first, before any turn they took meanwhile is answered
            if await self._actions.transfer(action.target) is False:
                log.warning("agent.transfer_failed")
                text = self._prompts.get(TRANSFER_FAILED_KEY, "")
                if text:
                    await self._say_now(Prompt(TRANSFER_FAILED_KEY, (text,)))

    async def _say_now(self, item: CallerTurn | Prompt) -> None:
        """Say one item as the current task, so that a barge-in can cancel it."""
        assert self._group is not None
        task = self._group.create_task(self._say_item(item))
        self._current = task
        await asyncio.wait([task])
        self._current = None

    async def _say_item(self, item: CallerTurn | Prompt) -> None:
        """Say one item; on barge-in this task is cancelled and the context is cut to what was heard."""
        playback = self._speaker.begin(item.latency if isinstance(item, CallerTurn) else None)
        self._speaker.resume()  # a pause by a barge-in that never resolved must not mute this item
        try:
            if isinstance(item, CallerTurn):
                self._recorder.caller_turn(item)
                await self._answer(item, playback)
            else:
                for text in item.texts:
                    await self._speaker.say(playback, text, cached=item.key != "resume_cut")
            self._speaker.end(playback)
            await playback.done.wait()
        except asyncio.CancelledError:
            pass  # barge-in: handled below from the playback's state
        except Exception:  # a failing reply must not end the call
            log.exception("agent.reply_failed")
            self._speaker.end(playback)
        heard = (playback.heard_text or "") if playback.interrupted else None
        if isinstance(item, CallerTurn):
            if heard is not None:
                self._policy.heard(heard)
        else:  # a prompt enters the context once it has played, as far as the caller heard it
            self._policy.said(playback.text if heard is None else heard)
        self._recorder.agent_turn(playback, heard, self.clock())

    async def _answer(self, turn: CallerTurn, playback: Playback) -> None:
        """Play the policy's answer as it streams. If the caller has heard nothing of it after
        `hold_after_s` of waiting (a slow tool, a slow model), say the hold line once: no dead air."""
        events = self._policy.reply(turn.text)
        held = not self._hold_line
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                pending = asyncio.ensure_future(anext(events, _END))
                if not held and playback.total_samples == 0:
                    done, _ = await asyncio.wait({pending}, timeout=self._hold_after_s)
                    if not done:
                        held = True
                        log.info("agent.hold_line")
                        await self._speaker.say(playback, self._hold_line, cached=True)
                event = await pending
                pending = None
                if event is _END:
                    return
                await self._on_policy_event(event, playback, turn.latency)
        finally:
            if pending is not None:  # cancelled (barge-in) mid-event: stop the policy's step first
                pending.cancel()
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()
            await events.aclose()  # type: ignore[attr-defined]

    async def _on_policy_event(self, event: Any, playback: Playback, latency: TurnLatency | None) -> None:
        if isinstance(event, Decided):
            if latency is not None:
                latency.mark("first_llm_token", event.at_s)
        elif isinstance(event, SayClause):
            await self._speaker.say(playback, event.text, cached=event.fallback)
        elif isinstance(event, ToolUsed):
            self._recorder.tool_used(event)
        elif isinstance(event, TokensUsed):
            self._recorder.tokens_used(event)

    # --- playout, timers, call events ---------------------------------------------------------------

    async def _playout(self) -> None:
        async for position in self._leg.playout:
            if position.completed:
                self._speaker.on_playout(position.utterance_id, self.clock())

    def agent_started(self, now: float) -> None:
        """Speaker callback: the caller starts hearing the agent."""
        log.debug("agent.speaking")
        self._barge_in.agent_started(now)
        self._timers.agent_started(now)
        self._timers_changed.set()

    def agent_finished(self, now: float) -> None:
        """Speaker callback: everything queued has played."""
        log.debug("agent.spoke")
        self._barge_in.agent_finished(now)
        self._timers.agent_finished(now)
        self._timers_changed.set()

    async def _run_timers(self) -> None:
        while True:
            deadline = self._timers.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timers_changed.wait(), timeout)
            self._timers_changed.clear()
            for action in self._timers.poll(self.clock()):
                self._on_timer_action(action)

    def _on_timer_action(self, action: Say | HangUp) -> None:
        if isinstance(action, Say):
            text = self._prompts.get(action.text_key, "")
            if text:
                self._submit(Prompt(action.text_key, (text,)))
        else:
            self._submit(EndCall(action.reason.value))

    async def _call_events(self, events: asyncio.Queue[Any]) -> None:
        while True:
            event = await events.get()
            if isinstance(event, DtmfDigit):
                now = self.clock()
                log.info("agent.dtmf", digit=event.digit)
                self._timers.caller_started(now)
                self._timers.caller_finished(now)
                self._timers_changed.set()
                self._submit(CallerTurn(f"The caller pressed {event.digit}.", None, now, now))
