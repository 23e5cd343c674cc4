"""Benchmark results: one row per metric, written as results.json and a Markdown report beside its plots."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Metric:
    """One measured number beside its target and comparator; `value` is None when it could not run."""

    metric_id: str
    title: str
    unit: str
    value: float | None
    target: str
    passed: bool | None
    comparator: str = ""
    comparator_value: float | None = None
    how: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def machine_description() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not run"
    return f"{value:.3g} {unit}".strip()


def markdown_table(metrics: list[Metric]) -> str:
    rows = [
        "| metric | ours | comparator | target | result |",
        "|---|---|---|---|---|",
    ]
    for m in metrics:
        comp = m.comparator
        if m.comparator_value is not None:
            comp = f"{_fmt(m.comparator_value, m.unit)} ({m.comparator})"
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[m.passed]
        rows.append(f"| {m.title} | {_fmt(m.value, m.unit)} | {comp or '-'} | {m.target} | {verdict} |")
    return "\n".join(rows)


def write_results(out_dir: Path, metrics: list[Metric], plots: list[str], raw: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    (out_dir / "results.json").write_text(
        json.dumps(
            {"machine": machine, "metrics": [asdict(m) for m in metrics], "raw": raw}, indent=2, default=str
        )
    )
    lines = [
        "# Trunkline benchmark report",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"commit {machine['commit'] or 'unknown'}.",
        "",
        markdown_table(metrics),
        "",
        "## How each number was produced",
        "",
    ]
    for m in metrics:
        lines.append(f"### {m.title}")
        lines.append("")
        lines.append(m.how or "(no description)")
        if m.error:
            lines.append("")
            lines.append(f"**Could not run:** {m.error}")
        lines.append("")
    if plots:
        lines.append("## Plots")
        lines.append("")
        lines.extend(f"![{p}]({p})" for p in plots)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
