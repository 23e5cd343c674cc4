"""The call-store interface the rest of the server depends on.

`record_*` methods are synchronous and return at once (the media path must never wait on the database);
they must be called from the event loop thread. Reads are async and may raise StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

from trunkline.store.records import (
    CallDetail,
    CallEnd,
    CallRecord,
    StoredCall,
    TenantLike,
    ToolCallRecord,
    TurnRecord,
    UsageRecord,
)


class CallStore(Protocol):
    def record_call_started(self, record: CallRecord) -> None: ...

    def record_turn(self, record: TurnRecord) -> None: ...

    def record_tool_call(self, record: ToolCallRecord) -> None: ...

    def record_usage(self, record: UsageRecord) -> None: ...

    def record_call_ended(self, record: CallEnd) -> None: ...

    async def list_calls(self, tenant_id: str, limit: int = 50) -> list[StoredCall]: ...

    async def get_call(self, tenant_id: str, call_id: UUID) -> CallDetail | None: ...

    async def sync_tenants(self, tenants: Iterable[TenantLike]) -> None: ...
