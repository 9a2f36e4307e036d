"""Benchmark: stalls of the controller core: config-change and first H&L sync time against size, longest core call.

Run from the repository root, as any user (no Mininet, no switch):
``.venv/bin/python benchmarks/stalls.py [--quick | --smoke] [--out benchmarks/results/stalls.json]``.
Everything runs in-process against the controller core (``LoadBalancer``), as the classifier app drives it. Each
figure is measured at several sizes, so the growth curve shows whether a step is linear (exponent about 1) or
quadratic (about 2). ``PYTHONPATH=<other checkout>`` measures that checkout's ``nlb_sdn`` with the same procedure.
``benchmarks/README.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/stalls.py` from anywhere; after PYTHONPATH, which may name another
    sys.path.append(str(REPO))  # checkout's nlb_sdn to measure

import nlb_sdn  # noqa: E402 - after the path fix
from benchmarks.health import KEY, READY_AT, START, SYNC_AT, Agent, config_data, sync_datagrams, vip_of  # noqa: E402
from nlb_sdn import gcpolicy  # noqa: E402
from nlb_sdn.config import parse_config  # noqa: E402
from nlb_sdn.core.balancer import LoadBalancer  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "stalls.json"
DPIDS = (1, 2)
DISPATCHES = ("controller", "switch")
SYNC_SHAPES = (("vips_of_100", 100), ("one_vip", 0))
"""H&L sync shapes: VIPs of 100 agent members each, or one VIP holding every member (0: all of them)."""
CHANGE_AT = 10.0
APPLY_TARGET_S = 1.0
SYNC_TARGET_S = 2.0
CALL_TARGET_S = 0.1
TICK = 0.25
"""The classifier's tick period (s)."""
TICKS_AFTER_SYNC = 24
"""Ticks timed after a first sync: work a tick carries over (postulates, current states) is done within them."""
TICKS_AFTER_CHANGE = 4
"""Ticks timed after each config change (the first one after a change looks at the changed members again)."""
MEMBER_CHANGES = ("weight", "add", "remove")
"""The config changes timed: the middle member's weight, one member added, one removed."""
CALL_KINDS = (
    ("apply_config, dispatch controller", "config_change", "controller", "apply"),
    ("apply_config member add, dispatch controller", "config_change", "controller", "add"),
    ("apply_config member remove, dispatch controller", "config_change", "controller", "remove"),
    ("ticks after a change, dispatch controller", "config_change", "controller", "tick"),
    ("apply_config, dispatch switch", "config_change", "switch", "apply"),
    ("apply_config member add, dispatch switch", "config_change", "switch", "add"),
    ("apply_config member remove, dispatch switch", "config_change", "switch", "remove"),
    ("ticks after a change, dispatch switch", "config_change", "switch", "tick"),
    ("handle_datagram (first sync), VIPs of 100", "first_sync", "vips_of_100", "longest_datagram"),
    ("tick after the sync, VIPs of 100", "first_sync", "vips_of_100", "tick"),
    ("handle_datagram (first sync), one VIP", "first_sync", "one_vip", "longest_datagram"),
    ("tick after the sync, one VIP", "first_sync", "one_vip", "tick"),
)
"""Each kind of core call: its name, the part, the dispatch or shape of the rows, and the figure whose maximum it is."""


@dataclass(frozen=True)
class Settings:
    """The work of one benchmark mode."""

    config_sizes: tuple[int, ...]  # members of the one VIP whose members change
    sync_sizes: tuple[int, ...]  # hosts (one agent row each) of the first H&L sync
    repeats: int  # changes of each kind per size, and fresh syncs per size and shape


FULL = Settings(config_sizes=(1000, 5000, 20_000, 50_000), sync_sizes=(1000, 5000, 10_000), repeats=5)
QUICK = Settings(config_sizes=(1000, 5000), sync_sizes=(1000, 5000), repeats=3)
SMOKE = Settings(config_sizes=(20, 40, 80), sync_sizes=(20, 40, 80), repeats=2)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


def member_address(index: int) -> str:
    """A distinct unicast address 10.x.y.z for member ``index`` (up to 62,500 per /8 step)."""
    return f"10.{1 + index // 62_500}.{(index // 250) % 250}.{index % 250 + 1}"


