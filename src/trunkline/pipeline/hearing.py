"""The caller side of one call's agent: VAD → segmenter/endpointer → speculative ASR → caller turns, and the
barge-in decisions taken while the agent speaks.

A decode starts when the caller's silence begins (the listener's speculative `DecodeRequest`); if the turn
ends without new speech its result is the transcript (no second decode). The endpointer's deadline runs on
a loop timer (`call_at`), so a turn ends when its hangover expires, not at the next inbound frame.
Finished turns go to the agent's responder through `submit`; an interruption cancels the item being said
through `cancel_current`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from trunkline.logs import get_logger
from trunkline.pipeline.asr import SpeechRecognizer, Word
from trunkline.pipeline.latency import TurnLatency
from trunkline.pipeline.speaker import Speaker
from trunkline.pipeline.work import CallerTurn, Prompt, WorkItem
from trunkline.vad.bargein import (
    SHORT_INTERRUPTIONS,
    BargeInAction,
    BargeInDecision,
    BargeInPolicy,
    TranscriptKind,
    classify_burst,
)
from trunkline.vad.endpointing import DecodeRequest, SpeculativeStats
from trunkline.vad.listener import DecodeCancelled, TurnEnded, TurnListener, TurnTranscript
from trunkline.vad.segmenter import SpeechStarted
from trunkline.vad.turns import CallTimers
from trunkline.vad.vad import VadFrameError, VoiceActivityDetector

log = get_logger("trunkline.pipeline.hearing")

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


UNSURE_MAX_WORDS = 3
UNSURE_WORD_PROB = 0.5


def unsure_backchannel(text: str, words: tuple[Word, ...] | None) -> bool:
    """Words (not a backchannel) in a short transcript whose every word whisper doubts: what tiny whisper
    makes of a hummed backchannel ("Mm-hmm." -> "in a month.", "Mhm." -> "and may chant.") or of a clipped
    first word ("Wait," -> "weight"); not words to stop and answer on their own."""
    if not words or len(words) > UNSURE_MAX_WORDS or classify_burst(text) is not TranscriptKind.WORDS:
        return False
    if any(token in SHORT_INTERRUPTIONS for token in re.findall(r"[a-z']+", text.lower())):
        return False
    return max(w.probability for w in words) < UNSURE_WORD_PROB


class Hearing:
    """Listens to one leg for the agent. `run(group)` consumes the leg's frames until the call ends;
    decodes run as tasks in the agent's group."""

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
        language: str,
        clock: Callable[[], float],
        submit: Callable[[WorkItem], None],
        cancel_current: Callable[[], None],
        timers_changed: Callable[[], None],
    ) -> None:
        self._leg = leg
        self._vad = vad
        self._listener = listener
        self._barge_in = barge_in
        self._timers = timers
        self._asr = asr
        self._speaker = speaker
        self._language = language
        self._clock = clock
        self._submit = submit
        self._cancel_current = cancel_current
        self._timers_changed = timers_changed
        self._group: asyncio.TaskGroup | None = None
        self._decodes: dict[int, asyncio.Task[None]] = {}
        self._asr_lock = asyncio.Lock()
        self._turns: dict[int, TurnEnded] = {}
        self._deadline: tuple[float, asyncio.TimerHandle] | None = None
        self._during_playback = False  # the caller's current burst began while the agent spoke
        self._interrupted = False  # ...and it interrupted the agent
        self._cut_unsaid: tuple[str, ...] = ()
        self._resume_pending = False  # a confirm timeout came while the caller's words were still decoding
        self.interruptions = 0
        self.dropped_turns = 0

    @property
    def speculative_stats(self) -> SpeculativeStats:
        """How the speculative decodes of this call ended (reused, awaited, fresh, cancelled...)."""
        return self._listener.speculative.stats

    async def run(self, group: asyncio.TaskGroup) -> None:
        """Consume the leg's frames until it closes; decodes are started in `group`."""
        self._group = group
        try:
            async for frame in self._leg.frames:
                now = self._clock()
                try:
                    speech = self._vad.is_speech(frame)
                except VadFrameError:
                    continue
                for event in self._listener.push(frame, speech, now):
                    self._on_listener_event(event, now)
                self._arm_deadline()
                for decision in self._barge_in.poll(now):
                    self._on_barge_in(decision)
                self._speaker.on_tick(now)
        finally:
            self.close()

    def close(self) -> None:
        """The call is over: stop the endpoint timer and the decodes still running."""
        if self._deadline is not None:
            self._deadline[1].cancel()
            self._deadline = None
        for task in self._decodes.values():
            task.cancel()

    # --- the endpointer's deadline -------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        """(Re)schedule the endpoint timer for the listener's next deadline, if it moved."""
        deadline = self._listener.next_deadline()
        if self._deadline is not None:
            if self._deadline[0] == deadline:
                return
            self._deadline[1].cancel()
            self._deadline = None
        if deadline is not None:
            handle = asyncio.get_running_loop().call_at(deadline, self._deadline_due)
            self._deadline = (deadline, handle)

    def _deadline_due(self) -> None:
        self._deadline = None
        now = self._clock()
        try:
            for event in self._listener.poll(now):
                self._on_listener_event(event, now)
        except Exception:  # a timer callback has nobody to raise to: the next frame retries
            log.exception("agent.endpoint_timer_failed")
        self._arm_deadline()

    # --- listener events -----------------------------------------------------------------------------

    def _on_listener_event(self, event: Any, now: float) -> None:
        if isinstance(event, SpeechStarted):
            self._during_playback = self._speaker.speaking
            self._interrupted = False
            if not self._during_playback:
                self._timers.caller_started(now)
                self._timers_changed()
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
        unsure = False  # a transcript not to act on: the barge-in policy waits (holds) instead
        timing: dict[str, float] = {}
        try:
            async with self._asr_lock:  # one decode per call at a time; stale ones drop while waiting
                result = await self._asr.transcribe(
                    request.audio, self._leg.sample_rate_hz, language=self._language
                )
            text = result.text.strip()
            if likely_hallucination(text, result.no_speech_prob):
                log.info("agent.asr_hallucination_dropped", words=len(text.split()))
                text = ""
            elif (
                (self._speaker.speaking or self._during_playback)
                and not self._interrupted
                and unsure_backchannel(text, result.words)
            ):  # over the agent, in a burst too short to interrupt: a misheard backchannel, or the start of
                # a sentence ("Wait, ..."); not a turn to answer, and the policy holds until the hold ends or
                # the caller says more
                log.info("agent.asr_unsure_dropped", words=len(text.split()))
                text, unsure = "", True
            elif result.words:  # the endpointer weighs how sure the ASR is of the last word
                last = result.words[-1]
                timing = {"last_word_confidence": last.probability,
                          "after_last_word_s": max(0.0, result.duration_s - last.end_s)}  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed decode is an empty turn, never a dead call
            log.warning("agent.asr_failed", error=type(exc).__name__)
        finally:
            self._decodes.pop(request.request_id, None)
        now = self._clock()
        log.debug("agent.decoded", request_id=request.request_id, final=request.final,
                  decode_ms=round(1000 * (now - request.audio_end_s)))  # fmt: skip
        if (self._speaker.speaking or self._during_playback) and not unsure:
            for decision in self._barge_in.on_transcript(text, now):
                self._on_barge_in(decision)
        for event in self._listener.on_transcript(request.request_id, text, now, **timing):
            self._on_listener_event(event, now)
        self._arm_deadline()
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
        self._timers_changed()
        self._submit(CallerTurn(text, latency, ended.onset_s, ended.end_s))

    # --- barge-in ------------------------------------------------------------------------------------

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
        self._cancel_current()
        self._barge_in.agent_finished(decision.now_s)
