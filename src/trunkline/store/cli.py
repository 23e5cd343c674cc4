"""`trunkline calls list` / `trunkline calls show CALL_ID`: a tenant's calls and transcripts.

Reads go through the app role with the tenant set, exactly like the server, so a tenant sees only its calls.
The database is the one the server uses: `--database-url` or $DATABASE_URL (app-role DSN), otherwise the
embedded server under `--state-dir` (joined if the server is running, started for the command otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from trunkline.store.embedded import EmbeddedPostgres
from trunkline.store.errors import StoreError
from trunkline.store.postgres import PostgresCallReader, create_app_pool
from trunkline.store.records import LATENCY_STAGES, CallDetail, MediaQuality, StoredCall
from trunkline.store.runtime import StoreSettings, run_migrations


def add_commands(subparsers: Any) -> None:
    """Register `calls list` and `calls show` on the top-level subparsers; each sets `func(args) -> int`."""
    calls = subparsers.add_parser("calls", help="list a tenant's calls and print transcripts")
    sub = calls.add_subparsers(dest="calls_command", required=True)
    p_list = sub.add_parser("list", help="a tenant's calls, newest first")
    _common(p_list)
    p_list.add_argument("--limit", type=int, default=20, help="at most this many calls (default 20)")
    p_list.set_defaults(func=cmd_calls_list)
    p_show = sub.add_parser("show", help="one call: details, transcript, tool calls, usage")
    p_show.add_argument("call_id", help="the call's id (UUID)")
    _common(p_show)
    p_show.set_defaults(func=cmd_calls_show)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True, help="tenant id")
    p.add_argument(
        "--database-url", default=None, help="app-role DSN of an external Postgres (default: $DATABASE_URL)"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var"),
        help="state dir of the embedded database (default var/)",
    )


@asynccontextmanager
async def _reader(args: argparse.Namespace) -> AsyncIterator[PostgresCallReader]:
    settings = StoreSettings.from_env(os.environ, state_dir=args.state_dir)
    dsn = args.database_url or settings.database_url
    embedded = None
    if not dsn:
        data_dir = settings.embedded_data_dir
        if not (data_dir / "PG_VERSION").exists():
            raise StoreError(
                f"no embedded database in {data_dir} (run the server once, or pass --database-url)"
            )
        embedded = EmbeddedPostgres(data_dir)
        dsns = await embedded.start()
        await run_migrations(dsns.admin)
        dsn = dsns.app
    try:
        pool = await create_app_pool(dsn, max_size=1)
        try:
            yield PostgresCallReader(pool)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            embedded.close()


def cmd_calls_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return asyncio.run(_list(args, out or sys.stdout))


def cmd_calls_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return asyncio.run(_show(args, out or sys.stdout))


async def _list(args: argparse.Namespace, out: TextIO) -> int:
    try:
        async with _reader(args) as reader:
            calls = await reader.list_calls(args.tenant, args.limit)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out.write(format_call_list(calls))
    return 0


async def _show(args: argparse.Namespace, out: TextIO) -> int:
    try:
        call_id = UUID(args.call_id)
    except ValueError:
        print(f"error: not a call id: {args.call_id!r}", file=sys.stderr)
        return 2
    try:
        async with _reader(args) as reader:
            detail = await reader.get_call(args.tenant, call_id)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if detail is None:
        print(f"error: no call {call_id} for tenant {args.tenant}", file=sys.stderr)
        return 1
    out.write(format_call_detail(detail))
    return 0


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_call_list(calls: list[StoredCall]) -> str:
    """A fixed-width table, one call per line."""
    header = f"{'CALL ID':36}  {'STARTED':19}  {'DIR':8}  {'FROM':16}  {'TO':16}  {'SECONDS':>7}  TURNS  END"
    lines = [header]
    for c in calls:
        secs = "-" if c.duration_s is None else f"{c.duration_s:.0f}"
        lines.append(
            f"{c.call_id!s:36}  {_ts(c.started_at):19}  {c.direction.value:8}  {c.from_number:16}  "
            f"{c.to_number:16}  {secs:>7}  {c.turn_count:5}  {c.end_reason or '-'}"
        )
    if not calls:
        lines.append("(no calls)")
    return "\n".join(lines) + "\n"


def _offset(call: StoredCall, at: datetime) -> str:
    seconds = max(0.0, (at - call.started_at).total_seconds())
    return f"+{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def _far_end_lines(m: MediaQuality) -> list[str]:
    """The far end's RTCP view of our stream, with only the values it reported; no line without any."""
    parts = []
    if m.far_end_loss_pct is not None:
        parts.append(f"loss {m.far_end_loss_pct:.1f} %")
    if m.far_end_jitter_ms is not None:
        parts.append(f"jitter {m.far_end_jitter_ms:.1f} ms")
    if m.round_trip_ms is not None:
        parts.append(f"round trip {m.round_trip_ms:.0f} ms")
    return [f"  far end     {', '.join(parts)}"] if parts else []


def format_call_detail(detail: CallDetail) -> str:
    """Call facts, media quality, usage, then the transcript with tool calls in time order."""
    c, m, u = detail.call, detail.call.media, detail.usage
    duration = "" if c.duration_s is None else f" (duration {c.duration_s:.1f} s)"
    lines = [
        f"call {c.call_id}  tenant {c.tenant_id}",
        f"  direction   {c.direction.value}   from {c.from_number or '-'}   to {c.to_number or '-'}",
        f"  started     {_ts(c.started_at)}   answered {_ts(c.answered_at)}   "
        f"ended {_ts(c.ended_at)}{duration}",
        f"  end reason  {c.end_reason or '-'}   codec {c.codec or '-'}",
        f"  media       rx {m.packets_received} / tx {m.packets_sent} packets, lost {m.packets_lost}, "
        f"late {m.packets_late}, discarded {m.packets_discarded}, concealed {m.concealed_frames} frames, "
        f"jitter {m.jitter_mean_ms:.1f} ms mean / {m.jitter_max_ms:.1f} ms max",
        *_far_end_lines(m),
        f"  usage       LLM tokens {u.llm_tokens_in} in / {u.llm_tokens_out} out, ASR {u.asr_seconds:.1f} s, "
        f"TTS {u.tts_characters} chars / {u.tts_seconds:.1f} s, tool calls {u.tool_calls}, "
        f"{u.minutes:.2f} min",
        "",
        "transcript",
    ]
    events: list[tuple[datetime, int, list[str]]] = []
    for t in detail.turns:
        text = [f"  [{_offset(c, t.started_at)}] {t.speaker.value}: {t.text}"]
        stages = [f"{s} {t.latency_ms[s]:.0f}" for s in LATENCY_STAGES if s in t.latency_ms]
        if stages:
            text.append(f"      latency ms: {', '.join(stages)}")
        if t.interrupted:
            text.append(f"      interrupted; heard: {t.heard_text or ''!r}")
        events.append((t.started_at, 0, text))
    for tc in detail.tool_calls:
        args = json.dumps(tc.arguments, ensure_ascii=False, sort_keys=True)
        events.append(
            (tc.started_at, 1, [f"  [{_offset(c, tc.started_at)}] tool {tc.name}({args}) -> "
                                f"{tc.status.value} in {tc.duration_ms:.0f} ms"])
        )  # fmt: skip
    for _, _, text in sorted(events, key=lambda e: (e[0], e[1])):
        lines.extend(text)
    if not events:
        lines.append("  (no turns)")
    return "\n".join(lines) + "\n"
