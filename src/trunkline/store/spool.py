"""Append-only, segmented JSON-lines spool that keeps store records while Postgres is unreachable.

Plain synchronous file code (the asyncio writer calls it from a worker thread). Layout in `directory`:
`seg-000000000001.jsonl`, ... in write order, plus `rejected.jsonl` for records Postgres refused.
- `append` writes whole lines, flushes and fsyncs: one fsync per call, and the writer appends at least
  once per turn record it spools.
- A segment is never appended to after a restart or a write error: a torn tail from a crash stays the last
  bytes of a sealed segment and is ignored when read (it was never acknowledged as durable).
- A segment is removed only after its records are committed, so a crash mid-replay replays it again; replays
  are idempotent because every record carries its own id.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trunkline.store.errors import RecordDecodeError
from trunkline.store.records import StoreRecord, record_from_json, record_to_json

SEGMENT_SUFFIX = ".jsonl"
REJECTED_FILE = "rejected.jsonl"
_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.jsonl$")


def segment_name(index: int) -> str:
    return f"seg-{index:012d}{SEGMENT_SUFFIX}"


def parse_segment_index(name: str) -> int | None:
    """The index of a segment file name, or None if `name` is not a segment."""
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None


def encode_lines(records: Iterable[StoreRecord]) -> bytes:
    """One compact ASCII JSON object per record, each ending in a newline."""
    return b"".join(
        json.dumps(record_to_json(r), separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"
        for r in records
    )


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """Records of a segment in order, the complete lines that were not records, and any torn tail."""

    records: tuple[StoreRecord, ...]
    bad_lines: tuple[bytes, ...]
    torn_tail: bytes


def decode_lines(data: bytes) -> DecodedSegment:
    """Parse spool bytes; never raises (bad lines are returned, not fatal)."""
    body, sep, tail = data.rpartition(b"\n")
    lines = body.split(b"\n") if sep else []
    records: list[StoreRecord] = []
    bad: list[bytes] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(record_from_json(json.loads(line)))
        except (ValueError, RecordDecodeError):
            bad.append(line)
    return DecodedSegment(tuple(records), tuple(bad), tail)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory: append to the newest segment, read and remove the oldest ones."""

    def __init__(self, directory: Path, *, segment_max_bytes: int = 4 << 20) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self._segments: list[int] = []
        self._next_index = 1
        self._file: BinaryIO | None = None
        self._opened = False

    def open(self) -> None:
        """Create the directory if needed and find existing segments (appends go to a new one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = (parse_segment_index(p.name) for p in self.directory.iterdir())
        self._segments = sorted(i for i in found if i is not None)
        self._next_index = (self._segments[-1] + 1) if self._segments else 1
        self._opened = True

    def _require_open(self) -> None:
        if not self._opened:
            raise RuntimeError("Spool.open() was not called")

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def is_empty(self) -> bool:
        return not self._segments

    def segments(self) -> list[Path]:
        """Segment paths, oldest first (including the one being appended to, if any)."""
        return [self.directory / segment_name(i) for i in self._segments]

    def append(self, records: Sequence[StoreRecord], *, sync: bool = True) -> None:
        """Append records as lines and make them durable (fsync) before returning."""
        self._require_open()
        if not records:
            return
        data = encode_lines(records)
        f = self._file or self._new_segment()
        try:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        except OSError:
            self.seal()  # never append after a possibly partial line
            raise
        if f.tell() >= self.segment_max_bytes:
            self.seal()

    def _new_segment(self) -> BinaryIO:
        index = self._next_index
        path = self.directory / segment_name(index)
        f = open(path, "xb")  # noqa: SIM115 - kept open across appends, closed by seal()
        self._next_index += 1
        self._segments.append(index)
        _fsync_dir(self.directory)
        self._file = f
        return f

    def seal(self) -> None:
        """Close the current segment; the next append starts a new one."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def read(self, path: Path) -> DecodedSegment:
        return decode_lines(path.read_bytes())

    def remove(self, path: Path) -> None:
        """Delete a replayed (committed) segment; the current segment is sealed first if it is this one."""
        index = parse_segment_index(path.name)
        if index is None or index not in self._segments:
            raise ValueError(f"not a segment of this spool: {path.name}")
        if self._file is not None and index == self._segments[-1]:
            self.seal()
        path.unlink(missing_ok=True)
        self._segments.remove(index)
        _fsync_dir(self.directory)

    def reject(self, lines: Iterable[bytes]) -> int:
        """Append lines Postgres refused (or that did not decode) to rejected.jsonl; returns how many."""
        self._require_open()
        data = [line.rstrip(b"\n") + b"\n" for line in lines]
        if not data:
            return 0
        with open(self.directory / REJECTED_FILE, "ab") as f:
            f.write(b"".join(data))
            f.flush()
            os.fsync(f.fileno())
        return len(data)

    def close(self) -> None:
        self.seal()
