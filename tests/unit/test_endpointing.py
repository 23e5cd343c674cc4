"""Endpointing and speculative decoding over the pure segmenter, on a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.vad.endpointing import (
    HOLDING_PHRASES,
    Completeness,
    DecodeRequest,
    EndpointConfig,
    Endpointer,
    FinalAction,
    SpeculativeDecode,
    classify_text,
)
from trunkline.vad.listener import DecodeCancelled, ListenerEvent, TurnEnded, TurnListener, TurnTranscript
from trunkline.vad.segmenter import SilenceStarted, SpeechEnded, SpeechSegmenter

C, INC, U = Completeness.COMPLETE, Completeness.INCOMPLETE, Completeness.UNKNOWN
FRAME = 160
CFG = EndpointConfig(complete_hangover_ms=200, incomplete_hangover_ms=900, unknown_hangover_ms=700)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, U),
        ("", U),
        ("  ...  ", U),
        ("I'd like to book a table for two.", C),
        ("What time do you open?", C),
        ("Stop!", C),
        ("I'd like to book a table for.", INC),
        ("I need to change my address and", INC),
        ("I need to change my address and...", INC),
        ("So I was thinking, um.", INC),
        ("Uh", INC),
        ("My number is 555,", INC),
        ("Because", INC),
        ("Well the", INC),
        ("Tomorrow at six", U),
        ("“I want it.”", C),
        ("I think that", INC),
        ("I’m", INC),
    ],
)
def test_classify_text(text: str | None, expected: Completeness) -> None:
    assert classify_text(text) is expected


@pytest.mark.parametrize(
    ("text", "expected", "without_phrases"),
    [
        ("Is it possible to cancel my subscription without?", INC, INC),
        ("Yes, I think.", INC, C),
        ("Hmm, let me think.", INC, C),
        ("Let me see.", INC, C),
        ("I don't think.", C, C),
        ("I think so.", INC, INC),  # "so" needs a continuation on its own
        ("That's what I think about it.", C, C),
        ("I'd like to book a table for two.", C, C),
    ],
)
def test_turn_holding_text_rules(text: str, expected: Completeness, without_phrases: Completeness) -> None:
    assert classify_text(text) is expected
    assert classify_text(text, holding_phrases=()) is without_phrases


def test_custom_continuation_words() -> None:
    assert classify_text("Book it please.", frozenset({"please"})) is INC


def test_holding_phrases_are_configurable() -> None:
    assert classify_text("Yes, you know.", holding_phrases=(("you", "know"),)) is INC
    assert classify_text("Yes, I know.", holding_phrases=(("you", "know"),)) is C


@given(
    st.sampled_from(["Yes.", "I'd like to book a table.", "My card was declined.", "Okay, thanks!"]),
    st.sampled_from(["let me think", "I think", "let me see", "I mean", "um", "without"]),
    st.sampled_from([".", "?", "", "..."]),
)
def test_a_turn_holding_tail_is_never_complete(sentence: str, tail: str, stop: str) -> None:
    text = f"{sentence} {tail.capitalize()}{stop}"
    assert classify_text(text) is INC
    assert Endpointer().config.holding_phrases == HOLDING_PHRASES


def test_an_unsure_object_after_a_preposition_is_an_asr_completion() -> None:
    cfg = EndpointConfig(
        complete_hangover_ms=200, unknown_hangover_ms=800, sure_complete_confidence=0.9,
        doubtful_complete_hangover_ms=450,
    )  # fmt: skip
    ep = Endpointer(cfg)
    ep.speech_started(0.0)
    ep.silence_started(2.0)
    ep.set_text("I'd like to book a table for it.", 0.61)  # the caller paused after "for"
    assert ep.completeness is U and ep.next_deadline() == pytest.approx(2.8)
    ep.set_text("Do you have any rooms available for them?", 0.64)
    assert ep.completeness is U
    ep.set_text("I'd like to book a table for it.", 0.95)  # sure of "it": the caller said it
    assert ep.completeness is C and ep.next_deadline() == pytest.approx(2.2)
    ep.set_text("I'd like to book a table for two.", 0.61)  # no pronoun: the doubtful hangover
    assert ep.completeness is C and ep.next_deadline() == pytest.approx(2.45)
    ep.set_text("Thank you.", 0.61)  # "thank" is no preposition
    assert ep.next_deadline() == pytest.approx(2.45)
    ep.set_text("I'd like to book a table for it.", None)  # no probability: nothing to doubt
    assert ep.completeness is C


def test_the_object_rule_can_be_turned_off() -> None:
    ep = Endpointer(EndpointConfig(sure_complete_confidence=0.9, object_pronouns=frozenset()))
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    ep.set_text("I'd like to book a table for it.", 0.61)
    assert ep.completeness is C


def test_hangover_follows_text_completeness() -> None:
    for text, hangover in [(None, 0.7), ("All done.", 0.2), ("and then, um", 0.9)]:
        ep = Endpointer(CFG)
        ep.speech_started(1.0)
        ep.silence_started(2.0)
        ep.set_text(text)
        assert ep.next_deadline() == pytest.approx(2.0 + hangover)
        assert ep.poll(2.0 + hangover - 0.001) is None
        decision = ep.poll(2.0 + hangover)
        assert decision is not None
        assert decision.silence_start_s == 2.0 and not decision.max_turn
        assert not ep.in_turn


def test_text_arriving_after_the_short_hangover_ends_at_once() -> None:
    ep = Endpointer(CFG)
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    assert ep.poll(1.25) is None  # no text yet: waits 700 ms
    ep.set_text("That's all.")
    decision = ep.poll(1.25)
    assert decision is not None and decision.completeness is C


def test_speech_resumed_cancels_silence_and_text() -> None:
    ep = Endpointer(CFG)
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    ep.set_text("Done.")
    ep.speech_resumed()
    assert ep.completeness is U
    assert ep.next_deadline() == pytest.approx(30.0)  # only max turn
    ep.set_text("Done.")  # a late result while speaking is ignored
    assert ep.completeness is U
    assert ep.poll(5.0) is None


def test_max_turn_ends_mid_speech() -> None:
    ep = Endpointer(EndpointConfig(max_turn_ms=10_000))
    ep.speech_started(2.0)
    assert ep.next_deadline() == pytest.approx(12.0)
    decision = ep.poll(12.0)
    assert decision is not None and decision.max_turn and decision.silence_start_s is None


def test_no_turn_no_deadline() -> None:
    ep = Endpointer()
    ep.silence_started(1.0)  # silence outside a turn means nothing
    assert ep.next_deadline() is None
    assert ep.poll(100.0) is None


def silence(audio_end_s: float, n: int = 10) -> SilenceStarted:
    return SilenceStarted(audio_end_s, audio_end_s + 0.04, np.zeros(n, dtype=np.int16))


def ended(end_s: float) -> SpeechEnded:
    from trunkline.vad.segmenter import EndReason

    return SpeechEnded(0.0, end_s, end_s + 0.2, np.ones(20, dtype=np.int16), EndReason.ENDPOINT)


def test_speculative_result_is_reused_when_the_turn_ends() -> None:
    spec = SpeculativeDecode()
    req = spec.silence_started(silence(1.0))
    assert not req.final and req.audio_end_s == 1.0
    assert spec.result(req.request_id, "Hello there.")
    final = spec.turn_ended(ended(1.0))
    assert final.action is FinalAction.REUSE and final.text == "Hello there."
    assert spec.stats.reused == 1 and spec.stats.fresh == 0


def test_speculative_result_is_stale_after_speech_resumed() -> None:
    spec = SpeculativeDecode()
    first = spec.silence_started(silence(1.0))
    assert spec.speech_resumed() == first.request_id
    assert not spec.result(first.request_id, "stale")
    second = spec.silence_started(silence(2.0))
    assert not spec.result(first.request_id, "stale")  # a later silence does not revive it
    final = spec.turn_ended(ended(2.0))
    assert final.action is FinalAction.AWAIT and final.request_id == second.request_id
    assert not spec.result(second.request_id, "late text")  # not current any more: it is the final one
    assert spec.is_final(second.request_id)
    assert not spec.is_final(second.request_id)
    assert spec.stats.cancelled == 1 and spec.stats.awaited == 1


def test_turn_ended_mid_speech_decodes_afresh() -> None:
    spec = SpeculativeDecode()
    spec.silence_started(silence(1.0))
    spec.speech_resumed()
    final = spec.turn_ended(ended(3.0))
    assert final.action is FinalAction.DECODE
    assert final.request is not None and final.request.final
    assert final.request.audio_end_s == 3.0 and final.request.audio.size == 20
    assert spec.is_final(final.request.request_id)


# --- the composed listener on a virtual clock ---------------------------------------------------


def t(i: int) -> float:
    return (i + 1) * 0.02


@dataclass
class Run:
    """Drives a TurnListener frame by frame; an ASR stand-in answers each request after `latency_frames`."""

    listener: TurnListener
    asr: dict[int, str] = field(default_factory=dict)  # text per request, by order of request
    latency_frames: int = 5
    events: list[tuple[int, ListenerEvent]] = field(default_factory=list)
    _due: list[tuple[int, int, str]] = field(default_factory=list)
    _requests: int = 0

    def feed(self, flags: list[int], first: int = 0) -> None:
        for k, flag in enumerate(flags):
            i = first + k
            for due in [d for d in self._due if d[0] <= i]:
                self._due.remove(due)
                self._record(i, self.listener.on_transcript(due[1], due[2], t(i)))
            self._record(i, self.listener.push(np.full(FRAME, i, np.int16), bool(flag), t(i)))

    def _record(self, i: int, events: list[ListenerEvent]) -> None:
        for ev in events:
            self.events.append((i, ev))
            if isinstance(ev, DecodeRequest):
                text = self.asr.get(self._requests, "")
                self._requests += 1
                self._due.append((i + self.latency_frames, ev.request_id, text))

    def of(self, kind: type) -> list[tuple[int, ListenerEvent]]:
        return [(i, e) for i, e in self.events if isinstance(e, kind)]


def make_listener() -> TurnListener:
    return TurnListener(SpeechSegmenter(start_frames=3, stop_frames=2, pre_roll_ms=100), Endpointer(CFG))


def test_complete_text_ends_the_turn_after_the_short_hangover_and_is_reused() -> None:
    run = Run(make_listener(), asr={0: "I'd like to book a table."}, latency_frames=5)
    run.feed([1] * 50 + [0] * 60)  # speech ends at 1.00 s
    (ri, req), *_ = run.of(DecodeRequest)
    assert ri == 51 and isinstance(req, DecodeRequest) and not req.final
    (ei, turn), *_ = run.of(TurnEnded)
    assert isinstance(turn, TurnEnded)
    assert ei == 59  # 1.00 + 0.200 = 1.20 s = the `now` of frame 59, which polls before it pushes
    assert turn.now_s == pytest.approx(1.20) and turn.end_s == pytest.approx(1.0)
    assert turn.decision is not None and turn.decision.completeness is C
    transcripts = run.of(TurnTranscript)
    assert len(transcripts) == 1 and transcripts[0][0] == 59
    tr = transcripts[0][1]
    assert isinstance(tr, TurnTranscript) and tr.reused and tr.text == "I'd like to book a table."
    assert len(run.of(DecodeRequest)) == 1  # nothing decoded twice


def test_poll_at_the_deadline_is_exact() -> None:
    listener = make_listener()
    run = Run(listener, asr={0: "Done."}, latency_frames=3)
    run.feed([1] * 50 + [0] * 6)  # result delivered at frame 54 (1.10 s), deadline 1.20 s
    assert listener.next_deadline() == pytest.approx(1.2)
    events = listener.poll(1.2)
    assert any(isinstance(e, TurnEnded) for e in events)


def test_no_text_uses_the_long_hangover_and_awaits_the_running_decode() -> None:
    run = Run(make_listener(), asr={0: "and then"}, latency_frames=100)
    run.feed([1] * 50 + [0] * 150)
    (_, turn), *_ = run.of(TurnEnded)
    assert isinstance(turn, TurnEnded) and turn.decision is not None
    assert turn.now_s == pytest.approx(1.70) and turn.decision.completeness is U
    (ti, tr), *_ = run.of(TurnTranscript)
    assert ti == 151 and isinstance(tr, TurnTranscript) and not tr.reused and tr.text == "and then"
    assert tr.request_id == turn.transcript_request_id


def test_incomplete_text_waits_the_long_hangover() -> None:
    run = Run(make_listener(), asr={0: "I want to book a table for"}, latency_frames=2)
    run.feed([1] * 50 + [0] * 60)
    (_, turn), *_ = run.of(TurnEnded)
    assert isinstance(turn, TurnEnded) and turn.now_s == pytest.approx(1.90)
    assert turn.decision is not None and turn.decision.completeness is INC


def test_mid_sentence_pause_with_incomplete_text_is_not_a_turn_end() -> None:
    run = Run(
        make_listener(), asr={0: "I'd like to book a table for", 1: "for two people."}, latency_frames=5
    )
    run.feed([1] * 40 + [0] * 25 + [1] * 30 + [0] * 40)  # 500 ms pause after "for"
    cancels = run.of(DecodeCancelled)
    assert len(cancels) == 0  # the first decode finished (incomplete text) before speech resumed
    turns = run.of(TurnEnded)
    assert len(turns) == 1
    turn = turns[0][1]
    assert isinstance(turn, TurnEnded) and turn.end_s == pytest.approx(t(94))
    assert turn.now_s == pytest.approx(t(94) + 0.2)
    # no pre-roll before frame 0; the tail holds the frames received before the decision (95-103)
    assert list(turn.audio[::FRAME]) == list(range(104))


def test_resumed_speech_cancels_a_running_speculative_decode() -> None:
    run = Run(make_listener(), asr={0: "never used.", 1: "All done."}, latency_frames=20)
    run.feed([1] * 40 + [0] * 10 + [1] * 30 + [0] * 60)
    (_, cancel), *_ = run.of(DecodeCancelled)
    assert isinstance(cancel, DecodeCancelled) and cancel.request_id == 1
    transcripts = run.of(TurnTranscript)
    assert [tr.text for _, tr in transcripts if isinstance(tr, TurnTranscript)] == ["All done."]


def test_max_turn_ends_with_a_fresh_final_decode() -> None:
    listener = TurnListener(
        SpeechSegmenter(start_frames=3, pre_roll_ms=0), Endpointer(EndpointConfig(max_turn_ms=1000))
    )
    run = Run(listener, asr={0: "words words"}, latency_frames=3)
    run.feed([1] * 70)
    (_, turn), *_ = run.of(TurnEnded)
    assert isinstance(turn, TurnEnded) and turn.decision is not None and turn.decision.max_turn
    requests = run.of(DecodeRequest)
    assert len(requests) >= 1 and isinstance(requests[0][1], DecodeRequest) and requests[0][1].final
    (_, tr), *_ = run.of(TurnTranscript)
    assert isinstance(tr, TurnTranscript) and tr.text == "words words" and not tr.reused


@settings(max_examples=150, deadline=None)
@given(
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=20),
    texts=st.lists(st.sampled_from(["Done.", "and", "", "book a table for", "yes"]), max_size=30),
    latency=st.integers(0, 40),
)
def test_every_turn_gets_exactly_one_transcript_and_never_ends_too_soon(
    runs: list[tuple[bool, int]], texts: list[str], latency: int
) -> None:
    flags = [int(s) for s, n in runs for _ in range(n)] + [0] * 100
    run = Run(make_listener(), asr=dict(enumerate(texts)), latency_frames=latency)
    run.feed(flags)
    turns = [e for _, e in run.of(TurnEnded) if isinstance(e, TurnEnded)]
    transcripts = [e for _, e in run.of(TurnTranscript) if isinstance(e, TurnTranscript)]
    assert sorted(tr.transcript_request_id for tr in turns) == sorted(tr.request_id for tr in transcripts)
    for turn in turns:
        assert turn.decision is not None
        if not turn.decision.max_turn:
            assert turn.now_s >= turn.end_s + CFG.complete_hangover_ms / 1000 - 1e-9
            assert turn.now_s <= turn.end_s + CFG.incomplete_hangover_ms / 1000 + 0.02 + 1e-9
    cancelled = {e.request_id for _, e in run.of(DecodeCancelled) if isinstance(e, DecodeCancelled)}
    assert not cancelled & {tr.request_id for tr in transcripts}


def test_an_unsure_last_word_makes_complete_text_unknown() -> None:
    ep = Endpointer(CFG)  # min_complete_confidence 0.6
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    ep.set_text("My card was declined in.", 0.46)
    assert ep.completeness is U
    ep.set_text("My card was declined.", 0.9)
    assert ep.completeness is C
    ep.set_text("My card was declined and", 0.1)
    assert ep.completeness is INC
    ep.set_text("My card was declined.", None)
    assert ep.completeness is C


def test_doubtful_complete_text_gets_the_middle_hangover() -> None:
    cfg = EndpointConfig(
        complete_hangover_ms=200, unknown_hangover_ms=800, min_complete_confidence=0.5,
        sure_complete_confidence=0.9, min_complete_words=2, doubtful_complete_hangover_ms=450,
    )  # fmt: skip
    ep = Endpointer(cfg)
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    ep.set_text("I'd like to book a table.", 0.95)
    assert ep.completeness is C and ep.next_deadline() == pytest.approx(1.2)
    ep.set_text("I'd like to book a table.", 0.7)  # complete-looking, last word not sure
    assert ep.completeness is C and ep.next_deadline() == pytest.approx(1.45)
    ep.set_text("Yes.", 0.99)  # too short to trust ("Yes." before ", I think ...")
    assert ep.next_deadline() == pytest.approx(1.45)
    ep.set_text("I'd like to book a table.", None)  # no probability: only the word count counts
    assert ep.next_deadline() == pytest.approx(1.2)
    assert ep.poll(1.19) is None
    decision = ep.poll(1.2)
    assert decision is not None and decision.completeness is C


def test_speech_the_asr_did_not_transcribe_keeps_the_turn_open() -> None:
    ep = Endpointer(EndpointConfig(complete_hangover_ms=200, unknown_hangover_ms=800,
                                   max_untranscribed_ms=150))  # fmt: skip
    ep.speech_started(0.0)
    ep.silence_started(2.0)
    ep.set_text("My name is John.", 0.95, untranscribed_s=0.30)  # "and" was dropped by the ASR
    assert ep.completeness is U and ep.next_deadline() == pytest.approx(2.8)
    ep.set_text("My name is John.", 0.95, untranscribed_s=0.10)
    assert ep.completeness is C and ep.next_deadline() == pytest.approx(2.2)
    ep.set_text("My name is John and", 0.95, untranscribed_s=0.0)
    assert ep.completeness is INC


def test_listener_subtracts_the_trailing_silence_from_the_audio_after_the_last_word() -> None:
    cfg = EndpointConfig(complete_hangover_ms=200, unknown_hangover_ms=800, max_untranscribed_ms=150)
    listener = TurnListener(SpeechSegmenter(start_frames=3, stop_frames=2, pre_roll_ms=0), Endpointer(cfg))
    requests: list[DecodeRequest] = []
    for i in range(56):  # speech 0-1.0 s (frames 0..49), silence from 1.0 s, detected at 1.04 s
        for ev in listener.push(np.zeros(FRAME, np.int16), i < 50, (i + 1) * 0.02):
            if isinstance(ev, DecodeRequest):
                requests.append(ev)
    (req,) = requests
    assert req.trailing_silence_s == pytest.approx(0.04)
    # after_last_word_s = trailing silence + untranscribed speech: 0.3 s of speech without words is a
    # dropped word; 0.05 s is alignment slack
    listener.on_transcript(req.request_id, "That is all.", 1.12, 0.9, 0.04 + 0.30)
    assert listener.endpointer.completeness is U
    listener.on_transcript(req.request_id, "That is all.", 1.12, 0.9, 0.04 + 0.05)
    assert listener.endpointer.completeness is C


def test_the_wait_for_a_doubted_last_word_grows_with_the_doubt() -> None:
    """Between unsure_floor_confidence and min_complete_confidence the hangover ramps from the doubtful one
    to the unknown one: 0.49 and 0.1 are not the same evidence."""
    cfg = EndpointConfig(
        complete_hangover_ms=200, unknown_hangover_ms=800, min_complete_confidence=0.5,
        unsure_floor_confidence=0.3, sure_complete_confidence=0.9, doubtful_complete_hangover_ms=450,
    )  # fmt: skip
    ep = Endpointer(cfg)
    ep.speech_started(0.0)
    ep.silence_started(1.0)
    waits = []
    for p in (0.5, 0.49, 0.4, 0.3, 0.29, 0.1):
        ep.set_text("Can you tell me your opening hours on setter day?", p)
        waits.append(round(ep.hangover_ms))
    assert waits == [450, 468, 625, 800, 800, 800]
    assert ep.completeness is U
    ramp_off = Endpointer(replace(cfg, unsure_floor_confidence=None))
    ramp_off.speech_started(0.0)
    ramp_off.silence_started(1.0)
    ramp_off.set_text("Can you tell me your opening hours on setter day?", 0.49)
    assert ramp_off.hangover_ms == 800
    ep.set_text("My card was declined in.", 0.45, untranscribed_s=0.3)  # dropped speech: no ramp
    assert ep.hangover_ms == 800
