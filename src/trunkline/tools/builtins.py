"""Built-in tools every tenant may enable: `end_call` and `transfer_call`.

They act on the live call through `CallControl` (the agent implements it). The transfer destination
comes only from the tenant file, never from the LLM: the model may pick a named target, not a number.
"""

from __future__ import annotations

from typing import Any

from trunkline.tenants.model import TenantConfig, TransferSettings
from trunkline.tools.catalog import ERROR, ToolContext, ToolExecutor, ToolOutcome, ToolSpec

END_CALL_SPEC = ToolSpec(
    name="end_call",
    description="Hang up once the caller has nothing more to ask and you have said goodbye.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 200, "description": "Why the call ends"}},
        "additionalProperties": False,
    },
    kind="builtin",
    deadline_s=5.0,
    fallback="Goodbye!",
)


def transfer_spec(transfer: TransferSettings) -> ToolSpec:
    """`transfer_call`; with named targets the LLM picks one by name (an enum), never a raw number."""
    properties: dict[str, Any] = {"reason": {"type": "string", "maxLength": 200}}
    if transfer.targets:
        names = sorted(transfer.targets)
        properties["destination"] = {"type": "string", "enum": names, "description": "Who to transfer to"}
    return ToolSpec(
        name="transfer_call",
        description="Transfer the caller to a human when they ask for a person or you cannot help.",
        parameters={"type": "object", "properties": properties, "additionalProperties": False},
        kind="builtin",
        deadline_s=10.0,
        fallback=transfer.failed_message,
    )


class EndCallTool:
    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        if ctx.call_control is None:
            return ToolOutcome(False, "This call cannot be ended from here.", ERROR)
        await ctx.call_control.hang_up(str(arguments.get("reason") or "caller_done"))
        return ToolOutcome(True, "The call will end after your last sentence.")


class TransferCallTool:
    def __init__(self, transfer: TransferSettings) -> None:
        self._transfer = transfer

    def target_for(self, destination: str | None) -> str | None:
        if destination is not None:
            return self._transfer.targets.get(destination)
        return self._transfer.target or next(iter(sorted(self._transfer.targets.items())), (None, None))[1]

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        target = self.target_for(arguments.get("destination"))
        if ctx.call_control is None or target is None:
            return ToolOutcome(False, "Transfer is not available on this call.", ERROR)
        await ctx.call_control.transfer(target)
        return ToolOutcome(True, "The caller is being transferred.")


def builtin_tools(tenant: TenantConfig) -> list[tuple[ToolSpec, ToolExecutor]]:
    """The built-ins this tenant enabled (`[tools] builtins`)."""
    tools: list[tuple[ToolSpec, ToolExecutor]] = []
    if "end_call" in tenant.builtins:
        tools.append((END_CALL_SPEC, EndCallTool()))
    if "transfer_call" in tenant.builtins:
        tools.append((transfer_spec(tenant.transfer), TransferCallTool(tenant.transfer)))
    return tools
