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
from nlb_sdn.config import Config, parse_config  # noqa: E402
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
CALL_KINDS = (
    ("apply_config, dispatch controller", "config_change", "controller", "apply"),
    ("tick after a change, dispatch controller", "config_change", "controller", "tick"),
    ("apply_config, dispatch switch", "config_change", "switch", "apply"),
    ("tick after a change, dispatch switch", "config_change", "switch", "tick"),
    ("handle_datagram (first sync), VIPs of 100", "first_sync", "vips_of_100", "longest_datagram"),
    ("tick after the sync, VIPs of 100", "first_sync", "vips_of_100", "tick"),
    ("handle_datagram (first sync), one VIP", "first_sync", "one_vip", "longest_datagram"),
    ("tick after the sync, one VIP", "first_sync", "one_vip", "tick"),
)
"""Each kind of core call: its name, the part, the dispatch or shape of the rows, and the figure whose maximum it is."""


@dataclass(frozen=True)
class Settings:
    """The work of one benchmark mode."""

    config_sizes: tuple[int, ...]  # members of the one VIP whose weight changes
    sync_sizes: tuple[int, ...]  # hosts (one agent row each) of the first H&L sync
    repeats: int  # weight changes per size, and fresh syncs per size and shape


FULL = Settings(config_sizes=(1000, 5000, 20_000), sync_sizes=(1000, 5000, 10_000), repeats=5)
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


def bench_change(members: int, dispatch: str, repeats: int) -> dict[str, Any]:
    """``repeats`` weight changes of one member of a ``members``-member VIP, each applied to two switches."""
    parse = Timed(lambda: parse_config(change_config_data(members, dispatch, 1)))
    setup = Timed(lambda: LoadBalancer(parse.result, now=START))
    lb: LoadBalancer = setup.result
    parses, applies, cpus, ticks, messages = [], [], [], [], 0
    for number in range(repeats):
        changed = Timed(lambda n=number: parse_config(change_config_data(members, dispatch, 2 + n)))
        config: Config = changed.result
        parses.append(changed.wall_s)
        now = CHANGE_AT + number
        applied = Timed(lambda c=config, t=now: lb.apply_config(c, dpids=DPIDS, now=t))
        applies.append(applied.wall_s)
        cpus.append(applied.cpu_s)
        messages = sum(len(msgs) for msgs in applied.result.messages.values())
        ticks.append(Timed(lambda t=now: lb.tick(t + 0.25, DPIDS)).wall_s)
    result = {
        "members": members,
        "dispatch": dispatch,
        "parse_config": spread(parses),
        "first_config_s": round(setup.wall_s, 4),
        "apply": spread(applies),
        "apply_cpu": spread(cpus),
        "tick": spread(ticks),
        "longest_call_s": round(max(applies + ticks), 6),
        "messages_per_change": messages,
    }
    log(
        f"  {dispatch} {members}: apply median {result['apply']['median_s']:.4f} s "
        f"(cpu {result['apply_cpu']['median_s']:.4f}), parse {result['parse_config']['median_s']:.3f} s, "
        f"first config {setup.wall_s:.2f} s, {messages} messages"
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


def tables(report: dict[str, Any]) -> str:
    """The two parts as Markdown tables."""
    out = ["### Weight change of one member (median [min-max] s; apply to 2 switches)", ""]
    out.append(_cells(["dispatch", "members", "apply", "apply CPU", "parse_config", "tick", "longest call", "msgs"]))
    out.append(_cells(["---", *("---:" for _ in range(7))]))
    for row in report["config_change"]:
        out.append(
            _cells(
                [
                    row["dispatch"],
                    f"{row['members']:,}",
                    *(
                        f"{row[k]['median_s']:.4f} [{row[k]['min_s']:.4f}-{row[k]['max_s']:.4f}]"
                        for k in ("apply", "apply_cpu", "parse_config", "tick")
                    ),
                    f"{row['longest_call_s']:.4f}",
                    str(row["messages_per_change"]),
                ]
            )
        )
    out += ["", "### First H&L sync (median [min-max] s)", ""]
    out.append(_cells(["shape", "hosts", "sync", "sync CPU", "longest datagram", "tick after", "longest call"]))
    out.append(_cells(["---", *("---:" for _ in range(6))]))
    for row in report["first_sync"]:
        out.append(
            _cells(
                [
                    row["shape"],
                    f"{row['hosts']:,}",
                    *(
                        f"{row[k]['median_s']:.4f} [{row[k]['min_s']:.4f}-{row[k]['max_s']:.4f}]"
                        for k in ("sync", "sync_cpu", "longest_datagram", "tick")
                    ),
                    f"{row['longest_call_s']:.4f}",
                ]
            )
        )
    out += ["", "### Longest single call per kind against N (s; goal 0.1 s each)", ""]
    out.append(_cells(["call", "N", "longest", "growth", "met"]))
    out.append(_cells(["---", "---:", "---:", "---:", "---"]))
    for row in report["longest_calls"]:
        out.append(
            _cells(
                [
                    row["kind"],
                    " / ".join(f"{size:,}" for size in row["sizes"]),
                    " / ".join(f"{value:.4f}" for value in row["longest_s"]),
                    str(row["growth"]),
                    "yes" if row["met"] else "NO",
                ]
            )
        )
    out += ["", "### Growth exponents (t ~ N^k, smallest to largest size; 1 linear, 2 quadratic)", ""]
    out += [f"- {name}: {value}" for name, value in report["growth"].items()]
    return "\n".join(out)


def run(settings: Settings) -> dict[str, Any]:
    """Both parts, their growth exponents and the targets."""
    log("weight change of one member")
    changes = [bench_change(n, d, settings.repeats) for d in DISPATCHES for n in settings.config_sizes]
    log("first H&L sync")
    syncs = [bench_sync(n, s, per, settings.repeats) for s, per in SYNC_SHAPES for n in settings.sync_sizes]
    found: dict[str, float | None] = {}
    for dispatch in DISPATCHES:
        rows = [row for row in changes if row["dispatch"] == dispatch]
        found[f"apply, dispatch {dispatch}"] = growth(rows, "members", "apply_cpu")
        found[f"parse_config, dispatch {dispatch}"] = growth(rows, "members", "parse_config")
    for shape, _per in SYNC_SHAPES:
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
    largest_sync = max(row["hosts"] for row in report["first_sync"])
    apply_s = max(row["apply"]["median_s"] for row in report["config_change"] if row["members"] == largest_change)
    sync_s = max(row["sync"]["median_s"] for row in report["first_sync"] if row["hosts"] == largest_sync)
    call_s = max(row["longest_call_s"] for row in report["config_change"] + report["first_sync"])
    return [
        {"target": f"weight change, {largest_change} members", "goal_s": APPLY_TARGET_S, "measured_s": apply_s},
        {"target": f"first H&L sync, {largest_sync} hosts", "goal_s": SYNC_TARGET_S, "measured_s": sync_s},
        {"target": "longest single core call", "goal_s": CALL_TARGET_S, "measured_s": call_s},
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the JSON report, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="two sizes, 3 repetitions (about a minute)")
    group.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks that everything works")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "stalls",
        "mode": mode,
        "environment": lab_report.environment(
            msgpack=importlib.metadata.version("msgpack"), pydantic=importlib.metadata.version("pydantic")
        ),
        "nlb_sdn": str(Path(nlb_sdn.__file__).parent),
        "settings": asdict(MODES[mode]),
    }
    report.update(run(MODES[mode]))
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
