"""In-memory CallStore: for component tests of the pipeline and for running without persistence.

Same semantics as the Postgres store where it matters: idempotent by record id, tenant-scoped reads,
turns ordered by `seq`, usage summed per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from uuid import UUID

from trunkline.store.records import (
    CallDetail,
    CallEnd,
    CallRecord,
    MediaQuality,
    StoredCall,
    StoreRecord,
    TenantLike,
    ToolCallRecord,
    TurnRecord,
    UsageRecord,
    sum_usage,
)


class MemoryCallStore:
    """Keeps everything in dicts; `records` lists every record accepted, in order."""

    def __init__(self) -> None:
        self.records: list[StoreRecord] = []
        self.tenants: dict[str, str] = {}
        self._calls: dict[UUID, StoredCall] = {}
        self._turns: dict[UUID, TurnRecord] = {}
        self._tools: dict[UUID, ToolCallRecord] = {}
        self._usage: dict[UUID, UsageRecord] = {}

    def record_call_started(self, record: CallRecord) -> None:
        if record.call_id in self._calls:
            return
        self.records.append(record)
        self.tenants.setdefault(record.tenant_id, "")
        self._calls[record.call_id] = StoredCall(
            record.tenant_id, record.call_id, record.direction, record.from_number, record.to_number,
            record.sip_call_id, record.codec, record.started_at, record.answered_at, None, None,
            MediaQuality(), 0,
        )  # fmt: skip

    def record_turn(self, record: TurnRecord) -> None:
        if record.id not in self._turns and self._owns(record.tenant_id, record.call_id):
            self.records.append(record)
            self._turns[record.id] = record

    def record_tool_call(self, record: ToolCallRecord) -> None:
        if record.id not in self._tools and self._owns(record.tenant_id, record.call_id):
            self.records.append(record)
            self._tools[record.id] = record

    def record_usage(self, record: UsageRecord) -> None:
        if record.id not in self._usage and self._owns(record.tenant_id, record.call_id):
            self.records.append(record)
            self._usage[record.id] = record

    def record_call_ended(self, record: CallEnd) -> None:
        call = self._calls.get(record.call_id)
        if call is None or call.tenant_id != record.tenant_id:
            return
        self.records.append(record)
        self._calls[record.call_id] = dataclasses.replace(
            call,
            ended_at=record.ended_at,
            end_reason=record.end_reason,
            codec=record.codec or call.codec,
            answered_at=record.answered_at or call.answered_at,
            media=record.media,
        )

    def _owns(self, tenant_id: str, call_id: UUID) -> bool:
        call = self._calls.get(call_id)
        return call is not None and call.tenant_id == tenant_id

    def _with_count(self, call: StoredCall) -> StoredCall:
        count = sum(1 for t in self._turns.values() if t.call_id == call.call_id)
        return dataclasses.replace(call, turn_count=count)

    async def list_calls(self, tenant_id: str, limit: int = 50) -> list[StoredCall]:
        calls = [c for c in self._calls.values() if c.tenant_id == tenant_id]
        calls.sort(key=lambda c: (c.started_at, str(c.call_id)), reverse=True)
        return [self._with_count(c) for c in calls[: max(0, limit)]]

    async def get_call(self, tenant_id: str, call_id: UUID) -> CallDetail | None:
        call = self._calls.get(call_id)
        if call is None or call.tenant_id != tenant_id:
            return None
        turns = sorted((t for t in self._turns.values() if t.call_id == call_id), key=lambda t: t.seq)
        tools = sorted((t for t in self._tools.values() if t.call_id == call_id), key=lambda t: t.started_at)
        usage = sum_usage(u for u in self._usage.values() if u.call_id == call_id)
        return CallDetail(self._with_count(call), tuple(turns), tuple(tools), usage)

    async def sync_tenants(self, tenants: Iterable[TenantLike]) -> None:
        for t in tenants:
            self.tenants[t.tenant_id] = t.display_name
