"""`make bench`: run every benchmark, write bench/results/<timestamp>/ (results.json, report.md, plots).

Each step is a module with `run(quick=False) -> dict` (JSON-serialisable) and `metrics(result) -> [Metric]`;
this module runs them in order, times them, and writes one report. A step that cannot run is reported with its
reason, never as a number. Models are warmed by the first step that uses them (models_speed).

    python -m bench.run                 # everything (< 10 min on 2 cores)
    python -m bench.run --quick         # smoke run: fewer repeats, numbers not quotable
    python -m bench.run --only media_cpu,capacity
"""

from __future__ import annotations

import os

# Pin library thread pools before numpy/onnxruntime/ctranslate2 load: the models get explicit thread counts,
# everything else one thread, so runs are comparable.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.report import Metric, markdown_table, write_results  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# pjmedia's adaptive jitter buffer on equivalent traces (ARCHITECTURE.md, "Numbers that shape the design").
PJMEDIA_JB_REFERENCE = {
    "moderate": {"mean_added_delay_ms": 43.0, "conceal_or_drop_pct": 9.1},
    "spiky": {"mean_added_delay_ms": 100.0, "conceal_or_drop_pct": 5.2},
}
JB_TARGETS = {"moderate": (50.0, 1.0), "spiky": (80.0, 2.5)}


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        how = (
            "Seeded trace (bench/traces.py) replayed on a virtual clock into our JitterBuffer at four ticker "
            "phases (bench/jitter_quality.py); pjmedia: two pjsua2 accounts calling each other through an "
            "impairing relay replaying the same trace (bench/pjmedia_jb.py)."
        )
        for metric_id, title, unit, key, target in (
            (f"jb_{trace}_delay_ms", f"Jitter buffer, {trace} trace: mean added delay", "ms",
             "mean_added_delay_ms", delay_target),
            (f"jb_{trace}_conceal_pct", f"Jitter buffer, {trace} trace: frames concealed or dropped", "%",
             "conceal_or_drop_pct", pct_target),
        ):  # fmt: skip
            value = ours.get(key)
            rows.append(
                Metric(
                    metric_id=metric_id,
                    title=title,
                    unit=unit,
                    value=value,
                    target=f"≤ {target:g} {unit}",
                    passed=None if value is None else value <= target,
                    comparator=comparator,
                    comparator_value=ref.get(key),
                    how=how + f" Network loss (not counted): {ours.get('network_loss_pct')} %.",
                )
            )
    return rows


@dataclass(frozen=True, slots=True)
class Step:
    """One benchmark module; `metrics` overrides the module's own `metrics(result)` when given."""

    name: str
    module: str
    metrics: Callable[[dict[str, Any], dict[str, Any]], list[Metric]] | None = None
    always_quick: bool = False  # the step's full study runs on its own; `make bench` takes the headline rows


STEPS = (
    Step("models_speed", "bench.models_speed"),  # first: warms whisper and piper for later steps
    Step("pjmedia_jb", "bench.pjmedia_jb", lambda r, raw: []),  # its numbers sit beside ours in the jb rows
    Step("jitter_quality", "bench.jitter_quality", lambda r, raw: jitter_metrics(r, raw.get("pjmedia_jb"))),
    Step("media_cpu", "bench.media_cpu"),
    Step("capacity", "bench.capacity"),
    # headline rows only: the full trade-off study (`python -m bench.endpointing`) needs ~900 whisper decodes
    # on a cold cache, which alone would take `make bench` past 10 minutes on a fresh machine
    Step("endpointing", "bench.endpointing", always_quick=True),
    Step("turn_latency", "bench.turn_latency"),
    Step("barge_in", "bench.barge_in"),
    Step("agent_concurrency", "bench.agent_concurrency"),  # ~3 min: concurrent agent calls (sizing figure)
)


def _call_run(module: Any, quick: bool) -> dict[str, Any]:
    run = module.run
    if "quick" in inspect.signature(run).parameters:
        result: dict[str, Any] = run(quick=quick)
    else:
        result = run()
    if isinstance(result, dict) and result.get("error") and len(result) == 1:
        raise RuntimeError(str(result["error"]))
    return result


def run_step(step: Step, quick: bool, raw: dict[str, Any]) -> tuple[list[Metric], dict[str, Any]]:
    progress(f"{step.name}: running")
    started = time.monotonic()
    try:
        module = importlib.import_module(step.module)
        result = _call_run(module, quick or step.always_quick)
        rows = step.metrics(result, raw) if step.metrics else module.metrics(result)
    except Exception as exc:  # a failed benchmark is reported, not hidden
        progress(f"{step.name}: could not run: {exc!r}")
        error = f"{exc!r}\n\n```\n{traceback.format_exc()}```"
        return [Metric(step.name, step.name, "", None, "", None, error=error)], {"error": repr(exc)}
    elapsed = time.monotonic() - started
    result = dict(result)
    result["_step_seconds"] = round(elapsed, 1)
    result["_loadavg_after"] = os.getloadavg()
    progress(f"{step.name}: done in {elapsed:.1f} s")
    return rows, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats (smoke run, numbers not quotable)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated step names: " + ", ".join(s.name for s in STEPS)
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    unknown = only - {s.name for s in STEPS}
    if unknown:
        parser.error(f"unknown step(s): {', '.join(sorted(unknown))}")

    raw: dict[str, Any] = {"_meta": {"quick": args.quick, "loadavg_before": os.getloadavg()}}
    metrics: list[Metric] = []
    started = time.monotonic()
    for step in STEPS:
        if only and step.name not in only:
            continue
        rows, result = run_step(step, args.quick, raw)
        metrics += rows
        raw[step.name] = result
    raw["_meta"]["total_seconds"] = round(time.monotonic() - started, 1)
    from bench import plots

    out_dir = RESULTS_DIR / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    plot_files = plots.write_all(out_dir, raw)
    report = write_results(out_dir, metrics, plot_files, raw)
    print(markdown_table(metrics))
    print(f"\nreport: {report}  ({raw['_meta']['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    from trunkline.logs import configure_logging

    configure_logging()  # the steps' log lines to stderr: stdout is the table
    sys.exit(main())
