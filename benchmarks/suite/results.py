"""Pure parts of the suite: medians, ratios to the baselines, targets, sanity checks, Markdown and the PNG chart."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.suite.profile import profile_table
from benchmarks.suite.settings import BASELINES, CHANGES, SCENARIOS, SUBJECTS

Figures = Mapping[str, float | None]

SCENARIO_LABELS = {
    "vip_controller": "VIP, dispatch controller",
    "vip_switch": "VIP, dispatch switch (conntrack)",
    "vip_switch_learn": "VIP, dispatch switch (learn)",
    "direct": "direct (no LB)",
    "haproxy": "HAProxy",
}
CONNECTION_ROWS: list[tuple[str, str, str]] = [
    ("rate", "new connections/s ({clients} clients x {concurrency} in flight)", "{:.0f}"),
    ("connect_p50_ms", "connect p50 ms, loaded", "{:.2f}"),
    ("connect_p99_ms", "connect p99 ms, loaded", "{:.2f}"),
    ("idle_connect_p50_ms", "connect p50 ms, 1 in flight", "{:.2f}"),
    ("idle_connect_p99_ms", "connect p99 ms, 1 in flight", "{:.2f}"),
    ("packet_ins_per_connection", "packet-ins per connection, loaded", "{:.3f}"),
    ("ovs_cores", "CPU cores, loaded: ovs-vswitchd", "{:.2f}"),
    ("controller_cores", "CPU cores, loaded: controller", "{:.2f}"),
    ("haproxy_cores", "CPU cores, loaded: HAProxy", "{:.2f}"),
    ("clients_cores", "CPU cores, loaded: load clients (all)", "{:.2f}"),
    ("backends_cores", "CPU cores, loaded: backends (all)", "{:.2f}"),
    ("machine_cores", "CPU cores, loaded: whole machine (of 2)", "{:.2f}"),
]
CPU_KEYS = ("ovs_cores", "controller_cores", "haproxy_cores", "clients_cores", "backends_cores")
CPU_LABELS = ("ovs-vswitchd", "controller", "HAProxy", "load clients", "backends")
NO_RATIO = {"packet_ins_per_connection", "machine_cores", *CPU_KEYS}
THROUGHPUT_ROWS: list[tuple[str, str, str]] = [
    ("download_mbps", "download Mbit/s ({mb} MB, 1 connection)", "{:.0f}"),
]
REQUIRED_POSITIVE: dict[str, tuple[str, ...]] = {
    "connections": ("rate", "connect_p50_ms", "connect_p99_ms", "idle_connect_p50_ms", "idle_connect_p99_ms"),
    "throughput": ("download_mbps",),
}
MEMORY_TARGET_BYTES = 1024


def median_figures(runs: Iterable[Figures], keys: Iterable[str]) -> dict[str, float | None]:
    """Per key, the median over the runs that produced a finite value (None when none did)."""
    runs = list(runs)
    result: dict[str, float | None] = {}
    for key in keys:
        values = [run[key] for run in runs if is_number(run.get(key))]
        result[key] = round(statistics.median(values), 4) if values else None
    return result


def spread(runs: Iterable[Figures], keys: Iterable[str]) -> dict[str, list[float] | None]:
    """Per key, ``[min, max]`` over the runs that produced a finite value (None when none did)."""
    runs = list(runs)
    result: dict[str, list[float] | None] = {}
    for key in keys:
        values = [run[key] for run in runs if is_number(run.get(key))]
        result[key] = [min(values), max(values)] if values else None  # type: ignore[type-var]
    return result


def round_ratios(runs: Mapping[str, Sequence[Figures]], keys: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every subject's figure over every baseline's, round by round (round i over round i of the same run): per pair
    ``"<subject>/<baseline>"`` and key, the rounds' ratios with their median, min and max (None when none)."""
    keys = list(keys)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for subject in SUBJECTS:
        for baseline in BASELINES:
            pair: dict[str, dict[str, Any]] = {}
            for key in keys:
                values = [
                    ratio(top.get(key), bottom.get(key))
                    for top, bottom in zip(runs.get(subject, []), runs.get(baseline, []), strict=False)
                ]
                finite = [v for v in values if v is not None]
                pair[key] = {
                    "rounds": values,
                    "median": round(statistics.median(finite), 3) if finite else None,
                    "min": min(finite) if finite else None,
                    "max": max(finite) if finite else None,
                }
            found[f"{subject}/{baseline}"] = pair
    return found


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ratio(top: float | None, bottom: float | None) -> float | None:
    """``top / bottom`` rounded to 0.001, or None when either is missing or the bottom is zero."""
    if not is_number(top) or not is_number(bottom) or bottom == 0:
        return None
    return round(top / bottom, 3)


