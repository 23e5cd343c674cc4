"""TenantRegistry: broken files never take other tenants down, last good versions keep serving."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
from pathlib import Path

import pytest

from trunkline.tenants.cli import add_commands
from trunkline.tenants.registry import ReloadReport, TenantRegistry, watch_tenants

REPO = Path(__file__).resolve().parents[2]


def tenant_text(name: str, number: str, extra: str = "") -> str:
    return (
        f'{extra}display_name = "{name}"\nnumbers = ["{number}"]\ngreeting = "Hello"\n'
        '[[intents]]\nname = "hello"\nexamples = ["hi"]\nreply = "Hi!"\n'
    )


def write(root: Path, tenant_id: str, text: str) -> Path:
    path = root / tenant_id / "tenant.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # Make the edit visible even within one mtime tick of the previous write.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "tenants" / "demo", tmp_path / "demo")
    write(tmp_path, "alpha", tenant_text("Alpha", "+15550200"))
    return tmp_path


def test_initial_load_and_did_lookup(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    report = registry.reload()
    assert report.ok and report.serving == ("alpha", "demo") and report.loaded == ("alpha", "demo")
    demo = registry.lookup_did("sip:+1-555-0100@10.0.0.1;user=phone")
    assert demo is not None and demo.display_name == "Bright Smile Dental"
    assert registry.lookup_did("15550200") is registry.get("alpha")
    assert registry.lookup_did("+15550999") is None and registry.lookup_did("anonymous") is None


def test_broken_edit_keeps_last_good_version_and_others_serve(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    registry.reload()
    in_call = registry.lookup_did("+15550200")
    assert in_call is not None
    write(root, "alpha", tenant_text("Alpha", "+15550200", extra='display_name = "dup"\n'))
    report = registry.reload()
    (problem,) = report.failed
    assert problem.tenant_id == "alpha" and problem.kept_previous
    assert report.problem_lines()[0].startswith(f"{root / 'alpha' / 'tenant.toml'}: (toml): not valid TOML")
    assert registry.lookup_did("+15550200") is in_call  # last good version still serves
    assert registry.lookup_did("+15550100") is not None  # demo untouched
    assert registry.problems() == report.failed
    # Nothing changed since: a plain reload does not re-report, a forced one does.
    assert registry.reload().failed == () and registry.reload(force=True).failed == report.failed
    write(root, "alpha", tenant_text("Alpha Two", "+15550200"))
    fixed = registry.reload()
    assert fixed.ok and fixed.loaded == ("alpha",) and registry.problems() == ()
    alpha = registry.get("alpha")
    assert alpha is not None and alpha.display_name == "Alpha Two"
    assert in_call.display_name == "Alpha"  # the call in progress keeps its version


def test_new_broken_tenant_is_absent_and_reported(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    write(root, "beta", tenant_text("Beta", "+15550300", extra="bogus = 1\n"))
    report = registry.reload()
    (problem,) = report.failed
    assert not problem.kept_previous and problem.errors[0].key == "bogus"
    assert report.serving == ("alpha", "demo") and registry.get("beta") is None


def test_missing_secret_fails_only_that_tenant(root: Path) -> None:
    llm = '[llm]\nmodel = "m"\napi_key_env = "BETA_KEY"\n[policy]\nmode = "intents"\n'
    write(root, "beta", tenant_text("Beta", "+15550300") + llm)
    report = TenantRegistry(root, env={}).reload()
    assert [(p.tenant_id, [(e.key, e.why) for e in p.errors]) for p in report.failed] == [
        ("beta", [("llm.api_key_env", "environment variable BETA_KEY is not set")])
    ]
    assert report.serving == ("alpha", "demo")
    registry = TenantRegistry(root, env={"BETA_KEY": "k"})
    assert registry.reload().serving == ("alpha", "beta", "demo")


def test_duplicate_did_new_claimants_lose_and_owner_keeps(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    registry.reload()
    write(root, "beta", tenant_text("Beta", "+15550200"))  # alpha's number
    report = registry.reload()
    (problem,) = report.failed
    assert problem.tenant_id == "beta" and problem.errors[0].key == "numbers[0]"
    assert "+15550200 is already claimed by tenant 'alpha'" in problem.errors[0].why
    owner = registry.lookup_did("+15550200")
    assert owner is not None and owner.tenant_id == "alpha"
    # alpha gives the number up: beta is retried and gets it.
    write(root, "alpha", tenant_text("Alpha", "+15550201"))
    report = registry.reload()
    assert report.ok and set(report.loaded) == {"alpha", "beta"}
    beta = registry.lookup_did("+15550200")
    assert beta is not None and beta.tenant_id == "beta"


def test_duplicate_did_on_first_load_serves_neither(root: Path) -> None:
    write(root, "beta", tenant_text("Beta", "+15550200"))
    registry = TenantRegistry(root, env={})
    report = registry.reload()
    assert sorted(p.tenant_id for p in report.failed) == ["alpha", "beta"]
    assert report.serving == ("demo",) and registry.lookup_did("+15550200") is None


def test_removed_tenant_stops_serving(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    registry.reload()
    shutil.rmtree(root / "alpha")
    report = registry.reload()
    assert report.removed == ("alpha",) and registry.lookup_did("+15550200") is None


def test_missing_directory_keeps_loaded_tenants(root: Path, tmp_path: Path) -> None:
    registry = TenantRegistry(root, env={})
    registry.reload()
    root.rename(tmp_path.parent / f"{tmp_path.name}-moved")
    report = registry.reload()
    assert report.failed[0].errors[0].key == "(dir)" and report.serving == ("alpha", "demo")
    assert registry.lookup_did("+15550100") is not None


def test_disabled_tenant_is_loaded_but_not_served(root: Path) -> None:
    shutil.copytree(REPO / "tenants" / "acme-realty", root / "acme-realty")
    registry = TenantRegistry(root, env={})
    report = registry.reload()
    assert report.ok and report.disabled == ("acme-realty",)
    assert registry.get("acme-realty") is None and registry.lookup_did("+15550111") is None


async def test_watcher_reloads_on_file_change(root: Path) -> None:
    registry = TenantRegistry(root, env={})
    registry.reload()
    reports: asyncio.Queue[ReloadReport] = asyncio.Queue()
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch_tenants(registry, interval_s=0.02, on_reload=reports.put_nowait, stop=stop)
    )
    try:
        write(root, "alpha", tenant_text("Alpha Watched", "+15550200"))
        report = await asyncio.wait_for(reports.get(), timeout=5)
        assert report.loaded == ("alpha",)
        alpha = registry.get("alpha")
        assert alpha is not None and alpha.display_name == "Alpha Watched"
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser(prog="trunkline")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    code = args.func(args, out)
    return code, out.getvalue().splitlines()


def test_cli_check_passes_on_the_shipped_tenants() -> None:
    code, lines = run_cli(["tenants", "check", "--dir", str(REPO / "tenants")])
    assert code == 0 and lines == ["1 tenant(s) ok: demo; disabled: acme-realty"]


def test_cli_check_prints_every_problem_as_file_key_why(root: Path) -> None:
    write(root, "beta", tenant_text("Beta", "+15550200", extra="greting = 1\n"))
    write(root, "gamma", tenant_text("Gamma", "+15550200"))
    code, lines = run_cli(["tenants", "check", "--dir", str(root)])
    beta, gamma = root / "beta" / "tenant.toml", root / "gamma" / "tenant.toml"
    assert code == 1
    assert f"{beta}: greting: unknown key (did you mean 'greeting'?)" in lines
    assert any(
        line.startswith(f"{gamma}: numbers[0]: +15550200 is already claimed by tenant 'alpha'")
        for line in lines
    )
    assert lines[-1] == "1 tenant(s) ok: demo; with problems: alpha, beta, gamma"
    assert run_cli(["tenants", "check", "--dir", str(root / "nope")])[0] == 2
