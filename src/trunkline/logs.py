"""Structured, per-call, PII-safe logging (structlog + contextvars).

Event names are static strings ("rtp.parse_failed"); per-call context (call_id, tenant_id) is bound with
`bind_call()`. Values under sensitive keys are redacted by a processor, so a caller's number, what they said,
their DTMF digits, tool arguments and any secret never reach a log line unless PII logging is switched on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset(
    {"password", "secret", "api_key", "apikey", "token", "authorization", "proxy_authorization", "dsn"}
)
PII_KEYS = frozenset(
    {
        "caller",
        "callee",
        "from_number",
        "to_number",
        "number",
        "transcript",
        "text",
        "digits",
        "digit",
        "arguments",
        "tool_arguments",
        "tool_result",
        "heard_text",
    }
)
REDACTED = "[redacted]"


class Redactor:
    """structlog processor: masks secrets always and PII unless `log_pii` is on."""

    def __init__(self, log_pii: bool = False, extra_keys: Iterable[str] = ()) -> None:
        keys = set(SECRET_KEYS) | set(extra_keys)
        if not log_pii:
            keys |= PII_KEYS
        self._keys = frozenset(keys)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in event.keys() & self._keys:
            event[key] = REDACTED
        return event


def configure_logging(level: str = "info", json: bool = False, log_pii: bool = False) -> None:
    """Set up structlog once for the process; safe to call again (tests, CLI subcommands)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(log_pii=log_pii),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A bound structlog logger; `name` ends up as the `logger` key."""
    if name:
        initial["logger"] = name
    return _LazyLogger(initial)


class _LazyLogger:
    """Resolves the structlog configuration at each call, not at import.

    Modules create their loggers at import time, before configure_logging() has run; binding eagerly then
    would freeze structlog's defaults (stdout, no redaction) into them. Logging is never on the per-packet
    path, so the extra bind per line is cheap enough.
    """

    __slots__ = ("_initial",)

    def __init__(self, initial: dict[str, Any]) -> None:
        self._initial = initial

    def bind(self, **values: Any) -> _LazyLogger:
        return _LazyLogger({**self._initial, **values})

    def __getattr__(self, method: str) -> Any:
        return getattr(structlog.get_logger().bind(**self._initial), method)


def bind_call(**values: Any) -> None:
    """Bind per-call context (call_id, tenant_id, ...) for the current task and its children."""
    structlog.contextvars.bind_contextvars(**values)
