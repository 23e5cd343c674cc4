"""The capacity benchmark's pure analysis: wire spacing per leg, a step's pass/fail verdict, the headline
(largest passing N, legs per core, RSS slopes) and what limited the ladder."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

FRAME_S = 0.02
SPACING_TOLERANCE_MS = 5.0
CPU_SATURATED_PCT = 90.0  # SCHED_RR is throttled at 95 % of a core (sched_rt_runtime_us)


def spacing_summary(
    leg: np.ndarray, seq: np.ndarray, arrival_s: np.ndarray, silent: np.ndarray, frame_ms: float = 20.0
) -> dict[str, Any]:
    """Per-leg inter-arrival gaps of received packets (in arrival order within a leg), pooled over legs;
    `missing` counts sequence jumps (lost or skipped packets), `silent_frames` packets of idle silence."""
    out: dict[str, Any] = {"packets": int(leg.size), "silent_frames": int(np.count_nonzero(silent))}
    order = np.lexsort((arrival_s, leg))
    leg_o, seq_o, t_o = leg[order], seq[order].astype(np.int64), arrival_s[order]
    same = leg_o[1:] == leg_o[:-1]
    gaps_ms = (np.diff(t_o) * 1000.0)[same]
    steps = ((seq_o[1:] - seq_o[:-1]) % 65536)[same]
    out["missing"] = int(np.sum(np.where(steps == 0, 1, steps - 1)))
    out["gaps"] = int(gaps_ms.size)
    if not gaps_ms.size:
        return out
    dev = np.abs(gaps_ms - frame_ms)
    for q in (1, 50, 99, 99.9):
        out[f"spacing_p{q:g}_ms"] = round(float(np.percentile(gaps_ms, q)), 3)
    out["spacing_max_ms"] = round(float(gaps_ms.max()), 3)
    out["deviation_p99_ms"] = round(float(np.percentile(dev, 99)), 3)
    out["outside_tolerance_pct"] = round(100.0 * float(np.mean(dev > SPACING_TOLERANCE_MS)), 4)
    return out


def verdict(step: dict[str, Any]) -> tuple[bool, list[str]]:
    """Pass when p99 spacing deviation ≤ 5 ms, nothing missing, no leg underflowed (wire or engine)."""
    reasons = []
    dev = step.get("deviation_p99_ms")
    if dev is None or dev > SPACING_TOLERANCE_MS:
        reasons.append(f"p99 |spacing-20| {dev} ms > {SPACING_TOLERANCE_MS:g}")
    if step.get("missing", 1):
        reasons.append(f"{step.get('missing')} packets missing")
    if step.get("underflows", 1):
        reasons.append(f"{step.get('underflows')} underflow frames")
    if step.get("expected_pct", 0.0) < 99.0:
        reasons.append(f"only {step.get('expected_pct')} % of expected packets")
    return not reasons, reasons


def linear_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def headline(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest N passing before the first confirmed failure, legs per core of engine CPU, RSS slopes."""
    best: dict[str, Any] | None = None
    for step in steps:
        if step["passed"]:
            if best is None or step["legs"] > best["legs"]:
                best = step
        elif step.get("confirmed_fail"):
            break
    out: dict[str, Any] = {"max_legs_passing": best["legs"] if best else 0}
    cores = (best or {}).get("engine_cpu_pct", 0.0) / 100.0
    out["engine_cpu_pct_at_max"] = (best or {}).get("engine_cpu_pct")
    out["legs_per_core"] = round(best["legs"] / cores) if best and cores > 0 else (0 if steps else None)
    ok = [s for s in steps if "rss_kb" in s]
    slope = linear_slope([s["legs"] for s in ok], [s["rss_kb"] for s in ok])
    idle = linear_slope([s["legs"] for s in ok], [s["rss_idle_kb"] for s in ok])
    out["rss_kb_per_leg"] = None if slope is None else round(slope, 2)
    out["rss_kb_per_idle_leg"] = None if idle is None else round(idle, 2)
    return out


