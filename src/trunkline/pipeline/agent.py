"""The voice agent of one answered call: listen (VAD → segmenter/endpointer → speculative ASR), answer (reply
policy → clauses → TTS → leg), and stop the instant the caller barges in.

One `asyncio.TaskGroup` per call holds the listener, responder, playout, timer and event tasks; they talk
through one bounded queue of work for the responder. Everything the agent says (greeting, replies,
re-prompts, fallbacks) goes through the responder one item at a time, so an interruption always cancels
exactly the item being spoken. Hang-up cancels the group; nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from trunkline.logs import get_logger
from trunkline.mediaserver.dtmf import DtmfDigit
from trunkline.pipeline.asr import SpeechRecognizer
from trunkline.pipeline.latency import TurnLatency
from trunkline.pipeline.policy import Decided, ReplyPolicy, SayClause, TokensUsed, ToolUsed
from trunkline.pipeline.speaker import Playback, Speaker
from trunkline.vad.bargein import (
    BargeInAction,
    BargeInDecision,
    BargeInPolicy,
    TranscriptKind,
    classify_burst,
)
from trunkline.vad.endpointing import DecodeRequest
from trunkline.vad.listener import DecodeCancelled, TurnEnded, TurnListener, TurnTranscript
from trunkline.vad.segmenter import SpeechStarted
from trunkline.vad.turns import CallTimers, HangUp, Say
from trunkline.vad.vad import VadFrameError, VoiceActivityDetector

log = get_logger("trunkline.pipeline.agent")
QUEUE_MAX = 8
HOLD_LINE = "One moment."
HOLD_AFTER_S = 1.0
_END = object()


# What whisper says over noise or silence: never phone speech, or (when it thinks there is no speech) too
# generic to trust.
_NEVER_SPOKEN = (
    "thanks for watching",
    "thank you for watching",
    "please subscribe",
    "subtitles by",
    "amara org",
)
_GENERIC = frozenset({"you", "thank you", "thanks", "bye", "so", "the end", "thank you very much"})
NO_SPEECH_DROP = 0.5


def likely_hallucination(text: str, no_speech_prob: float | None) -> bool:
    """True for a transcript that is probably whisper inventing words over noise (dropped, not answered)."""
    norm = " ".join(re.findall(r"[a-z0-9]+", text.lower()))
    if any(phrase in norm for phrase in _NEVER_SPOKEN):
        return True
    return norm in _GENERIC and no_speech_prob is not None and no_speech_prob >= NO_SPEECH_DROP


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
        self._vad = vad
        self._listener = listener
        self._barge_in = barge_in
        self._timers = timers
        self._asr = asr
        self._speaker = speaker
        self._policy = policy
        self._prompts = prompts
        self._actions = actions
        self._recorder = recorder
        self._events = events
        self._language = language
        self._work: asyncio.Queue[WorkItem] = asyncio.Queue(QUEUE_MAX)
        self._timers_changed = asyncio.Event()
        self._decodes: dict[int, asyncio.Task[None]] = {}
        self._asr_lock = asyncio.Lock()
        self._turns: dict[int, TurnEnded] = {}
        self._group: asyncio.TaskGroup | None = None
        self._current: asyncio.Task[None] | None = None
        self._during_playback = False  # the caller's current burst began while the agent spoke
        self._interrupted = False  # ...and it interrupted the agent
        self._cut_unsaid: tuple[str, ...] = ()
        self._resume_pending = False  # a confirm timeout came while the caller's words were still decoding
        self._pending_action: EndCall | Transfer | None = None
        self.interruptions = 0
        self.dropped_turns = 0
        speaker.on_started = self.agent_started
        speaker.on_finished = self.agent_finished

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
                group.create_task(self._listen())
                group.create_task(self._respond())
                group.create_task(self._playout())
                group.create_task(self._run_timers())
                if self._events is not None:
                    group.create_task(self._call_events(self._events))
        finally:
            self._group = None
            for task in self._decodes.values():
                task.cancel()

    def end_call(self, reason: str) -> None:
        """`end_call` tool: hang up after what is queued has been said."""
        self._pending_action = EndCall(reason)

    def transfer(self, target: str) -> None:
        """`transfer_call` tool: transfer after what is queued has been said."""
        self._pending_action = Transfer(target)

    # --- listening ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        async for frame in self._leg.frames:
            now = self.clock()
            try:
                speech = self._vad.is_speech(frame)
            except VadFrameError:
                continue
            for event in self._listener.push(frame, speech, now):
                self._on_listener_event(event, now)
            for decision in self._barge_in.poll(now):
                self._on_barge_in(decision)
            self._speaker.on_tick(now)

    def _on_listener_event(self, event: Any, now: float) -> None:
        if isinstance(event, SpeechStarted):
            self._during_playback = self._speaker.speaking
            self._interrupted = False
            if not self._during_playback:
                self._timers.caller_started(now)
                self._timers_changed.set()
        if isinstance(event, DecodeRequest):
            self._start_decode(event)
        elif isinstance(event, DecodeCancelled):
            task = self._decodes.pop(event.request_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, TurnEnded):
            self._turns[event.transcript_request_id] = event
        elif isinstance(event, TurnTranscript):
            self._on_transcript(event)
        else:
            for decision in self._barge_in.on_segment(event):
                self._on_barge_in(decision)

    def _start_decode(self, request: DecodeRequest) -> None:
        assert self._group is not None
        log.debug("agent.decode_started", request_id=request.request_id, final=request.final)
        self._decodes[request.request_id] = self._group.create_task(self._decode(request))

    async def _decode(self, request: DecodeRequest) -> None:
        text = ""
        try:
            async with self._asr_lock:  # one decode per call at a time; stale ones drop while waiting
                result = await self._asr.transcribe(
                    request.audio, self._leg.sample_rate_hz, language=self._language
                )
            text = result.text.strip()
            if likely_hallucination(text, result.no_speech_prob):
                log.info("agent.asr_hallucination_dropped", words=len(text.split()))
                text = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed decode is an empty turn, never a dead call
            log.warning("agent.asr_failed", error=type(exc).__name__)
        finally:
            self._decodes.pop(request.request_id, None)
        now = self.clock()
        log.debug("agent.decoded", request_id=request.request_id, final=request.final,
                  decode_ms=round(1000 * (now - request.audio_end_s)))  # fmt: skip
        if self._speaker.speaking or self._during_playback:
            for decision in self._barge_in.on_transcript(text, now):
                self._on_barge_in(decision)
        for event in self._listener.on_transcript(request.request_id, text, now):
            self._on_listener_event(event, now)
        self._settle_resume(text)

    def _on_transcript(self, event: TurnTranscript) -> None:
        ended = self._turns.pop(event.request_id, None)
        if ended is None:
            return
        text = event.text.strip()
        log.info("agent.turn_heard", reused=event.reused, during_playback=self._during_playback,
                 interrupted=self._interrupted, words=len(text.split()), text=text,
                 endpoint_ms=round(1000 * (ended.now_s - ended.end_s)),
                 transcript_ms=round(1000 * (event.now_s - ended.end_s)))  # fmt: skip
        if self._during_playback:
            for decision in self._barge_in.on_transcript(text, event.now_s):
                self._on_barge_in(decision)
            kind = classify_burst(text, self._barge_in.backchannel_words)
            if not self._interrupted and kind is not TranscriptKind.WORDS:
                self.dropped_turns += 1  # a backchannel or noise while the agent spoke
                log.info("agent.backchannel_ignored", words=len(text.split()))
                return
        if not any(ch.isalnum() for ch in text):
            self.dropped_turns += 1
            return
        latency = TurnLatency(ended.end_s)
        latency.mark("endpoint", ended.now_s)
        latency.mark("transcript", event.now_s)
        self._during_playback = False
        self._timers.caller_finished(event.now_s)
        self._timers_changed.set()
        self._submit(CallerTurn(text, latency, ended.onset_s, ended.end_s))

    def _on_barge_in(self, decision: BargeInDecision) -> None:
        action = decision.action
        if action is BargeInAction.PAUSE:
            self._speaker.pause()
        elif action is BargeInAction.RESUME:
            self._speaker.resume()
        elif action is BargeInAction.INTERRUPT:
            self._interrupt(decision)
        elif action is BargeInAction.RESUME_CUT and self._cut_unsaid:
            if decision.reason == "confirm_timeout" and (self._decodes or self._turns):
                self._resume_pending = True  # slow ASR is not silence: let the words decide
            else:
                self._resume_cut()

    def _resume_cut(self) -> None:
        """The interruption was noise: say the cut sentence again."""
        self._resume_pending = False
        if self._cut_unsaid:
            log.info("agent.resume_cut")
            self._submit(Prompt("resume_cut", self._cut_unsaid))
            self._cut_unsaid = ()

    def _settle_resume(self, text: str) -> None:
        """A deferred RESUME_CUT: words mean the caller took the floor; no words (and nothing left to
        decode) mean it was noise after all."""
        if not self._resume_pending:
            return
        if classify_burst(text, self._barge_in.backchannel_words) is TranscriptKind.WORDS:
            self._resume_pending = False
            self._cut_unsaid = ()
        elif not self._decodes and not self._turns:
            self._resume_cut()

    def _interrupt(self, decision: BargeInDecision) -> None:
        self._interrupted = True
        self.interruptions += 1
        cuts = self._speaker.interrupt()
        log.info("agent.barge_in", reason=decision.reason, cut=len(cuts))
        if cuts:
            self._cut_unsaid = cuts[-1].unsaid
        if self._current is not None:
            self._current.cancel()
        self._barge_in.agent_finished(decision.now_s)

    # --- answering ----------------------------------------------------------------------------------

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
            task = self._group.create_task(self._say_item(item))
            self._current = task
            await asyncio.wait([task])
            self._current = None
            if self._pending_action is not None and not self._speaker.speaking:
                action, self._pending_action = self._pending_action, None
                await self._act(action)

    async def _act(self, action: EndCall | Transfer) -> None:
        if isinstance(action, EndCall):
            log.info("agent.hangup", reason=action.reason)
            await self._actions.hangup()
        else:
            log.info("agent.transfer")
            await self._actions.transfer(action.target)

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
