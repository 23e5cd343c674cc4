"""`trunkline check-config PATH`: validate a config file without starting anything."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from trunkline.config.loader import ConfigError, load_config


def add_commands(subparsers: Any) -> None:
    """Register `check-config` on the top-level `trunkline` parser."""
    parser = subparsers.add_parser("check-config", help="validate a trunkline.toml and report every problem")
    parser.add_argument("path", help="path to trunkline.toml")
    parser.set_defaults(func=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    """Exit 0 and summarise when valid; exit 1 listing each problem as `file: key: why`."""
    try:
        config = load_config(args.path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    sip = config.sip
    print(f"{args.path}: OK")
    print(f"  sip: listen {sip.listen_host}:{sip.listen_port}, advertise {sip.advertised_host}")
    media = config.media
    print(f"  rtp: {media.rtp_host} ports {media.rtp_port_min}-{media.rtp_port_max}")
    cap = config.server.max_calls
    print(f"  server: {config.server.call_handler} handler, at most {cap or 'unlimited'} calls at once")
    for trunk in config.trunks:
        target = f"{trunk.host}:{trunk.port}" if trunk.host else "inbound only"
        reg = f"register every {trunk.register_expires_s}s" if trunk.register else "no registration"
        print(
            f"  trunk {trunk.name}: {target}, {reg}, {len(trunk.dids)} DID(s), "
            f"codecs {'/'.join(trunk.codecs)}, max {trunk.max_calls} calls"
        )
    return 0
