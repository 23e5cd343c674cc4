"""`trunkline serve --config PATH`: load and validate the config once, then run the server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def add_commands(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the server (SIP, media, tenants, call store)")
    parser.add_argument("--config", default="config/trunkline.toml", help="server/trunk config (TOML)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from trunkline.config.loader import ConfigError, load_config
    from trunkline.logs import configure_logging
    from trunkline.server import StartupError, serve

    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    level = args.log_level if args.log_level != "info" else config.log.level
    configure_logging(level=level, json=args.log_json or config.log.json, log_pii=config.log.log_pii)
    try:
        return _event_loop_runner()(serve(config, os.environ))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop when installed (several times asyncio's UDP receive rate), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
