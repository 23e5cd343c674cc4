"""PNG plots for the benchmark report (matplotlib, headless); missing data means no file, not an error."""

from __future__ import annotations

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
    fig.tight_layout()
    name = "jitter_timeline.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return [name]


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
    fig.tight_layout()
    name = "jitter_tradeoff.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return [name]


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
    return files