def member_mac(index: int) -> str:
    """A locally administered MAC for member ``index``."""
    return "02:00:" + ":".join(f"{b:02x}" for b in index.to_bytes(4, "big"))


def change_config_data(members: int, dispatch: str, changed_weight: int) -> dict[str, Any]:
    """One VIP of ``members`` static members (each with its MAC) over two linked switches; the middle member's weight
    is ``changed_weight``, every other one's 1."""
    pool = [
        {
            "name": f"m{i:05d}",
            "address": member_address(i),
            "port": 8080,
            "mac": member_mac(i),
            "weight": changed_weight if i == members // 2 else 1,
        }
        for i in range(members)
    ]
    return {
        "vips": [{"name": "big", "address": "10.0.0.100", "port": 80, "dispatch": dispatch, "members": pool}],
        "fabric": {
            "switches": [{"name": "s1", "dpid": 1}, {"name": "s2", "dpid": 2}],
            "links": [{"a": "s1", "a_port": 1, "b": "s2", "b_port": 1}],
        },
    }


class Timed:
    """Wall and CPU time of one call (CPU time is what other work on the machine does not inflate)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        gc.collect()  # a full collection the previous step's garbage would set off is not this call's cost
        wall, cpu = time.perf_counter(), time.process_time()
        self.result = fn()
        self.wall_s = time.perf_counter() - wall
        self.cpu_s = time.process_time() - cpu


def spread(values: list[float]) -> dict[str, float]:
    """Median, minimum and maximum of some seconds."""
    return {
        "median_s": round(statistics.median(values), 6),
        "min_s": round(min(values), 6),
        "max_s": round(max(values), 6),
    }


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """The growth exponent k of t ~ N^k between the smallest and the largest size (1 linear, 2 quadratic)."""
    if len(sizes) < 2 or min(seconds[0], seconds[-1]) <= 0:
        return None
    return round(math.log(seconds[-1] / seconds[0]) / math.log(sizes[-1] / sizes[0]), 2)


# (a) A weight change of one big VIP.


def member_change_data(members: int, dispatch: str, kind: str, number: int) -> dict[str, Any]:
    """The config of one change of the ``kind`` (``MEMBER_CHANGES``) from ``change_config_data(members, dispatch,
    1)``: the middle member's weight, one member added at the end, or the member a third of the way removed."""
    if kind == "weight":
        return change_config_data(members, dispatch, 2 + number)
    data = change_config_data(members, dispatch, 1)
    pool = data["vips"][0]["members"]
    if kind == "add":
        index = members + 1 + number
        pool.append({"name": f"n{index:05d}", "address": member_address(index), "port": 8080, "mac": member_mac(index)})
    else:
        del pool[members // 3]
    return data


def timed_ticks(lb: LoadBalancer, now: float) -> tuple[float, float]:
    """The longest wall and CPU time of the ``TICKS_AFTER_CHANGE`` ticks after a change at ``now``."""
    ticks = [Timed(lambda k=k: lb.tick(now + (k + 1) * TICK, DPIDS)) for k in range(TICKS_AFTER_CHANGE)]
    return max(tick.wall_s for tick in ticks), max(tick.cpu_s for tick in ticks)


def bench_change(members: int, dispatch: str, repeats: int) -> dict[str, Any]:
    """``repeats`` changes of each kind (one member's weight, one member added, one removed) of a ``members``-member
    VIP, each from the first config and applied to two switches, with the ticks after it; the first config is
    applied back (untimed) after each add and remove."""
    base = parse_config(change_config_data(members, dispatch, 1))
    setup = Timed(lambda: LoadBalancer(base, now=START))
    lb: LoadBalancer = setup.result
    figures: dict[str, list[float]] = {}
    messages: dict[str, int] = {}
    now = CHANGE_AT
    for kind in MEMBER_CHANGES:
        for number in range(repeats):
            changed = Timed(lambda k=kind, n=number: parse_config(member_change_data(members, dispatch, k, n)))
            applied = Timed(lambda c=changed.result, t=now: lb.apply_config(c, dpids=DPIDS, now=t))
            tick_wall, tick_cpu = timed_ticks(lb, now)
            for name, value in (("", applied.wall_s), ("_cpu", applied.cpu_s), ("_parse", changed.wall_s)):
                figures.setdefault(f"{kind}{name}", []).append(value)
            figures.setdefault("tick", []).append(tick_wall)
            figures.setdefault("tick_cpu", []).append(tick_cpu)
            messages[kind] = sum(len(msgs) for msgs in applied.result.messages.values())
            now += 2.0
            if kind != "weight":
                lb.apply_config(base, dpids=DPIDS, now=now)
                timed_ticks(lb, now)
                now += 2.0
    calls = [*figures["weight"], *figures["add"], *figures["remove"], *figures["tick"]]
    calls_cpu = [*figures["weight_cpu"], *figures["add_cpu"], *figures["remove_cpu"], *figures["tick_cpu"]]
    result = {
        "members": members,
        "dispatch": dispatch,
        "parse_config": spread(figures["weight_parse"]),
        "first_config_s": round(setup.wall_s, 4),
        "apply": spread(figures["weight"]),
        "apply_cpu": spread(figures["weight_cpu"]),
        **{kind: spread(figures[kind]) for kind in ("add", "remove")},
        **{f"{kind}_cpu": spread(figures[f"{kind}_cpu"]) for kind in ("add", "remove")},
        "tick": spread(figures["tick"]),
        "tick_cpu": spread(figures["tick_cpu"]),
        "longest_call_s": round(max(calls), 6),
        "longest_call_cpu_s": round(max(calls_cpu), 6),
        "messages_per_change": messages["weight"],
        "messages": messages,
    }
    log(
        f"  {dispatch} {members}: apply median {result['apply']['median_s']:.4f} s "
        f"(cpu {result['apply_cpu']['median_s']:.4f}), add {result['add']['median_s']:.4f}, remove "
        f"{result['remove']['median_s']:.4f}, longest tick after {result['tick']['max_s']:.4f}, parse "
        f"{result['parse_config']['median_s']:.3f} s, first config {setup.wall_s:.2f} s, {messages} messages"
    )
    return result


# (b) The first H&L sync of many hosts.


def bench_sync(hosts: int, shape: str, per_vip: int, repeats: int) -> dict[str, Any]:
    """``repeats`` fresh controllers, each fed every host's first heartbeat and snapshot; then one tick."""
    per = per_vip or hosts
    walls, cpus, longest, ticks, ticks_cpu = [], [], [], [], []
    for _ in range(repeats):
        lb = LoadBalancer(parse_config(config_data(hosts, per, fabric_hosts=False)), KEY, START)
        datagrams = sync_datagrams([Agent(i, vip_of(i, per)) for i in range(hosts)], SYNC_AT)
        worst = 0.0

        def feed(lb: LoadBalancer = lb, datagrams: list[Any] = datagrams) -> int:
            nonlocal worst
            replies = 0
            for addr, data in datagrams:
                start = time.perf_counter()
                replies += len(lb.handle_datagram(data, addr, SYNC_AT).datagrams)
                worst = max(worst, time.perf_counter() - start)
            return replies

        synced = Timed(feed)
        walls.append(synced.wall_s)
        cpus.append(synced.cpu_s)
        longest.append(worst)
        timed_ticks = [Timed(lambda lb=lb, k=k: lb.tick(READY_AT + k * TICK)) for k in range(TICKS_AFTER_SYNC)]
        ticks.append(max(tick.wall_s for tick in timed_ticks))
        ticks_cpu.append(max(tick.cpu_s for tick in timed_ticks))
        if synced.result != hosts or len(lb.health.cache.hosts) != hosts:
            raise RuntimeError(f"sync {hosts} {shape}: {synced.result} replies, {len(lb.health.cache.hosts)} hosts")
        del lb, datagrams
    result = {
        "hosts": hosts,
        "shape": shape,
        "members_per_vip": per,
        "messages": 2 * hosts,
        "sync": spread(walls),
        "sync_cpu": spread(cpus),
        "longest_datagram": spread(longest),
        "tick": spread(ticks),
        "tick_cpu": spread(ticks_cpu),
        "longest_call_s": round(max(longest + ticks), 6),
    }
    log(
        f"  {shape} {hosts}: sync median {result['sync']['median_s']:.3f} s (cpu {result['sync_cpu']['median_s']:.3f})"
        f", longest datagram {result['longest_datagram']['max_s'] * 1000:.1f} ms, tick {max(ticks) * 1000:.1f} ms"
        f" (cpu {max(ticks_cpu) * 1000:.1f} ms)"
    )
    return result


def longest_calls(changes: list[dict[str, Any]], syncs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The longest single call of each kind at each size, and its growth exponent (a quadratic step shows as 2)."""
    parts = {"config_change": (changes, "dispatch", "members"), "first_sync": (syncs, "shape", "hosts")}
    found = []
    for name, part, variant, figure in CALL_KINDS:
        rows, variant_key, size_key = parts[part]
        chosen = [row for row in rows if row[variant_key] == variant]
        if not chosen:
            continue
        sizes, longest = [row[size_key] for row in chosen], [row[figure]["max_s"] for row in chosen]
        found.append(
            {
                "kind": name,
                "sizes": sizes,
                "longest_s": longest,
                "growth": exponent(sizes, longest),
                "met": max(longest) <= CALL_TARGET_S,
            }
        )
    return found


def growth(rows: list[dict[str, Any]], size_key: str, figure: str) -> float | None:
    """The growth exponent of a figure's median over the rows' sizes."""
    return exponent([row[size_key] for row in rows], [row[figure]["median_s"] for row in rows])


def _cells(values: Iterable[str]) -> str:
    return "| " + " | ".join(values) + " |"


def _spread_cell(figure: dict[str, float]) -> str:
    return f"{figure['median_s']:.4f} [{figure['min_s']:.4f}-{figure['max_s']:.4f}]"


def _change_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["### Changes of one member (median [min-max] s; apply to 2 switches; ticks: the longest of 4 after)", ""]
    figures = ("apply", "apply_cpu", "add", "remove", "parse_config", "tick", "tick_cpu")
    out.append(_cells(["dispatch", "members", "weight", "weight CPU", "add", "remove", "parse_config", "ticks after"]))
    out[-1] = out[-1][:-2] + " | ticks CPU | longest call | msgs |"
    out.append(_cells(["---", *("---:" for _ in range(len(figures) + 3))]))
    for row in rows:
        cells = [row["dispatch"], f"{row['members']:,}", *(_spread_cell(row[k]) for k in figures)]
        out.append(_cells([*cells, f"{row['longest_call_s']:.4f}", str(row["messages_per_change"])]))
    return out


def _sync_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["### First H&L sync (median [min-max] s)", ""]
    out.append(_cells(["shape", "hosts", "sync", "sync CPU", "longest datagram", "tick after", "longest call"]))
    out.append(_cells(["---", *("---:" for _ in range(6))]))
    for row in rows:
        figures = (_spread_cell(row[k]) for k in ("sync", "sync_cpu", "longest_datagram", "tick"))
        out.append(_cells([row["shape"], f"{row['hosts']:,}", *figures, f"{row['longest_call_s']:.4f}"]))
    return out


def _calls_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["### Longest single call per kind against N (s; goal 0.1 s each)", ""]
    out.append(_cells(["call", "N", "longest", "growth", "met"]))
    out.append(_cells(["---", "---:", "---:", "---:", "---"]))
    for row in rows:
        sizes = " / ".join(f"{size:,}" for size in row["sizes"])
        longest = " / ".join(f"{value:.4f}" for value in row["longest_s"])
        out.append(_cells([row["kind"], sizes, longest, str(row["growth"]), "yes" if row["met"] else "NO"]))
    return out


def tables(report: dict[str, Any]) -> str:
    """The parts as Markdown tables: member changes, first sync, the longest call per kind, the growth exponents."""
    out = _change_table(report["config_change"])
    if report["first_sync"]:
        out += ["", *_sync_table(report["first_sync"])]
    out += ["", *_calls_table(report["longest_calls"])]
    out += ["", "### Growth exponents (t ~ N^k, smallest to largest size; 1 linear, 2 quadratic)", ""]
    out += [f"- {name}: {value}" for name, value in report["growth"].items()]
    return "\n".join(out)


def run(settings: Settings, sync: bool = True) -> dict[str, Any]:
    """Both parts (the first sync only with ``sync``), their growth exponents and the targets."""
    log("changes of one member: weight, add, remove")
    changes = [bench_change(n, d, settings.repeats) for d in DISPATCHES for n in settings.config_sizes]
    log("first H&L sync" if sync else "first H&L sync skipped")
    sizes = settings.sync_sizes if sync else ()
    syncs = [bench_sync(n, s, per, settings.repeats) for s, per in SYNC_SHAPES for n in sizes]
    found: dict[str, float | None] = {}
    for dispatch in DISPATCHES:
        rows = [row for row in changes if row["dispatch"] == dispatch]
        found[f"apply, dispatch {dispatch}"] = growth(rows, "members", "apply_cpu")
        found[f"member add, dispatch {dispatch}"] = growth(rows, "members", "add_cpu")
        found[f"member remove, dispatch {dispatch}"] = growth(rows, "members", "remove_cpu")
        found[f"ticks after, dispatch {dispatch}"] = growth(rows, "members", "tick_cpu")
        found[f"parse_config, dispatch {dispatch}"] = growth(rows, "members", "parse_config")
    for shape, _per in SYNC_SHAPES if sync else ():
        found[f"first sync, {shape}"] = growth([row for row in syncs if row["shape"] == shape], "hosts", "sync_cpu")
    return {
        "config_change": changes,
        "first_sync": syncs,
        "longest_calls": longest_calls(changes, syncs),
        "growth": found,
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets at the largest sizes measured (figures from smaller runs are not comparable)."""
    largest_change = max(row["members"] for row in report["config_change"])
    apply_s = max(row["apply"]["median_s"] for row in report["config_change"] if row["members"] == largest_change)
    call_s = max(row["longest_call_s"] for row in report["config_change"] + report["first_sync"])
    found = [{"target": f"weight change, {largest_change} members", "goal_s": APPLY_TARGET_S, "measured_s": apply_s}]
    if report["first_sync"]:
        largest_sync = max(row["hosts"] for row in report["first_sync"])
        sync_s = max(row["sync"]["median_s"] for row in report["first_sync"] if row["hosts"] == largest_sync)
        found.append({"target": f"first H&L sync, {largest_sync} hosts", "goal_s": SYNC_TARGET_S, "measured_s": sync_s})
    found.append({"target": "longest single core call", "goal_s": CALL_TARGET_S, "measured_s": call_s})
    cpu_s = max(row["longest_call_cpu_s"] for row in report["config_change"])
    found.append(
        {"target": "longest single core call, CPU time of a change", "goal_s": CALL_TARGET_S, "measured_s": cpu_s}
    )
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the JSON report, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="two sizes, 3 repetitions (about a minute)")
    group.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks that everything works")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--no-sync", action="store_true", help="time the member changes only (no first H&L sync)")
    parser.add_argument(
        "--gc",
        choices=("freeze", "default"),
        default="freeze",
        help="freeze: the controller's policy (nlb_sdn.gcpolicy, the default); default: CPython's own",
    )
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    started = time.monotonic()
    if args.gc == "freeze":
        gcpolicy.freeze_survivors()
    report: dict[str, Any] = {
        "benchmark": "stalls",
        "mode": mode,
        "environment": lab_report.environment(
            msgpack=importlib.metadata.version("msgpack"), pydantic=importlib.metadata.version("pydantic")
        ),
        "nlb_sdn": str(Path(nlb_sdn.__file__).parent),
        "settings": asdict(MODES[mode]),
        "gc_policy": args.gc,
    }
    report.update(run(MODES[mode], sync=not args.no_sync))
    report["targets"] = [dict(t, met=t["measured_s"] <= t["goal_s"]) for t in targets(report)]
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"nlb_sdn stalls benchmark, {mode} mode, {report['nlb_sdn']}, {report['duration_s']} s\n")
    print(tables(report))
    for target in report["targets"]:
        verdict = "met" if target["met"] else "NOT met"
        print(f"target {target['target']}: {target['measured_s']:.4f} s (goal {target['goal_s']} s) {verdict}")
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
