"""Local model speed (issue 6, metric 7): ASR real-time factor and CPU per caller turn, TTS first audio.

Models exactly as the agent builds them (pipeline/handler.py): LocalWhisper(cpu_threads=2, fitted_window=True)
on a 1-worker pool; LocalPiper(output_rate_hz=8000) with its defaults (2 onnxruntime threads, no spinning,
each sentence streamed in chunks of latent frames) on a 2-worker pool. Thread counts are pinned by those
settings.
* ASR inputs: fixed sentences spoken by piper (joe, noise scales 0, length scale fitted so the speech fits),
  8 kHz, placed 0.2 s into exactly 2.0 s / 5.0 s of audio with a -60 dBFS seeded noise floor and a G.711
  µ-law round trip. RTF = transcribe() wall time / audio duration. CPU-s = this process's CPU time
  (all threads) across one transcribe() of a 2 s utterance, nothing else running in the process; also
  with word_timestamps=True (what the endpointer's last-word signals need), 2 runs.
  Word accuracy = 1 - WER against the spoken text (lower case, digits as words left as whisper wrote them).
* TTS first audio: stream(text) called on the event loop → first AudioChunk received there, for fixed short
  sentences (each one whole clause, 1-6 words); every stream is consumed to the end before the next starts.
  CPU-s per second of audio = this process's CPU time across the stream / audio made. Underrun = the
  longest wait for a chunk if playback started at the first chunk and ran in real time (0 = no gap).
  Comparator: the same voice and threads making whole sentences (streaming=False), same texts, same run.
Warm-up: models loaded and one untimed pass. Full: 5 runs over each ASR set (30 ASR 2 s, 20 ASR 5 s samples)
and 10 over the TTS set (100 samples; the comparator 3 runs); quick: 1 run (numbers not quotable). Audio
cached in bench/.cache/models_speed/. Run: python -m bench.models_speed [--quick] [--tts-only]
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Metric

CACHE = Path(__file__).resolve().parent / ".cache" / "models_speed"
SEED = 607
RATE_HZ = 8000
LEAD_S = 0.2
ASR_2S = [
    "I'd like to book a cleaning.",
    "Can I speak to a manager?",
    "What time do you open tomorrow?",
    "I need to cancel my appointment.",
    "Yes, Tuesday at ten works.",
    "My card was declined.",
]
ASR_5S = [
    "Hi, I'd like to book a cleaning on Tuesday at ten in the morning, if you have anything open.",
    "I ordered a blue jacket last week but you sent me a red one, and I want to return it.",
    "Could you send me a copy of the invoice from last month to my email address, please?",
    "My internet keeps dropping out every evening, and I already restarted the router twice.",
]
TTS_SHORT = [
    "Sure, one moment.",
    "Okay, let me check that.",
    "Yes, that works.",
    "Thanks for calling.",
    "Of course.",
    "Got it, thank you.",
    "No problem.",
    "Sure, I can help with that.",
    "Great, you're all set.",
    "One moment, please.",
]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _summary(name: str, values: list[float], digits: int = 1) -> dict[str, Any]:
    return {
        f"{name}_p50": _pct(values, 50),
        f"{name}_p95": _pct(values, 95),
        f"{name}_p99": _pct(values, 99),
        f"{name}_samples": [round(v, digits) for v in values],
    }


_NUMBERS = dict(enumerate([
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]))  # fmt: skip


def _words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in words]


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - word error rate (edit distance over words / reference words), floored at 0."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return max(0.0, 1.0 - row[-1] / max(1, len(ref)))


def utterance(text: str, seconds: float) -> np.ndarray:
    """`text` spoken by piper at 8 kHz inside exactly `seconds` of telephone audio (cached)."""
    key = hashlib.sha1(f"joe|ns0|{text}|{seconds}|{SEED}".encode()).hexdigest()[:20]
    path = CACHE / f"{key}.npy"
    if path.exists():
        return np.load(path)
    import soxr
    from piper import SynthesisConfig

    from trunkline.codecs.g711 import ulaw_decode, ulaw_encode
    from trunkline.pipeline.models import PiperSpec, piper_voice, piper_voice_paths

    model, config = piper_voice_paths()
    voice = piper_voice(PiperSpec(str(model), str(config)))
    budget = seconds - LEAD_S - 0.15
    scale, speech = 1.0, np.zeros(0, np.int16)
    for _ in range(4):
        cfg = SynthesisConfig(length_scale=scale, noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
        pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text, cfg)])
        speech = soxr.resample(pcm, int(voice.config.sample_rate), RATE_HZ, quality="HQ")
        loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 0.02 * np.abs(speech).max())
        speech = speech[loud[0] : loud[-1] + 1]
        if len(speech) <= budget * RATE_HZ:
            break
        scale *= 0.97 * budget * RATE_HZ / len(speech)
    out = np.zeros(int(seconds * RATE_HZ), np.float64)
    start = int(LEAD_S * RATE_HZ)
    out[start : start + len(speech)] = speech[: len(out) - start]
    seed = int(key[:8], 16) ^ SEED
    out += np.random.default_rng(seed).standard_normal(len(out)) * 32768 * 10 ** (-60 / 20)
    audio = ulaw_decode(ulaw_encode(np.clip(out, -32768, 32767).astype(np.int16)))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


async def _asr_pass(whisper: Any, clips: list[tuple[str, np.ndarray]], out: dict[str, list[float]]) -> None:
    for text, audio in clips:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        transcript = await whisper.transcribe(audio, RATE_HZ)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        out["rtf"].append(wall / (len(audio) / RATE_HZ))
        out["cpu_s"].append(cpu)
        out["accuracy"].append(word_accuracy(text, transcript.text))


async def _tts_pass(piper: Any, texts: list[str], out: dict[str, list[float]]) -> None:
    for text in texts:
        cpu0, start = time.process_time(), time.perf_counter()
        arrivals: list[float] = []
        audio_ms: list[float] = []
        async for chunk in piper.stream(text):
            arrivals.append(time.perf_counter() - start)
            audio_ms.append(chunk.duration_ms)
        assert arrivals, f"no audio for {text!r}"
        cpu = time.process_time() - cpu0
        due = arrivals[0] + np.concatenate([[0.0], np.cumsum(audio_ms[:-1]) / 1000])
        out["first_ms"].append(arrivals[0] * 1000)
        out["total_ms"].append((time.perf_counter() - start) * 1000)
        out["cpu_s_per_audio_s"].append(cpu / (sum(audio_ms) / 1000))
        out["underrun_ms"].append(max(0.0, float(np.max(np.array(arrivals) - due))) * 1000)


def _tts_lists() -> dict[str, list[float]]:
    return {"first_ms": [], "total_ms": [], "cpu_s_per_audio_s": [], "underrun_ms": []}


def _tts_summary(out: dict[str, list[float]], suffix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result.update(_summary(f"tts_first_audio_ms{suffix}", out["first_ms"]))
    result.update(_summary(f"tts_total_ms{suffix}", out["total_ms"]))
    result.update(_summary(f"tts_cpu_s_per_audio_s{suffix}", out["cpu_s_per_audio_s"], 3))
    result.update(_summary(f"tts_underrun_ms{suffix}", out["underrun_ms"]))
    return result


async def _measure_tts(runs: int) -> dict[str, Any]:
    """TTS only: the streaming LocalPiper vs whole sentences, interleaved run by run."""
    from trunkline.pipeline.models import BoundedPool
    from trunkline.pipeline.tts import LocalPiper

    tts_pool = BoundedPool("tts", 2, 16)
    try:
        piper = LocalPiper(tts_pool, output_rate_hz=RATE_HZ)  # as AgentCalls._tts builds it
        before = LocalPiper(tts_pool, output_rate_hz=RATE_HZ, streaming=False)
        await asyncio.gather(*(asyncio.to_thread(m.preload) for m in (piper, before)))
        if not piper.streams:
            return {"error": "piper voice could not be split for streaming (see log)"}
        await _tts_pass(piper, TTS_SHORT[:3], _tts_lists())  # warm-up, untimed
        await _tts_pass(before, TTS_SHORT[:2], _tts_lists())
        now, whole = _tts_lists(), _tts_lists()
        for k in range(runs):
            await _tts_pass(piper, TTS_SHORT, now)
            if k < max(1, runs * 3 // 10):  # the comparator needs fewer samples
                await _tts_pass(before, TTS_SHORT, whole)
        return _tts_summary(now, "") | _tts_summary(whole, "_before")
    finally:
        tts_pool.shutdown()


async def _measure(runs: int) -> dict[str, Any]:
    from trunkline.pipeline.asr import LocalWhisper
    from trunkline.pipeline.models import BoundedPool

    asr_pool = BoundedPool("asr", 1, 8)
    try:
        whisper = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True)  # as AgentCalls builds it
        timed = LocalWhisper(asr_pool, cpu_threads=2, fitted_window=True, word_timestamps=True)
        await asyncio.to_thread(whisper.preload)
        clips2 = [(t, utterance(t, 2.0)) for t in ASR_2S]
        clips5 = [(t, utterance(t, 5.0)) for t in ASR_5S]
        scratch: dict[str, list[float]] = {"rtf": [], "cpu_s": [], "accuracy": []}
        await _asr_pass(whisper, clips2[:2] + clips5[:1], scratch)  # warm-up, untimed
        a2: dict[str, list[float]] = {"rtf": [], "cpu_s": [], "accuracy": []}
        a5: dict[str, list[float]] = {"rtf": [], "cpu_s": [], "accuracy": []}
        a2w: dict[str, list[float]] = {"rtf": [], "cpu_s": [], "accuracy": []}
        for k in range(runs):
            await _asr_pass(whisper, clips2, a2)
            await _asr_pass(whisper, clips5, a5)
            if k < 2:  # the comparator needs fewer samples
                await _asr_pass(timed, clips2, a2w)
        result: dict[str, Any] = {}
        result.update(_summary("asr_rtf_2s", a2["rtf"], 3))
        result.update(_summary("asr_rtf_5s", a5["rtf"], 3))
        result.update(_summary("asr_cpu_s_2s", a2["cpu_s"], 3))
        result.update(_summary("asr_cpu_s_5s", a5["cpu_s"], 3))
        result.update(_summary("asr_cpu_s_2s_word_timestamps", a2w["cpu_s"], 3))
        result["asr_word_accuracy_2s"] = round(float(np.mean(a2["accuracy"])), 3)
        result["asr_word_accuracy_5s"] = round(float(np.mean(a5["accuracy"])), 3)
        result["asr_full_window_fallbacks"] = whisper.full_window_fallbacks
    finally:
        asr_pool.shutdown()
    result.update(await _measure_tts(runs * 2))
    return result


def run(quick: bool = False, tts_only: bool = False) -> dict[str, Any]:
    """ASR RTF (2 s, 5 s), ASR CPU-s per 2 s utterance, TTS first audio; full ~60-90 s, quick ~20 s."""
    runs = 1 if quick else 5
    started = time.monotonic()
    load_before = os.getloadavg()
    result = asyncio.run(_measure_tts(runs * 2) if tts_only else _measure(runs))
    result["how"] = (__doc__ or "").split("\n")[0]
    result["runs"] = runs
    result["quick"] = quick
    result["loadavg_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    result["cores"] = os.cpu_count()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def metrics(result: dict[str, Any]) -> list[Metric]:
    """Rows for the report: TTS first audio p95 (≤ 60 ms), ASR CPU per 2 s turn (≤ 0.6), ASR RTF guards."""
    how = (__doc__ or "").strip()
    load = result.get("loadavg_1m_before_after")
    note = f"{how}\n\nruns={result.get('runs')}, load average (1 min) before/after: {load}"
    rows = [
        ("tts_first_audio_p95_ms", "TTS first audio, short sentence (p95)", "ms", "tts_first_audio_ms_p95",
         60.0, "whole sentence per piper call (before streaming)", "tts_first_audio_ms_before_p95"),
        ("tts_cpu_s_per_audio_s", "TTS CPU per second of audio (p50)", "CPU-s", "tts_cpu_s_per_audio_s_p50",
         0.35, "whole sentence per piper call", "tts_cpu_s_per_audio_s_before_p50"),
        ("tts_underrun_p95_ms", "TTS playback gap waiting for a chunk (p95)", "ms", "tts_underrun_ms_p95",
         20.0, "whole sentence per piper call", "tts_underrun_ms_before_p95"),
        ("asr_cpu_s_per_2s_turn", "ASR CPU per 2 s utterance (p95)", "CPU-s", "asr_cpu_s_2s_p95",
         0.6, "", None),
        ("asr_rtf_2s_p95", "ASR real-time factor, 2 s utterance (p95)", "×", "asr_rtf_2s_p95",
         0.25, "", None),
        ("asr_rtf_5s_p95", "ASR real-time factor, 5 s utterance (p95)", "×", "asr_rtf_5s_p95",
         0.15, "", None),
    ]  # fmt: skip
    out = []
    for mid, title, unit, key, target, comp, comp_key in rows:
        value = result.get(key)
        out.append(
            Metric(
                mid, title, unit, value, f"≤ {target:g} {unit}", None if value is None else value <= target,
                comparator=comp, comparator_value=result.get(comp_key) if comp_key else None,
                how=note, error=str(result.get("error", "")),
            )
        )  # fmt: skip
    return out


if __name__ == "__main__":
    import json

    from trunkline.logs import configure_logging

    configure_logging()  # log lines to stderr: stdout is the JSON

    res = run(quick="--quick" in sys.argv[1:], tts_only="--tts-only" in sys.argv[1:])
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_samples")}, indent=2))
