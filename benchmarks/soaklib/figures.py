"""The soak's pure parts: memory growth from a warmed-up baseline, the connection table against the switches'
flows, broken streams, the targets and the Markdown report. No lab needed (``tests/unit/test_bench_soak.py``)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nlb_sdn.flows.pipeline import KIND_SHIFT, CookieKind

MEMORY_GROWTH_TARGET = 0.10
"""At most 10 % more RSS at the end than in the warmed-up baseline (issue 12 item 10)."""
COOKIE = re.compile(r"\bcookie=0x([0-9a-f]+)")
FIELD = re.compile(r"\b(nw_src|nw_dst|tp_src|tp_dst)=([0-9.]+)")


@dataclass(frozen=True)
class Sample:
    """One memory sample: seconds since the load started and the RSS in kB of each watched process."""

    at: float
    rss_kb: dict[str, int | None]


def median_rss(samples: Iterable[Sample], process: str, start: float, end: float) -> float | None:
    """The median RSS (kB) of ``process`` over the samples taken in ``[start, end)``; None without any."""
    values = [s.rss_kb[process] for s in samples if start <= s.at < end and s.rss_kb.get(process) is not None]
    return float(statistics.median(v for v in values if v is not None)) if values else None


def memory_growth(
    samples: list[Sample], process: str, baseline: tuple[float, float], final: tuple[float, float]
) -> dict[str, Any]:
    """Median RSS in the baseline window and in the final window, and the growth between them (a share)."""
    base = median_rss(samples, process, *baseline)
    end = median_rss(samples, process, *final)
    growth = (end - base) / base if base and end is not None else None
    return {
        "baseline_window_s": [round(baseline[0], 1), round(baseline[1], 1)],
        "final_window_s": [round(final[0], 1), round(final[1], 1)],
        "baseline_kb": base,
        "final_kb": end,
        "growth": None if growth is None else round(growth, 4),
        "peak_kb": max((s.rss_kb[process] or 0 for s in samples if s.rss_kb.get(process)), default=None),
    }


def nat_flow_keys(lines: Iterable[str], vip_addresses: set[str]) -> tuple[set[tuple[str, str]], set[str]]:
    """Per-connection entries of ``ovs-ofctl dump-flows`` lines (cookie kind NAT): the (client, VIP) pairs of the
    forward entries (client to a VIP) and the clients of the reverse entries (member to client), as ``ip:port``."""
    forward: set[tuple[str, str]] = set()
    reverse: set[str] = set()
    for line in lines:
        match = COOKIE.search(line)
        if match is None or int(match.group(1), 16) >> KIND_SHIFT != CookieKind.NAT:
            continue
        fields = dict(FIELD.findall(line))
        if fields.get("nw_dst") in vip_addresses:
            forward.add((f"{fields['nw_src']}:{fields['tp_src']}", f"{fields['nw_dst']}:{fields['tp_dst']}"))
        elif "nw_dst" in fields and "tp_dst" in fields:
            reverse.add(f"{fields['nw_dst']}:{fields['tp_dst']}")
    return forward, reverse


def compare_connections(
    tracked: Iterable[dict[str, Any]], forward: set[tuple[str, str]], reverse: set[str]
) -> dict[str, Any]:
    """The connection table (``/v1/connections`` entries) against the switches' per-connection entries.

    Leaked flows are entries of a connection the controller does not track (forward entries, and reverse entries
    whose client has no forward entry); untracked the other way round: tracked connections without a forward entry.
    """
    table = {(c["client"], c["vip_address"]) for c in tracked}
    clients = {client for client, _vip in forward}
    flows_without_connection = sorted(forward - table)
    orphan_reverse = sorted(reverse - clients)
    connections_without_flows = sorted(table - forward)
    return {
        "tracked": len(table),
        "forward_entries": len(forward),
        "reverse_entries": len(reverse),
        "flows_without_connection": [f"{c}->{v}" for c, v in flows_without_connection],
        "reverse_without_forward": orphan_reverse,
        "connections_without_flows": [f"{c}->{v}" for c, v in connections_without_flows],
        "leaked_flows": len(flows_without_connection) + len(orphan_reverse) + len(connections_without_flows),
        "equal": not flows_without_connection and not orphan_reverse and not connections_without_flows,
    }


def broken_streams(streams: list[dict[str, Any]]) -> dict[str, Any]:
    """Long-lived streams that did not carry every byte (errored, stalled or never reported), by outcome."""
    outcomes: dict[str, int] = {}
    for item in streams:
        outcome = str(item.get("outcome"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    broken = [s for s in streams if s.get("outcome") != "ok"]
    return {
        "streams": len(streams),
        "broken": len(broken),
        "outcomes": dict(sorted(outcomes.items())),
        "max_gap_s": max((float(s.get("max_gap_s") or 0.0) for s in streams), default=None),
        "broken_detail": [
            {k: s.get(k) for k in ("target", "served_by", "outcome", "bytes", "max_gap_s", "started", "ended")}
            for s in broken
        ],
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure beside its target: controller and ovs-vswitchd memory growth, leaked flows, broken, equality."""
    figures = report.get("figures", {})
    rows = []
    for process in ("controller", "ovs-vswitchd"):
        growth = figures.get("memory", {}).get(process, {}).get("growth")
        rows.append(
            _row(
                f"{process} memory growth",
                f"<= {MEMORY_GROWTH_TARGET:.0%}",
                growth,
                growth is not None and growth <= MEMORY_GROWTH_TARGET,
            )
        )
    comparison = figures.get("final_comparison", {})
    leaked = comparison.get("leaked_flows")
    rows.append(_row("leaked flows", "0", leaked, leaked == 0))
    broken = figures.get("long_lived", {}).get("broken")
    rows.append(_row("broken long-lived connections", "0", broken, broken == 0))
    equal = comparison.get("equal")
    rows.append(_row("connection table equals the switches' flows at the end", "yes", equal, equal is True))
    return rows


