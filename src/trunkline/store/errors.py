"""Typed errors of the call store; each says whether retrying can help."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for call-store errors."""

    retryable = False


class StoreUnavailable(StoreError):
    """Postgres cannot be reached or refused service for now; records are spooled and retried."""

    retryable = True


class RecordRejected(StoreError):
    """Postgres refused a record for its content (constraint, bad value); retrying cannot help."""


class RecordDecodeError(StoreError):
    """A spooled line is not a valid record (corrupt or written by an incompatible version)."""


class MigrationError(StoreError):
    """The schema cannot be brought up to date (edited migration, newer database, missing rights)."""


class StoreConfigError(StoreError):
    """The store is set up unsafely or incompletely (e.g. the app role can bypass row-level security)."""
