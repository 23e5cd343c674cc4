"""PNG plots for the benchmark report (matplotlib, headless); missing data means no file, not an error."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def jitter_timeline(out_dir: Path, jitter: dict[str, Any]) -> list[str]:
    """Per trace: network delay, our target and added delay over time, with impaired frames per second."""
    traces = [name for name in ("moderate", "spiky") if isinstance(jitter.get(name), dict)]
    if not traces:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 3.6 * len(traces)), squeeze=False)
    for ax, name in zip(axes[:, 0], traces, strict=True):
        s = jitter[name].get("series", {})
        t = s.get("t_s", [])
        if not t:
            continue
        ax.plot(t, s.get("network_delay_max_ms", []), color="0.7", lw=1, label="network delay, max per s")
        ax.plot(t, s.get("network_delay_ms", []), color="0.4", lw=1, label="network delay, mean per s")
        ax.plot(t, s.get("target_delay_ms", []), color="tab:orange", lw=1.5, label="our target delay")
        ax.plot(t, s.get("added_delay_ms", []), color="tab:blue", lw=1.5, label="our added delay")
        ax.set_ylabel("ms")
        ax.set_title(
            f"{name}: mean added {jitter[name].get('mean_added_delay_ms')} ms, "
            f"concealed/dropped {jitter[name].get('conceal_or_drop_pct')} %"
        )
        twin = ax.twinx()
        twin.bar(t, s.get("impaired_frames", []), color="tab:red", alpha=0.3, label="impaired frames")
        twin.set_ylabel("impaired frames / s")
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("trace time (s)")
    return _save(fig, out_dir, "jitter_timeline.png")


def jitter_tradeoff(
    out_dir: Path, jitter: dict[str, Any], reference: dict[str, dict[str, float]]
) -> list[str]:
    """Added delay vs % concealed/dropped: ours (every ticker phase) beside pjmedia's reference points."""
    traces = [name for name in ("moderate", "spiky") if isinstance(jitter.get(name), dict)]
    if not traces:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = {"moderate": "tab:blue", "spiky": "tab:red"}
    for name in traces:
        phases = jitter[name].get("per_phase", [])
        ax.scatter(
            [p["mean_added_delay_ms"] for p in phases],
            [p["conceal_or_drop_pct"] for p in phases],
            color=colors[name],
            marker="o",
            label=f"Trunkline, {name}",
        )
        ref = reference.get(name)
        if ref:
            ax.scatter(
                [ref["mean_added_delay_ms"]],
                [ref["conceal_or_drop_pct"]],
                color=colors[name],
                marker="x",
                s=80,
                label=f"pjmedia, {name}",
            )
    ax.set_xlabel("mean added delay (ms)")
    ax.set_ylabel("frames concealed or dropped (%)")
    ax.set_title("Jitter buffer: delay vs concealment (lower-left is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "jitter_tradeoff.png")


def capacity_cpu(out_dir: Path, capacity: dict[str, Any]) -> list[str]:
    """Engine CPU vs concurrent legs per ladder (filled: step passed, x: failed), generator CPU dashed,
    outbound spacing p99 on the right axis against its 25 ms limit."""
    ladders = capacity.get("ladders") or {"task": capacity}
    ladders = {k: v for k, v in ladders.items() if isinstance(v, dict) and v.get("steps")}
    if not ladders:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    twin = ax.twinx()
    colors = iter(("tab:blue", "tab:green", "tab:purple"))
    for name, ladder in ladders.items():
        color = next(colors)
        steps = sorted(ladder["steps"], key=lambda s: s["legs"])
        last = list({s["legs"]: s for s in steps}.values())  # lines through the last try at each N
        legs = [s["legs"] for s in last]
        ax.plot(legs, [s["engine_cpu_pct"] for s in last], color=color, lw=1.5, label=f"engine CPU, {name}")
        for passed, marker in ((True, "o"), (False, "x")):
            pts = [s for s in steps if bool(s.get("passed")) is passed]
            ax.scatter(
                [s["legs"] for s in pts], [s["engine_cpu_pct"] for s in pts], color=color, marker=marker
            )
        ax.plot(
            legs,
            [s.get("generator_cpu_pct") for s in last],
            color=color,
            ls="--",
            lw=1,
            alpha=0.7,
            label=f"generator CPU, {name}",
        )
        twin.plot(
            legs,
            [s.get("spacing_p99_ms") for s in last],
            color=color,
            ls=":",
            lw=1.5,
            label=f"spacing p99, {name}",
        )
    twin.axhline(25.0, color="tab:red", lw=1, alpha=0.6, label="spacing limit 25 ms")
    ax.set_xlabel("concurrent G.711 legs (one engine process)")
    ax.set_ylabel("CPU, % of one core")
    twin.set_ylabel("outbound spacing p99 (ms, log)")
    twin.set_yscale("log")
    twin.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.set_title(
        f"CPU vs legs: max passing {capacity.get('max_legs_passing')}, "
        f"{capacity.get('legs_per_core')} legs/core (o pass, x fail)"
    )
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    return _save(fig, out_dir, "capacity_cpu.png")


def latency_cdf(
    out_dir: Path,
    name: str,
    series: dict[str, list[float]],
    title: str,
    xlabel: str,
    target_ms: float | None = None,
) -> list[str]:
    """Empirical CDF of each named sample list (ms) with p50/p95 in the legend; writes `<name>.png`.
    Empty or missing series are left out; nothing to plot means no file."""
    clean = {
        label: sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
        for label, values in series.items()
        if values
    }
    clean = {label: values for label, values in clean.items() if values}
    if not clean:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in clean.items():
        n = len(values)
        p50, p95 = values[(n - 1) // 2], values[min(n - 1, math.ceil(0.95 * n) - 1)]
        ax.step(
            values,
            [(i + 1) / n for i in range(n)],
            where="post",
            label=f"{label} (n={n}, p50 {p50:.0f}, p95 {p95:.0f})",
        )
    if target_ms is not None:
        ax.axvline(target_ms, color="tab:red", ls="--", lw=1, label=f"target {target_ms:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out_dir, f"{name}.png")


def agent_concurrency(out_dir: Path, result: dict[str, Any]) -> list[str]:
    """p50/p95 turn latency vs concurrent calls with the 600 ms target; writes agent_concurrency.png."""
    from bench.agent_concurrency import TARGET_P95_MS

    levels = [lv for lv in result.get("levels", []) if lv.get("p50_ms") is not None]
    if not levels:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    calls = [lv["calls"] for lv in levels]
    dots = [(lv["calls"], ms) for lv in levels for ms in lv.get("samples_ms", [])]
    ax.scatter([c for c, _ in dots], [ms for _, ms in dots], s=8, color="0.6", alpha=0.5, label="turns")
    ax.plot(calls, [lv["p50_ms"] for lv in levels], marker="o", label="turn latency p50")
    ax.plot(calls, [lv["p95_ms"] for lv in levels], marker="s", label="turn latency p95")
    for lv in levels:
        if lv.get("unanswered") or lv.get("calls_failed"):
            ax.annotate(
                f"{lv['unanswered']} unanswered, {lv['calls_failed']} failed",
                (lv["calls"], lv["p95_ms"]),
                fontsize=7,
            )
    ax.axhline(TARGET_P95_MS, color="tab:red", ls="--", lw=1, label=f"p95 target {TARGET_P95_MS:g} ms")
    ax.set_xlabel(f"concurrent agent calls (one server process, {result.get('cores')} cores)")
    ax.set_ylabel("ms (last caller speech → first agent speech)")
    ax.set_xticks(calls)
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Turn latency vs concurrent calls: ≤ {TARGET_P95_MS:g} ms p95 up to "
        f"{result.get('max_calls_p95_within_600ms')} calls"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(fig, out_dir, "agent_concurrency.png")


def _samples(raw: dict[str, Any], step: str, key: str) -> list[float]:
    """raw[step][key] when it is a list of numbers (a step may be absent, failed, or None)."""
    result = raw.get(step)
    values = result.get(key) if isinstance(result, dict) else None
    return [v for v in values if isinstance(v, int | float)] if isinstance(values, list) else []


def write_all(out_dir: Path, raw: dict[str, Any]) -> list[str]:
    from bench.run import PJMEDIA_JB_REFERENCE

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    jitter = raw.get("jitter_quality")
    if isinstance(jitter, dict) and "error" not in jitter:
        files += jitter_timeline(out_dir, jitter)
        live = raw.get("pjmedia_jb") or {}
        reference = {
            trace: live[trace] if isinstance(live.get(trace), dict) else PJMEDIA_JB_REFERENCE[trace]
            for trace in PJMEDIA_JB_REFERENCE
        }
        files += jitter_tradeoff(out_dir, jitter, reference)
    capacity = raw.get("capacity")
    if isinstance(capacity, dict) and "error" not in capacity:
        files += capacity_cpu(out_dir, capacity)
    turn = _samples(raw, "turn_latency", "samples_ms")
    if turn:
        files += latency_cdf(
            out_dir,
            "turn_latency_cdf",
            {"Trunkline": turn},
            "Turn latency: last caller speech packet → first agent speech packet",
            "ms",
            target_ms=450.0,
        )
    tts = _samples(raw, "models_speed", "tts_first_audio_ms_samples")
    if tts:
        files += latency_cdf(
            out_dir, "tts_first_audio_cdf", {"piper": tts}, "TTS time to first audio", "ms", target_ms=60.0
        )
    concurrency = raw.get("agent_concurrency")
    if isinstance(concurrency, dict) and "error" not in concurrency:
        files += agent_concurrency(out_dir, concurrency)
    return files


def _save(fig: Any, out_dir: Path, filename: str) -> list[str]:
    """Lay out, write `filename` into `out_dir`, free the figure; the list of files written."""
    fig.tight_layout()
    fig.savefig(out_dir / filename, dpi=90)
    _pyplot().close(fig)
    return [filename]
