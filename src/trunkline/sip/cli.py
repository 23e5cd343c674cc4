"""`trunkline call NUMBER --trunk NAME` (dial out through a trunk) and `trunkline status` (registrations)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import sys
import time
from typing import Any

from trunkline.config.loader import ConfigError, load_config
from trunkline.config.model import Config
from trunkline.sip.status_file import status_path

DEFAULT_CONFIG = "config/trunkline.toml"
EXIT_FOR_OUTCOME = {"answered": 0, "busy": 3, "no_answer": 4}


def add_commands(subparsers: Any) -> None:
    """Register `call` and `status` on the top-level `trunkline` parser."""
    call = subparsers.add_parser("call", help="dial a number through a trunk and report the outcome")
    call.add_argument("number", help="number (E.164) or user part to dial")
    call.add_argument("--trunk", required=True, help="trunk name from the config")
    call.add_argument("--config", default=DEFAULT_CONFIG)
    call.add_argument("--duration", type=float, default=5.0, help="seconds to stay on the call once answered")
    call.add_argument("--port", type=int, default=0, help="local SIP port (default: any free port)")
    call.set_defaults(func=run_call)
    status = subparsers.add_parser("status", help="registration state and calls of the running server")
    status.add_argument("--config", default=DEFAULT_CONFIG)
    status.set_defaults(func=run_status)


def _load(path: str, require_secrets: bool = True) -> Config | None:
    try:
        return load_config(path, os.environ, require_secrets)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return None


def run_status(args: argparse.Namespace) -> int:
    config = _load(args.config, require_secrets=False)
    if config is None:
        return 1
    path = status_path(config)
    try:
        snap = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"no status at {path}: is the server running?", file=sys.stderr)
        return 1
    age = time.time() - float(snap.get("written_at", 0))
    print(f"status written {age:.1f}s ago{' (stale)' if age > 5 else ''}; draining: {snap.get('draining')}")
    cap = snap.get("max_calls")
    total = sum(snap.get("active_calls", {}).values())
    print(f"  calls: {total} of at most {cap if cap is not None else 'unlimited'} at once")
    for name, reg in sorted(snap.get("registrations", {}).items()):
        print(f"  trunk {name}: {reg['state']} {reg.get('detail', '')} expires={reg.get('expires_s')}")
    for name, count in sorted(snap.get("active_calls", {}).items()):
        print(f"  trunk {name}: {count} call(s)")
    for call in snap.get("calls", []):
        print(f"  call {call['call_id']} {call['direction']} codec={call['codec']} hold={call['on_hold']}")
    return 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dialer_config(config: Config, port: int) -> Config:
    """The server's config adapted for a one-shot dialler: its own SIP port, no REGISTER (the server's binding
    must not be replaced)."""
    sip = dataclasses.replace(config.sip, listen_port=port or _free_port(config.sip.listen_host))
    trunks = tuple(dataclasses.replace(t, register=False) for t in config.trunks)
    return dataclasses.replace(config, sip=sip, trunks=trunks)


async def place_call(config: Config, number: str, trunk: str, duration_s: float) -> dict[str, Any]:
    """Dial, play the greeting for `duration_s` once answered, hang up; the outcome as a dict."""
    from trunkline.mediaserver.engine import MediaEngine
    from trunkline.sip.demo_call import ensure_greeting, greeting_path, read_wav
    from trunkline.sip.service import SipService

    pcm, rate = read_wav(ensure_greeting(greeting_path(config)))
    engine = MediaEngine(config.media.rtp_host, config.media.rtp_port_min, config.media.rtp_port_max)
    await engine.start()
    service = SipService()

    async def talk(call: Any) -> None:
        call.leg.play("greeting", pcm, rate, final=True)
        call.leg.end_utterance("greeting")
        await asyncio.wait([asyncio.ensure_future(call.ended.wait())], timeout=duration_s)

    await service.start(asyncio.get_running_loop(), config, engine, lambda call: talk(call))
    started = time.monotonic()
    try:
        result = await service.dial(number, trunk, on_call=talk)
        if result.outcome == "answered":
            await result.call.ended.wait()
        report = {
            "outcome": result.outcome,
            "status": result.status,
            "codec": result.call.media.codec if result.call.media else None,
            "end_reason": result.call.end_reason,
            "seconds": round(time.monotonic() - started, 2),
        }
    finally:
        await service.aclose()
        await engine.aclose()
    return report


def run_call(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    try:
        trunk = config.trunk(args.trunk)
    except KeyError:
        print(f"{args.config}: no trunk named {args.trunk!r}", file=sys.stderr)
        return 1
    if trunk.host is None:
        print(f"{args.config}: trunk {args.trunk!r} has no host to dial through", file=sys.stderr)
        return 1
    report = asyncio.run(place_call(dialer_config(config, args.port), args.number, args.trunk, args.duration))
    print(json.dumps(report))
    return EXIT_FOR_OUTCOME.get(str(report["outcome"]), 2)