def step_result(
    legs: int,
    window_s: float,
    a: dict[str, float],
    b: dict[str, float],
    eng: dict[str, Any],
    wire: dict[str, Any],
    rss_kb: int,
    rss_idle_kb: int,
    drops_engine: int,
    drops_gen: int,
) -> dict[str, Any]:
    wall = b["t"] - a["t"]
    ncpu = os.cpu_count() or 1
    step: dict[str, Any] = {
        "legs": legs,
        "engine_cpu_pct": round(100 * (b["engine_cpu_s"] - a["engine_cpu_s"]) / wall, 1),
        "generator_cpu_pct": round(100 * (b["gen_cpu_s"] - a["gen_cpu_s"]) / wall, 1),
        "box_busy_pct": round(
            100 * ncpu * (b["box_busy"] - a["box_busy"]) / (b["box_total"] - a["box_total"]), 1
        ),
        "rss_kb": rss_kb,
        "rss_idle_kb": rss_idle_kb,
        "underflows": int(wire.get("silent_frames", 0)) + int(eng.get("outbound_underruns", 0)),
        "expected_pct": round(100 * wire.get("packets", 0) / (legs * window_s / FRAME_S), 2),
        "udp_drops_engine": drops_engine,
        "udp_drops_generator": drops_gen,
        "engine": eng,
    }
    step["box_busy_pct_of_cores"] = f"{step['box_busy_pct']} % of {ncpu * 100} %"
    step.update({k: v for k, v in wire.items() if k not in step})
    step["passed"], step["fail_reasons"] = verdict(step)
    return step


def saturated(step: dict[str, Any]) -> bool:
    """The engine is out of CPU: near a full core, or its median tick callback takes a whole period."""
    tick_ms = step.get("engine", {}).get("pacer_callback_ms_p50", 0.0)
    return bool(step["engine_cpu_pct"] >= CPU_SATURATED_PCT or tick_ms >= FRAME_S * 1000)


def legs_at_full_core(steps: list[dict[str, Any]]) -> int | None:
    """Where a straight line through engine CPU vs N reaches 100 % of one core: the CPU-bound ceiling,
    which spacing failures may keep the engine from reaching."""
    steps = [s for s in steps if not saturated(s)]  # a saturated step's CPU is flat
    slope = linear_slope([s["legs"] for s in steps], [s["engine_cpu_pct"] for s in steps])
    if not slope or slope <= 0:
        return None
    xs = np.asarray([s["legs"] for s in steps], float)
    intercept = float(np.mean([s["engine_cpu_pct"] for s in steps]) - slope * xs.mean())
    return int((100.0 - intercept) / slope)


def limited_by(failed: list[dict[str, Any]]) -> str:
    """What ended the passing range: the engine's CPU or pacer stalls, the generator (it shares the 2 cores),
    or the box."""
    if not failed or failed[0]["passed"]:
        return "nothing failed (ladder top, CPU or time budget ended it)"
    last = failed[0]
    eng = last.get("engine", {})
    if saturated(last):
        return "engine CPU (one core saturated)"
    if last["generator_cpu_pct"] >= 90.0 or last.get("udp_drops_generator", 0):
        return "generator (its CPU or receive queue), not necessarily the engine"
    stall_ms = eng.get("pacer_callback_ms_max", 0.0) - eng.get("pacer_callback_ms_p50", 0.0)
    if stall_ms > SPACING_TOLERANCE_MS:
        return (
            f"engine pacer stalls: longest tick callback {eng['pacer_callback_ms_max']} ms vs p50 "
            f"{eng['pacer_callback_ms_p50']} ms, longest gen-2 GC pause {eng.get('gc_gen2_max_ms')} ms "
            "(periodic work for every leg in one tick, or a full garbage collection)"
        )
    if last["box_busy_pct"] >= 100.0 * (os.cpu_count() or 1) - 10.0:
        return "the whole box (engine + generator + other processes use every core)"
    return "engine scheduling (spacing/underflow failed below full CPU)"
