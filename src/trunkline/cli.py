"""The `trunkline` command: serve, and the operator subcommands each area contributes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trunkline import __version__

# Each module exposes add_commands(subparsers); a command's func(args) returns the exit status.
COMMAND_MODULES = (
    "trunkline.server_cli",
    "trunkline.config.cli",
    "trunkline.sip.cli",
    "trunkline.tenants.cli",
    "trunkline.store.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trunkline",
        description="Telephony-first voice-agent server: SIP trunks in, our own RTP media, "
        "an AI agent per call.",
    )
    parser.add_argument("--version", action="version", version=f"trunkline {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of console text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from trunkline.logs import configure_logging

    configure_logging(level=args.log_level, json=args.log_json)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
