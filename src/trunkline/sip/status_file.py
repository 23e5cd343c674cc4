"""The status file `trunkline status` reads: the running server rewrites it every second (atomically)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trunkline.config.model import Config

WRITE_INTERVAL_S = 1.0


def status_path(config: Config) -> Path:
    return config.server.state_dir / "sip-status.json"


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Replace the file with `snapshot` (plus when it was written); an unwritable directory is ignored."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**snapshot, "written_at": time.time()}, indent=2))
        tmp.replace(path)


async def write_status_forever(path: Path, snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Until cancelled: take a snapshot and write it, every `WRITE_INTERVAL_S`."""
    while True:
        with contextlib.suppress(Exception):
            write_status(path, await snapshot())
        await asyncio.sleep(WRITE_INTERVAL_S)
