"""Cross-check of the two places a number is configured: a trunk's `dids` (which tenant the carrier's number
goes to) and a tenant's `numbers` (which numbers the business says are its own). A mismatch is not fatal —
the trunk's routing decides — but it is almost always a typo, so the operator hears about it at start-up and
on every reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trunkline.config.model import TrunkConfig, did_digits
from trunkline.tenants.model import TenantConfig


def routing_mismatches(trunks: Iterable[TrunkConfig], serving: Mapping[str, TenantConfig]) -> list[str]:
    """One line per number routed to a serving tenant that does not list it, and per number a serving
    tenant lists that no trunk routes to it."""
    routed: dict[str, set[str]] = {}  # tenant id -> digits routed to it
    problems: list[str] = []
    for trunk in trunks:
        for did, tenant_id in trunk.dids:
            routed.setdefault(tenant_id, set()).add(did_digits(did))
            tenant = serving.get(tenant_id)
            if tenant is not None and did_digits(did) not in {did_digits(n) for n in tenant.numbers}:
                problems.append(
                    f"trunk {trunk.name!r} routes {did} to tenant {tenant_id!r}, "
                    f"but {tenant.source_file} does not list that number"
                )
    for tenant_id, tenant in sorted(serving.items()):
        for number in tenant.numbers:
            if did_digits(number) not in routed.get(tenant_id, set()):
                problems.append(
                    f"tenant {tenant_id!r} lists {number}, but no trunk routes it to that tenant "
                    "(add it to a trunk's dids)"
                )
    return problems
