"""`trunkline serve --config PATH`: load and validate the config once, then run the server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the server (SIP, media, tenants, call store)")
    parser.add_argument("--config", default="config/trunkline.toml", help="server/trunk config (TOML)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from trunkline.config.loader import ConfigError, load_config
    from trunkline.logs import configure_logging
    from trunkline.server import serve

    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    level = args.log_level if args.log_level != "info" else config.log.level
    configure_logging(level=level, json=args.log_json or config.log.json, log_pii=config.log.log_pii)
    try:
        import uvloop

        return uvloop.run(serve(config, os.environ))
    except ImportError:
        return asyncio.run(serve(config, os.environ))
