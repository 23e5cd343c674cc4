"""The intent-reply openings warmed into the prompt cache: short first clauses of replies that need no slot,
so the first word of such a reply plays from the cache (a live first clause can underrun on a busy core)."""

from __future__ import annotations

from pathlib import Path

from trunkline.pipeline.handler import fixed_reply_leads
from trunkline.tenants.registry import TenantRegistry

REPO = Path(__file__).resolve().parents[2]


def test_demo_tenant_warms_the_openings_of_its_slot_free_replies() -> None:
    registry = TenantRegistry(REPO / "tenants", env={})
    registry.reload()
    demo = registry.get("demo")
    assert demo is not None
    # "Hello! How can I help you today?" and "Sure, I'll put you through ..."; not "Great," of the booking
    # reply, which needs the caller's {day} and {time}
    assert fixed_reply_leads(demo) == ["Hello!", "Sure,"]
