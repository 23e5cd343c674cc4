"""Trunk `dids` and tenant `numbers` must agree; a mismatch is reported (not fatal) with both sides named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trunkline.config.loader import load_config
from trunkline.config.model import TrunkConfig
from trunkline.tenants.loader import LoadContext, load_tenant
from trunkline.tenants.model import TenantConfig
from trunkline.tenants.routing import routing_mismatches

REPO = Path(__file__).resolve().parents[2]


def committed() -> tuple[tuple[TrunkConfig, ...], dict[str, TenantConfig]]:
    config = load_config(REPO / "config" / "trunkline.toml", {})
    demo = load_tenant(REPO / "tenants" / "demo", LoadContext(env={}))
    return config.trunks, {"demo": demo}


def test_the_committed_config_and_demo_tenant_agree() -> None:
    trunks, serving = committed()
    assert routing_mismatches(trunks, serving) == []


def test_a_number_routed_to_a_tenant_that_does_not_list_it_is_reported() -> None:
    trunks, serving = committed()
    local = dataclasses.replace(trunks[0], dids=(*trunks[0].dids, ("+1 (555) 010-0999", "demo")))
    (problem,) = routing_mismatches((local, *trunks[1:]), serving)
    assert "trunk 'local' routes +1 (555) 010-0999 to tenant 'demo'" in problem
    assert str(REPO / "tenants" / "demo" / "tenant.toml") in problem


def test_a_tenant_number_no_trunk_routes_is_reported_and_spelling_does_not_matter() -> None:
    trunks, serving = committed()
    demo = serving["demo"]
    extra = dataclasses.replace(demo, numbers=(*demo.numbers, "+15550777"))
    respelled = dataclasses.replace(demo, numbers=tuple(n.replace("+1", "1-") for n in demo.numbers))
    assert routing_mismatches(trunks, {"demo": extra}) == [
        "tenant 'demo' lists +15550777, but no trunk routes it to that tenant (add it to a trunk's dids)"
    ]
    assert routing_mismatches(trunks, {"demo": respelled}) == []


def test_numbers_routed_to_tenants_that_are_not_serving_are_left_to_admission() -> None:
    trunks, _ = committed()
    assert routing_mismatches(trunks, {}) == []
