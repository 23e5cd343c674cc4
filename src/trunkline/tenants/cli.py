"""`trunkline tenants check [--dir DIR]`: validate every tenant file and print each problem.

Problems print as `file: key: why`, one a line; the exit code is 0 when every tenant is valid, 1 when
any is not, 2 when the directory does not exist. Secrets are checked against this process's environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from trunkline.tenants.changes import resolve_did_conflicts
from trunkline.tenants.loader import load_tenant
from trunkline.tenants.model import TenantConfig
from trunkline.tenants.reader import TenantConfigError, TenantFileInvalid
from trunkline.tenants.registry import scan_tenants
from trunkline.tenants.sections import LoadContext


def check_tenants(
    root: Path, env: Mapping[str, str]
) -> tuple[dict[str, TenantConfig], list[TenantConfigError]]:
    """Load every tenant under `root` as a fresh server would; returns valid configs and all problems."""
    ctx = LoadContext(env=env)
    configs: dict[str, TenantConfig] = {}
    errors: list[TenantConfigError] = []
    for tenant_id in sorted(scan_tenants(root)):
        try:
            configs[tenant_id] = load_tenant(root / tenant_id, ctx)
        except TenantFileInvalid as exc:
            errors.extend(exc.errors)
    resolution = resolve_did_conflicts(configs, set(configs), {}, {})
    for errs in resolution.rejected.values():
        errors.extend(errs)
    return resolution.accepted, errors


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    root = Path(args.dir)
    if not root.is_dir():
        print(f"{root}: (dir): no such directory", file=out)
        return 2
    configs, errors = check_tenants(root, os.environ)
    for err in errors:
        print(str(err), file=out)
    serving = sorted(tid for tid, c in configs.items() if c.enabled)
    disabled = sorted(tid for tid, c in configs.items() if not c.enabled)
    failed = sorted({Path(e.file).parent.name for e in errors})
    summary = f"{len(serving)} tenant(s) ok: {', '.join(serving) or '-'}"
    if disabled:
        summary += f"; disabled: {', '.join(disabled)}"
    if failed:
        summary += f"; with problems: {', '.join(failed)}"
    print(summary, file=out)
    return 1 if errors else 0


def add_commands(subparsers: Any) -> None:
    """Register `tenants check` on the main CLI's subparsers (an argparse _SubParsersAction)."""
    tenants = subparsers.add_parser("tenants", help="tenant configuration files")
    sub = tenants.add_subparsers(dest="tenants_command", required=True)
    check = sub.add_parser("check", help="validate every tenants/<id>/tenant.toml and report each problem")
    check.add_argument(
        "--dir", default="tenants", help="folder with one directory per tenant (default: tenants)"
    )
    check.set_defaults(func=run_check)
