"""Call store: calls, turns, tool calls and usage in Postgres with row-level security per tenant.

Writes never wait on the database (a background writer; an on-disk spool while Postgres is down);
see `protocol.CallStore` for the interface and `runtime.open_call_store` to get one.
"""

from trunkline.store.callstore import PostgresCallStore, StoreOptions
from trunkline.store.errors import (
    MigrationError,
    RecordDecodeError,
    RecordRejected,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from trunkline.store.memory import MemoryCallStore
from trunkline.store.protocol import CallStore
from trunkline.store.records import (
    LATENCY_STAGES,
    CallDetail,
    CallEnd,
    CallRecord,
    Direction,
    MediaQuality,
    Speaker,
    StoredCall,
    StoreRecord,
    TenantInfo,
    ToolCallRecord,
    ToolStatus,
    TurnRecord,
    UsageRecord,
    UsageTotals,
    sum_usage,
)
from trunkline.store.runtime import StoreSettings, open_call_store, run_migrations
from trunkline.store.writer import WriterMode, WriterStats

__all__ = [
    "LATENCY_STAGES",
    "CallDetail",
    "CallEnd",
    "CallRecord",
    "CallStore",
    "Direction",
    "MediaQuality",
    "MemoryCallStore",
    "MigrationError",
    "PostgresCallStore",
    "RecordDecodeError",
    "RecordRejected",
    "Speaker",
    "StoreConfigError",
    "StoreError",
    "StoreOptions",
    "StoreRecord",
    "StoreSettings",
    "StoreUnavailable",
    "StoredCall",
    "TenantInfo",
    "ToolCallRecord",
    "ToolStatus",
    "TurnRecord",
    "UsageRecord",
    "UsageTotals",
    "WriterMode",
    "WriterStats",
    "open_call_store",
    "run_migrations",
    "sum_usage",
]
