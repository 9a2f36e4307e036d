"""The suite's PNG chart: six panels with readable labels (rates, ratios with their spread, CPU split, latency,
throughput, controller memory against tracked connections)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.suite.results import (
    CPU_KEYS,
    CPU_LABELS,
    MEMORY_TARGET_BYTES,
    SCENARIO_LABELS,
    cell,
    is_number,
)
from benchmarks.suite.settings import BASELINES, SCENARIOS, SUBJECTS

COLOURS = {
    "vip_controller": "#1f77b4",
    "vip_switch": "#2ca02c",
    "vip_switch_learn": "#9467bd",
    "direct": "#7f7f7f",
    "haproxy": "#d62728",
}
CPU_COLOURS = ("#8c564b", "#1f77b4", "#d62728", "#bcbd22", "#17becf")
FONT_SIZE = 11
RATIO_FIGURES = (("connections", "rate", "new conn/s"), ("throughput", "download_mbps", "download"))
SHORT = {"vip_controller": "ctl", "vip_switch": "sw", "vip_switch_learn": "sw-learn", "direct": "direct"}
Axes = Any


def scenario_labels() -> list[str]:
    """Tick labels of the scenarios, a word or two per line so that neighbours never overlap."""
    return [
        SCENARIO_LABELS[s].replace(", ", "\n").replace("dispatch ", "dispatch\n").replace(" (", "\n(")
        for s in SCENARIOS
    ]


def value_bars(ax: Axes, sections: Mapping[str, Any], section: str, key: str, title: str) -> None:
    """One bar per scenario (median over the rounds, min-max as an error bar), annotated with its value."""
    body = sections.get(section, {})
    values = [body.get("scenarios", {}).get(s, {}).get(key) for s in SCENARIOS]
    heights = [v if is_number(v) else 0.0 for v in values]
    spans = [body.get("spread", {}).get(s, {}).get(key) for s in SCENARIOS]
    errors = [
        [max(h - span[0], 0.0) if span else 0.0 for h, span in zip(heights, spans, strict=True)],
        [max(span[1] - h, 0.0) if span else 0.0 for h, span in zip(heights, spans, strict=True)],
    ]
    drawn = ax.bar(scenario_labels(), heights, color=[COLOURS[s] for s in SCENARIOS], yerr=errors, capsize=4)
    ax.bar_label(drawn, labels=[cell(v, "{:.0f}") for v in values], padding=2)
    ax.set_title(title)


def ratio_bars(ax: Axes, sections: Mapping[str, Any]) -> None:
    """Round-by-round ratios of each dispatch mode to each baseline: median bar, min-max error bar, 1.0 line."""
    names, medians, lows, highs = [], [], [], []
    for section, key, label in RATIO_FIGURES:
        rounds = sections.get(section, {}).get("ratio_rounds", {})
        for subject in SUBJECTS:
            for baseline in BASELINES:
                found = rounds.get(f"{subject}/{baseline}", {}).get(key, {})
                median = found.get("median") if is_number(found.get("median")) else 0.0
                names.append(f"{label}\n{SHORT[subject]}/{SHORT.get(baseline, 'HAP')}")
                medians.append(median)
                lows.append(max(median - found["min"], 0.0) if is_number(found.get("min")) else 0.0)
                highs.append(max(found["max"] - median, 0.0) if is_number(found.get("max")) else 0.0)
    colours = [COLOURS["direct"] if name.endswith("direct") else COLOURS["haproxy"] for name in names]
    drawn = ax.bar(range(len(names)), medians, yerr=[lows, highs], capsize=3, color=colours)
    ax.bar_label(drawn, labels=[f"{m:.2f}" for m in medians], padding=2, fontsize=FONT_SIZE - 2)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=FONT_SIZE - 2)
    ax.set_title("ratios to direct (grey) and HAProxy (red): median of rounds, min-max")


def cpu_bars(ax: Axes, sections: Mapping[str, Any]) -> None:
    """Stacked CPU cores per scenario during the loaded run: who uses the machine."""
    scenarios = sections.get("connections", {}).get("scenarios", {})
    bottoms = [0.0] * len(SCENARIOS)
    for key, label, colour in zip(CPU_KEYS, CPU_LABELS, CPU_COLOURS, strict=True):
        values = [scenarios.get(s, {}).get(key) for s in SCENARIOS]
        heights = [v if is_number(v) else 0.0 for v in values]
        ax.bar(scenario_labels(), heights, bottom=bottoms, color=colour, label=label)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    machine = [scenarios.get(s, {}).get("machine_cores") for s in SCENARIOS]
    rest = [max(m - b, 0.0) if is_number(m) else 0.0 for m, b in zip(machine, bottoms, strict=True)]
    ax.bar(
        scenario_labels(), rest, bottom=bottoms, color="white", edgecolor="grey", hatch="//", label="rest of machine"
    )
    ax.set_ylabel("CPU cores (of the machine's)")
    ax.set_title("CPU per process, loaded run")
    ax.legend(fontsize=FONT_SIZE - 2)


def latency_bars(ax: Axes, sections: Mapping[str, Any]) -> None:
    """Connect p50 and p99 under load, side by side per scenario."""
    latency = sections.get("connections", {}).get("scenarios", {})
    width = 0.4
    for offset, key in ((-width / 2, "connect_p50_ms"), (width / 2, "connect_p99_ms")):
        values = [latency.get(s, {}).get(key) for s in SCENARIOS]
        ax.bar(
            [i + offset for i in range(len(SCENARIOS))],
            [v if is_number(v) else 0.0 for v in values],
            width,
            label=key.split("_")[1],
        )
    ax.set_xticks(range(len(SCENARIOS)), scenario_labels())
    ax.set_ylabel("ms")
    ax.set_title("connect latency, loaded")
    ax.legend()


def memory_curve(ax: Axes, sections: Mapping[str, Any]) -> None:
    """Controller RSS against tracked connections (the scale curve), with the bytes per connection of the slope."""
    memory = sections.get("scale", {}).get("memory", {})
    points = [(0, memory.get("baseline_rss_bytes"))] + [
        (p.get("tracked", 0), p.get("rss_bytes")) for p in memory.get("points", [])
    ]
    points = [(tracked, rss / 1e6) for tracked, rss in points if is_number(rss)]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        for tracked, mb in points:
            ax.annotate(f"{mb:.0f} MB", (tracked, mb), textcoords="offset points", xytext=(4, 6))
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel("tracked connections")
    ax.set_ylabel("controller RSS, MB")
    ax.set_title(
        f"controller memory: {cell(memory.get('bytes_per_connection'), '{:.0f}')} bytes per tracked connection "
        f"(target {MEMORY_TARGET_BYTES})"
    )


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """Write the six-panel PNG of a report to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    pyplot.rcParams.update({"font.size": FONT_SIZE})
    sections = report.get("sections", {})
    figure, axes = pyplot.subplots(2, 3, figsize=(21, 12), constrained_layout=True)
    value_bars(axes[0][0], sections, "connections", "rate", "new connections/s, loaded (median, min-max)")
    ratio_bars(axes[0][1], sections)
    cpu_bars(axes[0][2], sections)
    latency_bars(axes[1][0], sections)
    value_bars(axes[1][1], sections, "throughput", "download_mbps", "download Mbit/s, 1 connection (median, min-max)")
    memory_curve(axes[1][2], sections)
    settings = report.get("settings", {})
    figure.suptitle(
        f"nlb_sdn benchmark suite: {report.get('mode')} mode, lab {settings.get('lab', '?')}, "
        f"{settings.get('clients')} clients x {settings.get('concurrency')} in flight, "
        f"{settings.get('repeats')} round(s), {report.get('environment', {}).get('date', '')}",
        fontsize=FONT_SIZE + 3,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
