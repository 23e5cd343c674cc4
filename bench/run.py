"""`make bench`: run every benchmark, write bench/results/<timestamp>/ (results.json, report.md, plots).

Each metric module exposes run(...) -> dict (JSON-serialisable); this module turns those dicts into rows
beside their targets and comparators. A metric that cannot run is reported with its reason, never as a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Metric, markdown_table, write_results

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# pjmedia's adaptive jitter buffer on equivalent traces (ARCHITECTURE.md, "Numbers that shape the design").
PJMEDIA_JB_REFERENCE = {
    "moderate": {"mean_added_delay_ms": 43.0, "conceal_or_drop_pct": 9.1},
    "spiky": {"mean_added_delay_ms": 100.0, "conceal_or_drop_pct": 5.2},
}
JB_TARGETS = {"moderate": (50.0, 1.0), "spiky": (80.0, 2.5)}


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def media_cpu_metrics(result: dict[str, Any]) -> list[Metric]:
    us = result.get("us_per_packet_pair_p50")
    return [
        Metric(
            metric_id="media_cpu_us_per_pair",
            title=f"Media CPU per in+out packet pair ({result.get('legs', 200)} legs)",
            unit="µs",
            value=us,
            target="≤ 15 µs",
            passed=None if us is None else us <= 15.0,
            comparator="floor on this box (recvfrom+sendto+parse)",
            comparator_value=result.get("floor_us_per_pair"),
            how=result.get("how", ""),
            extra=result,
        )
    ]


def jitter_metrics(result: dict[str, Any], pjmedia: dict[str, Any] | None = None) -> list[Metric]:
    """Our buffer on both traces beside pjmedia run live on the same traces (or its reference figures)."""
    rows = []
    for trace, (delay_target, pct_target) in JB_TARGETS.items():
        ours = result.get(trace, {})
        live = (pjmedia or {}).get(trace)
        ref = live if isinstance(live, dict) else PJMEDIA_JB_REFERENCE[trace]
        comparator = (
            "pjmedia 2.15.1, same traces, this run" if live else "pjmedia, reference figure (not rerun)"
        )
        delay = ours.get("mean_added_delay_ms")
        pct = ours.get("conceal_or_drop_pct")
        rows.append(
            Metric(
                metric_id=f"jb_{trace}_delay_ms",
                title=f"Jitter buffer, {trace} trace: mean added delay",
                unit="ms",
                value=delay,
                target=f"≤ {delay_target:g} ms",
                passed=None if delay is None else delay <= delay_target,
                comparator=comparator,
                comparator_value=ref["mean_added_delay_ms"],
                how=result.get("how", ""),
            )
        )
        rows.append(
            Metric(
                metric_id=f"jb_{trace}_conceal_pct",
                title=f"Jitter buffer, {trace} trace: frames concealed or dropped",
                unit="%",
                value=pct,
                target=f"≤ {pct_target:g} %",
                passed=None if pct is None else pct <= pct_target,
                comparator=comparator,
                comparator_value=ref["conceal_or_drop_pct"],
                how=f"network loss (reported separately): {ours.get('network_loss_pct')} %",
            )
        )
    return rows


def endpointing_metrics(result: dict[str, Any]) -> list[Metric]:
    """Endpointing delay and early cuts on the pause-rich set; barge-in decision time and false stops."""
    how = result.get("how", "")
    rows = [
        (
            "endpoint_delay_p95_ms",
            "Endpointing delay p95 (pause-rich set)",
            "ms",
            result.get("endpoint_delay_ms_p95"),
            250.0,
        ),
        (
            "endpoint_early_pct",
            "Turns cut early (pause-rich set)",
            "%",
            result.get("endpoint_early_pct"),
            5.0,
        ),
        (
            "bargein_false_stop_pct",
            "Barge-in false stops (backchannel/noise set)",
            "%",
            result.get("false_stop_pct"),
            5.0,
        ),
        (
            "bargein_onset_to_stop_p95_ms",
            "Barge-in: caller onset → stop decision p95",
            "ms",
            result.get("bargein_onset_to_stop_ms_p95"),
            130.0,
        ),
    ]
    return [
        Metric(
            mid,
            title,
            unit,
            value,
            f"≤ {target:g} {unit}",
            None if value is None else value <= target,
            how=how,
        )
        for mid, title, unit, value, target in rows
    ]


def pjmedia_metrics(result: dict[str, Any]) -> list[Metric]:
    """The comparator run itself yields no row; its numbers appear beside ours in the jitter rows."""
    return []


def run_step(
    name: str, fn: Callable[[], dict[str, Any]], to_metrics: Callable[[dict[str, Any]], list[Metric]]
) -> tuple[list[Metric], dict[str, Any]]:
    progress(f"{name}: running")
    started = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # a failed benchmark is reported, not hidden
        progress(f"{name}: could not run: {exc!r}")
        metric = Metric(name, name, "", None, "", None, error=f"{exc!r}\n\n```\n{traceback.format_exc()}```")
        return [metric], {"error": repr(exc)}
    progress(f"{name}: done in {time.monotonic() - started:.1f} s")
    return to_metrics(result), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats (smoke run, numbers not quotable)"
    )
    args = parser.parse_args(argv)

    from bench import endpointing, jitter_quality, media_cpu, pjmedia_jb

    raw: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], list[Metric]]]] = [
        ("pjmedia_jb", pjmedia_jb.run, pjmedia_metrics),
        ("jitter_quality", jitter_quality.run, lambda r: jitter_metrics(r, raw.get("pjmedia_jb"))),
        (
            "media_cpu",
            lambda: media_cpu.run(repeats=2 if args.quick else 5, seconds=5 if args.quick else 20),
            media_cpu_metrics,
        ),
        ("endpointing", endpointing.run, endpointing_metrics),
    ]
    out_dir = RESULTS_DIR / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    metrics: list[Metric] = []
    for name, fn, to_metrics in steps:
        rows, result = run_step(name, fn, to_metrics)
        metrics += rows
        raw[name] = result
    from bench import plots

    plot_files = plots.write_all(out_dir, raw)
    report = write_results(out_dir, metrics, plot_files, raw)
    print(markdown_table(metrics))
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