def _row(name: str, goal: str, measured: Any, met: bool) -> dict[str, Any]:
    """One target row."""
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def missing_figures(report: dict[str, Any]) -> list[str]:
    """The figures a complete report must hold that are missing (None): the smoke test's completeness check."""
    return [row["target"] for row in report.get("targets", []) if row["measured"] is None]


def _shown(value: Any, share: bool = False) -> str:
    """A figure for the Markdown table (``share``: as a percentage)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.1%}" if share else f"{value:g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: targets, then load, churn and memory figures, and the load average."""
    figures = report.get("figures", {})
    lines = [
        f"# Soak, {report.get('duration_s'):g} s of load (churn steps until {report.get('churn_ended_s')} s, "
        f"then {report.get('settle_wait_s', '-')} s for the idle timeouts)",
        "",
        f"{report['environment'].get('date')}, commit `{report['environment'].get('git_commit', '')[:7]}`; "
        f"load average at start {_loadavg(report['environment'].get('loadavg_at_start'))}, "
        f"at the end {_loadavg(report.get('loadavg_at_end'))}.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for row in report.get("targets", []):
        measured = _shown(row["measured"], "memory" in row["target"])
        lines.append(f"| {row['target']} | {row['goal']} | {measured} | {'yes' if row['met'] else '**no**'} |")
    lines += ["", "| figure | value |", "|---|---:|"]
    for name, value in summary_figures(figures):
        lines.append(f"| {name} | {_shown(value)} |")
    if report.get("problems"):
        lines += ["", "Problems:", ""] + [f"- {p}" for p in report["problems"]]
    return "\n".join(lines) + "\n"


def _loadavg(value: Any) -> str:
    """A load average triple as text."""
    return " / ".join(f"{v:.2f}" for v in value) if value else "-"


def summary_figures(figures: dict[str, Any]) -> list[tuple[str, Any]]:
    """The secondary figures as (name, value) rows."""
    short = figures.get("short", {})
    memory = figures.get("memory", {})
    long_lived = figures.get("long_lived", {})
    comparison = figures.get("final_comparison", {})
    restarts = figures.get("restarts", [])
    rows: list[tuple[str, Any]] = [
        ("short connections ok / failed", f"{short.get('ok')} / {short.get('errors')}"),
        ("short connection failures by VIP and kind", str(short.get("errors_by_target") or {})),
        ("new connections/s (mean over the load)", short.get("rate")),
        ("long-lived streams / broken", f"{long_lived.get('streams')} / {long_lived.get('broken')}"),
        ("longest gap in a long-lived stream (s)", long_lived.get("max_gap_s")),
        ("controller restarts (SIGTERM / SIGKILL)", figures.get("restarts_text")),
        ("seconds from each restart's signal until the switch was back", str([r.get("back_s") for r in restarts])),
        ("churn steps (failed REST calls)", figures.get("churn_text")),
        ("health flaps", figures.get("flaps")),
        ("tracked connections at the end / forward / reverse entries", _triple(comparison)),
        ("seconds until table and flows settled after the load", figures.get("settle_s")),
    ]
    for process, found in memory.items():
        rows.append(
            (
                f"{process} RSS kB: baseline / final / peak",
                f"{_kb(found.get('baseline_kb'))} / {_kb(found.get('final_kb'))} / {_kb(found.get('peak_kb'))}",
            )
        )
    return rows


def _triple(comparison: dict[str, Any]) -> str:
    """Tracked, forward and reverse counts."""
    return f"{comparison.get('tracked')} / {comparison.get('forward_entries')} / {comparison.get('reverse_entries')}"


def _kb(value: Any) -> str:
    """A kB figure without decimals."""
    return "-" if value is None else f"{value:.0f}"


def pool_short(summaries: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """The short connections of every chunk and client added up; the rate is successes over the load's seconds."""
    ok = sum(int(s.get("ok", 0)) for s in summaries)
    errors = sum(int(s.get("errors", 0)) for s in summaries)
    kinds: dict[str, int] = {}
    by_target: dict[str, dict[str, int]] = {}
    served: dict[str, int] = {}
    for summary in summaries:
        for kind, count in (summary.get("error_kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
            target = by_target.setdefault(str(summary.get("target")), {})
            target[kind] = target.get(kind, 0) + count
        for member, count in (summary.get("served_by") or {}).items():
            served[member] = served.get(member, 0) + count
    return {
        "runs": len(summaries),
        "ok": ok,
        "errors": errors,
        "error_kinds": dict(sorted(kinds.items())),
        "errors_by_target": dict(sorted(by_target.items())),
        "served_by": dict(sorted(served.items())),
        "rate": round(ok / load_s, 1) if load_s > 0 else None,
    }


def memory_windows(restarted_at: list[float], cycle_s: float, load_s: float) -> tuple[tuple[float, float], ...]:
    """The baseline window (warmed up: from 20 % of a cycle after the first restart's controller had its switches
    back, for 30 % of a cycle; the load's start when there was no restart) and the final window (the load's last 30 %
    of a cycle)."""
    width = 0.3 * cycle_s
    start = (restarted_at[0] if restarted_at else 0.0) + 0.2 * cycle_s
    return (start, start + width), (max(0.0, load_s - width), load_s + 0.01)
