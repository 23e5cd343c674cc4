"""Listening and turn-taking cores (pure): VAD, speech segmenter, endpointing with speculative decoding,
barge-in policy and call-behaviour timers."""

from trunkline.vad.bargein import BargeInAction, BargeInDecision, BargeInPolicy, WordTiming, heard_text
from trunkline.vad.endpointing import Completeness, EndpointConfig, Endpointer, SpeculativeDecode
from trunkline.vad.listener import TurnEnded, TurnListener, TurnTranscript
from trunkline.vad.segmenter import SpeechSegmenter
from trunkline.vad.turns import CallTimers, CallTimersConfig, HangUp, Say
from trunkline.vad.vad import VoiceActivityDetector, WebRtcVad

__all__ = [
    "BargeInAction",
    "BargeInDecision",
    "BargeInPolicy",
    "CallTimers",
    "CallTimersConfig",
    "Completeness",
    "EndpointConfig",
    "Endpointer",
    "HangUp",
    "Say",
    "SpeculativeDecode",
    "SpeechSegmenter",
    "TurnEnded",
    "TurnListener",
    "TurnTranscript",
    "VoiceActivityDetector",
    "WebRtcVad",
    "WordTiming",
    "heard_text",
]