def ratios(scenarios: Mapping[str, Figures], keys: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """Every subject's figures divided by every baseline's, keyed ``"<subject>/<baseline>"``."""
    keys = list(keys)
    return {
        f"{subject}/{baseline}": {
            key: ratio(scenarios.get(subject, {}).get(key), scenarios.get(baseline, {}).get(key)) for key in keys
        }
        for subject in SUBJECTS
        for baseline in BASELINES
    }


def broken_share(broken: int, established: int) -> float | None:
    """Broken downloads over downloads established when the change was applied (None when none were)."""
    return round(broken / established, 4) if established else None


def targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The documented targets, each with its measured value and whether it is met (None when not measured)."""
    sections = report.get("sections", {})
    found: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        """One target line."""
        found.append({"target": name, "value": value, "goal": goal, "met": met if value is not None else None})

    conn_ratios = sections.get("connections", {}).get("ratios", {})
    for baseline, minimum in (("direct", 0.8), ("haproxy", 1.5)):
        value = conn_ratios.get(f"vip_switch/{baseline}", {}).get("rate")
        add(f"dispatch switch new conn/s / {baseline}", value, f">= {minimum}", value is not None and value >= minimum)
    thr_ratios = sections.get("throughput", {}).get("ratios", {})
    for subject in SUBJECTS:
        value = thr_ratios.get(f"{subject}/direct", {}).get("download_mbps")
        add(f"{SCENARIO_LABELS[subject]}: throughput / direct", value, ">= 0.95", value is not None and value >= 0.95)
    totals = sections.get("disruption", {}).get("totals", {})
    for subject in SUBJECTS:
        value = totals.get(subject, {}).get("broken_share")
        add(
            f"{SCENARIO_LABELS[subject]}: established connections broken by changes",
            value,
            "0",
            value is not None and value == 0,
        )
    memory = sections.get("scale", {}).get("memory", {})
    value = memory.get("bytes_per_connection")
    add(
        "controller memory per tracked connection (bytes)",
        value,
        f"<= {MEMORY_TARGET_BYTES}",
        value is not None and value <= MEMORY_TARGET_BYTES,
    )
    return found


def sanity_problems(report: Mapping[str, Any], sections: Iterable[str]) -> list[str]:
    """Figures of the given sections that are missing, not finite, or out of range (positive, or 0..1 for shares)."""
    found: list[str] = []
    data = report.get("sections", {})

    def need(path: str, value: Any, low: float = 0.0, allow_zero: bool = False, high: float = math.inf) -> None:
        """Record a problem unless ``low < value <= high`` (``low <= value`` with ``allow_zero``)."""
        in_range = is_number(value) and (value >= low if allow_zero else value > low) and value <= high
        if not in_range:
            found.append(f"{path}: {value!r}")

    for section in sections:
        if section not in data:
            found.append(f"{section}: missing")
            continue
        body = data[section]
        if section in REQUIRED_POSITIVE:
            for scenario in SCENARIOS:
                for key in REQUIRED_POSITIVE[section]:
                    need(f"{section}.{scenario}.{key}", body.get("scenarios", {}).get(scenario, {}).get(key))
            for pair, values in body.get("ratios", {}).items():
                for key in REQUIRED_POSITIVE[section]:
                    need(f"{section}.ratios.{pair}.{key}", values.get(key))
        elif section == "disruption":
            for subject in SUBJECTS:
                for change in CHANGES:
                    trial = body.get("trials", {}).get(subject, {}).get(change, {})
                    need(f"disruption.{subject}.{change}.established_at_change", trial.get("established_at_change"))
                    need(
                        f"disruption.{subject}.{change}.broken_share",
                        trial.get("broken_share"),
                        allow_zero=True,
                        high=1.0,
                    )
        elif section == "scale":
            memory, allotment, vips = body.get("memory", {}), body.get("allotment", {}), body.get("vips", {})
            for point in memory.get("points", []):
                need(f"scale.memory[{point.get('tracked')}].rss_bytes", point.get("rss_bytes"))
                need(f"scale.memory[{point.get('tracked')}].tracked_reported", point.get("tracked_reported"))
                need(f"scale.memory[{point.get('tracked')}].flow_entries", point.get("flow_entries"))
            if not memory.get("points"):
                found.append("scale.memory.points: none")
            need("scale.memory.bytes_per_connection", memory.get("bytes_per_connection"))
            need("scale.allotment.median_us", allotment.get("median_us"))
            need("scale.vips.apply_s", vips.get("apply_s"))
            need("scale.vips.flows_per_switch", vips.get("flows_per_switch"))
    return found


def cell(value: Any, fmt: str) -> str:
    """A formatted number, or a dash."""
    return fmt.format(value) if is_number(value) else "-"


def _scenario_table(section: Mapping[str, Any], rows: list[tuple[str, str, str]], names: Mapping[str, Any]) -> str:
    """Figures of every scenario and the ratios of both dispatch modes to both baselines, as a Markdown table."""
    pairs = [f"{s}/{b}" for s in SUBJECTS for b in BASELINES]
    short = {
        "vip_controller": "ctl",
        "vip_switch": "sw",
        "vip_switch_learn": "sw-learn",
        "direct": "direct",
        "haproxy": "HAProxy",
    }
    header = [
        "figure",
        *(SCENARIO_LABELS[s] for s in SCENARIOS),
        *(f"{short[p.split('/')[0]]}/{short[p.split('/')[1]]}" for p in pairs),
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for key, label, fmt in rows:
        cells = [cell(section.get("scenarios", {}).get(s, {}).get(key), fmt) for s in SCENARIOS]
        cells += [
            cell(None if key in NO_RATIO else section.get("ratios", {}).get(p, {}).get(key), "{:.2f}") for p in pairs
        ]
        lines.append(f"| {label.format(**names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _disruption_table(section: Mapping[str, Any]) -> str:
    """Broken / established downloads per change and dispatch mode."""
    lines = [
        "| change under load | " + " | ".join(SCENARIO_LABELS[s] for s in SUBJECTS) + " |",
        "|---" + "|---:" * len(SUBJECTS) + "|",
    ]
    for change in (*CHANGES, "all"):
        cells = []
        for subject in SUBJECTS:
            trial = (
                section.get("totals", {}).get(subject, {})
                if change == "all"
                else section.get("trials", {}).get(subject, {}).get(change, {})
            )
            share = trial.get("broken_share")
            cells.append(
                f"{trial.get('broken', '-')} of {trial.get('established_at_change', '-')}"
                f" ({cell(share * 100 if is_number(share) else None, '{:.1f}')} %)"
            )
        lines.append(f"| {change} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scale_table(section: Mapping[str, Any]) -> str:
    """Memory and flow entries per tracked-connection count, allotment time, many-VIP apply time."""
    lines = ["| figure | value | baseline | ratio |", "|---|---:|---:|---:|"]
    memory = section.get("memory", {})
    if memory:
        baseline_mb = memory.get("baseline_rss_bytes", 0) / 1e6
        lines.append(f"| controller RSS, no connection (MB) | {cell(baseline_mb, '{:.1f}')} | - | - |")
    for point in memory.get("points", []):
        lines.append(
            f"| controller RSS at {point['tracked']:,} tracked connections (MB); tracked, flow entries | "
            f"{cell(point.get('rss_bytes', 0) / 1e6, '{:.1f}')}; {point.get('tracked_reported')}, "
            f"{point.get('flow_entries')} | - | - |"
        )
    if memory:
        lines.append(
            f"| controller memory per tracked connection (bytes, slope between the two counts) | "
            f"{cell(memory.get('bytes_per_connection'), '{:.0f}')} | {MEMORY_TARGET_BYTES} (target) | "
            f"{cell(ratio(memory.get('bytes_per_connection'), MEMORY_TARGET_BYTES), '{:.2f}')} |"
        )
    allotment = section.get("allotment", {})
    if allotment:
        lines.append(
            f"| allotment recomputation, {allotment.get('endpoints')} endpoints, median µs "
            f"(baseline: `sorted()` of the candidates) | {cell(allotment.get('median_us'), '{:.0f}')} | "
            f"{cell(allotment.get('sorted_median_us'), '{:.0f}')} | "
            f"{cell(allotment.get('ratio_to_sorted'), '{:.1f}')} |"
        )
    vips = section.get("vips", {})
    if vips:
        lines.append(
            f"| {vips.get('count')} VIPs added through REST: seconds until every switch entry is in "
            f"(per VIP, ms) | {cell(vips.get('apply_s'), '{:.2f}')} "
            f"({cell(vips.get('per_vip_ms'), '{:.1f}')}) | - | - |"
        )
        lines.append(
            f"| standing flows per switch (no per-connection entries) with {vips.get('count')} more VIPs; "
            f"per VIP (baseline: before) | {cell(vips.get('flows_per_switch'), '{:.0f}')}; "
            f"{cell(vips.get('flows_per_vip'), '{:.1f}')} | "
            f"{cell(vips.get('flows_per_switch_before'), '{:.0f}')} | "
            f"{cell(ratio(vips.get('flows_per_switch'), vips.get('flows_per_switch_before')), '{:.1f}')} |"
        )
    return "\n".join(lines)


def _ratio_spread_table(sections: Mapping[str, Any]) -> str:
    """Every ratio computed round by round: median (min-max) over the rounds; empty when no section has them."""
    pairs = [f"{s}/{b}" for s in SUBJECTS for b in BASELINES]
    rows = [
        (section, key, label)
        for section, table in (("connections", CONNECTION_ROWS), ("throughput", THROUGHPUT_ROWS))
        for key, label, _ in table
        if key not in NO_RATIO and sections.get(section, {}).get("ratio_rounds")
    ]
    if not rows:
        return ""
    header = ["figure", *(pair.replace("vip_", "").replace("_", " ") for pair in pairs)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(pairs) + "|"]
    for section, key, label in rows:
        cells = []
        for pair in pairs:
            found = sections[section]["ratio_rounds"].get(pair, {}).get(key, {})
            cells.append(
                f"{cell(found.get('median'), '{:.2f}')} "
                f"({cell(found.get('min'), '{:.2f}')}-{cell(found.get('max'), '{:.2f}')})"
            )
        lines.append(f"| {label.split(' (')[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _targets_table(report: Mapping[str, Any]) -> str:
    """Every target with its value and verdict."""
    lines = ["| target | goal | measured | met |", "|---|---|---:|---|"]
    for item in targets(report):
        verdict = {True: "yes", False: "**no**", None: "-"}[item["met"]]
        lines.append(f"| {item['target']} | {item['goal']} | {cell(item['value'], '{:.3g}')} | {verdict} |")
    return "\n".join(lines)


def markdown(report: Mapping[str, Any]) -> str:
    """The whole report as Markdown: a heading line, the targets, one table per section, problems."""
    settings, env, sections = report.get("settings", {}), report.get("environment", {}), report.get("sections", {})
    names = {
        "clients": settings.get("clients"),
        "concurrency": settings.get("concurrency"),
        "mb": settings.get("download_bytes", 0) // 1_000_000,
    }
    parts = [
        f"nlb_sdn benchmark suite, {report.get('mode')} mode, {env.get('date', '?')}, commit "
        f"`{str(env.get('git_commit', ''))[:10]}`{' (dirty tree)' if env.get('git_dirty') else ''}, "
        f"{report.get('duration_s', '?')} s; medians of {settings.get('repeats')} round(s); lab "
        f"{settings.get('lab', '?')}; load average {env.get('loadavg_at_start', '?')} at the start, "
        f"{report.get('loadavg_at_end', '?')} at the end",
        "### Targets",
        _targets_table(report),
    ]
    if "connections" in sections:
        parts += ["### New connections", _scenario_table(sections["connections"], CONNECTION_ROWS, names)]
    if "throughput" in sections:
        parts += ["### Bulk throughput", _scenario_table(sections["throughput"], THROUGHPUT_ROWS, names)]
    spread_table = _ratio_spread_table(sections)
    if spread_table:
        parts += ["### Ratios round by round: median (min-max) over the rounds", spread_table]
    if report.get("profile"):
        parts += [
            "### Controller profile: loaded run through the dispatch-controller VIP",
            profile_table(report["profile"]),
        ]
    if "disruption" in sections:
        parts += ["### Disruption: established downloads broken per change", _disruption_table(sections["disruption"])]
    if "scale" in sections:
        parts += ["### Scale", _scale_table(sections["scale"])]
    if report.get("l7"):
        parts += [
            "### L7 VIP (router, migrated) against direct and HAProxy `mode http` (benchmarks/l7.py, its own lab)",
            str(report["l7"].get("markdown", "")).strip(),
        ]
    if report.get("problems"):
        parts += ["### Problems", "\n".join(f"- {line}" for line in report["problems"])]
    return "\n\n".join(parts) + "\n"


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """The PNG chart of a report (``benchmarks.suite.chart``, which needs matplotlib)."""
    from benchmarks.suite import chart

    chart.write_chart(report, path)
