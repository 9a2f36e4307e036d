"""Benchmark: the cost of tracked connections as the table grows to 1,000,000 (time per packet-in, bytes each).

Run from the repository root, as any user (no Mininet, no switch):
``.venv/bin/python benchmarks/scale.py [--quick | --smoke] [--out benchmarks/results/scale.json]``.
In-process against the controller core (``LoadBalancer``) with no switch: the SYNs of new connections to one
``dispatch: controller`` VIP go through ``handle_packet_in`` as the classifier app passes them, and the flow-mods it
returns are dropped. Two passes: the first times every packet-in (no tracing), the second grows a fresh table under
``tracemalloc`` and reads the traced bytes at each checkpoint, so the growth curves show a step that is not linear.
``benchmarks/README.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/scale.py` from anywhere; after PYTHONPATH, which may name another
    sys.path.append(str(REPO))  # checkout's nlb_sdn to measure

import nlb_sdn  # noqa: E402 - after the path fix
from benchmarks.stalls import exponent, member_mac  # noqa: E402
from nlb_sdn import gcpolicy  # noqa: E402
from nlb_sdn.config import parse_config  # noqa: E402
from nlb_sdn.core import frames  # noqa: E402
from nlb_sdn.core.balancer import LoadBalancer  # noqa: E402
from nlb_sdn.flows.pipeline import Table  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "scale.json"
VIP, VPORT, VIP_MAC = "10.0.0.100", 80, "02:4e:0a:00:00:64"
CLIENT_MAC = "00:00:00:00:00:01"
MEMBERS = 16
PORTS_PER_CLIENT = 50_000
BATCH = 10_000
"""SYN frames built ahead of one timed batch of packet-ins."""
BYTES_TARGET = 1024
PACKET_IN_TARGET_S = 0.1
"""No core call over 100 ms (issue 12 item 6), however full the table: a packet-in of a new connection included."""


@dataclass(frozen=True)
class Settings:
    """The work of one benchmark mode."""

    checkpoints: tuple[int, ...]  # table sizes at which the figures are read; the last is the largest
    max_seconds: float  # each pass stops at the first checkpoint past this (bounded in time)


FULL = Settings(checkpoints=(10_000, 100_000, 250_000, 500_000, 1_000_000), max_seconds=600.0)
QUICK = Settings(checkpoints=(10_000, 50_000, 100_000), max_seconds=120.0)
SMOKE = Settings(checkpoints=(1000, 2000, 4000), max_seconds=60.0)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
GC_POLICIES = ("freeze", "default")


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


def config_data(capacity: int) -> dict[str, Any]:
    """One controller-dispatched VIP of ``MEMBERS`` members (each with its MAC), room for ``capacity`` connections."""
    members = [
        {"name": f"m{i:02d}", "address": f"10.0.1.{i + 1}", "port": 8080, "mac": member_mac(i)} for i in range(MEMBERS)
    ]
    return {
        "controller": {"max_connections": capacity},
        "vips": [{"name": "big", "address": VIP, "port": VPORT, "members": members}],
        "fabric": {"switches": [{"name": "s1", "dpid": 1}], "links": []},
    }


def client_of(index: int) -> tuple[str, int]:
    """The distinct (client address, source port) of connection ``index``."""
    host, port = divmod(index, PORTS_PER_CLIENT)
    return f"172.{16 + host // 65_536 % 16}.{host // 256 % 256}.{host % 256 + 1}", 1024 + port


def syn_frames(start: int, count: int) -> Iterator[bytes]:
    """The SYNs that open connections ``start`` .. ``start + count - 1``."""
    for index in range(start, start + count):
        address, port = client_of(index)
        yield frames.tcp_frame(CLIENT_MAC, VIP_MAC, address, VIP, port, VPORT, frames.TCP_SYN, seq=index)


class Growth:
    """One controller whose table grows by batches of new connections."""

    def __init__(self, capacity: int) -> None:
        self.lb = LoadBalancer(parse_config(config_data(capacity)))
        self.tracked = 0
        self.busy_s = 0.0
        self.longest_s = 0.0

    def grow_to(self, size: int, timed: bool) -> None:
        """Feed new connections' SYNs until ``size`` are tracked (each packet-in timed when ``timed``)."""
        handle, now = self.lb.handle_packet_in, 1.0
        while self.tracked < size:
            count = min(BATCH, size - self.tracked)
            batch = list(syn_frames(self.tracked, count))
            for data in batch:
                if timed:
                    start = time.perf_counter()
                    handle(1, 1, data, len(data), Table.CONNECTIONS, now)
                    took = time.perf_counter() - start
                    self.busy_s += took
                    self.longest_s = max(self.longest_s, took)
                else:
                    handle(1, 1, data, len(data), Table.CONNECTIONS, now)
            self.tracked += count
        if len(self.lb.ctx.table) != self.tracked:
            raise RuntimeError(f"{len(self.lb.ctx.table)} connections tracked, {self.tracked} expected")


def time_pass(settings: Settings) -> list[dict[str, Any]]:
    """Time every packet-in while the table grows: the mean and the longest between checkpoints."""
    growth, rows, started = Growth(settings.checkpoints[-1]), [], time.monotonic()
    before = 0
    for size in settings.checkpoints:
        growth.busy_s, growth.longest_s = 0.0, 0.0
        growth.grow_to(size, timed=True)
        rows.append(
            {
                "connections": size,
                "packet_in_mean_us": round(growth.busy_s / (size - before) * 1e6, 2),
                "packet_in_longest_ms": round(growth.longest_s * 1000, 3),
            }
        )
        row = rows[-1]
        log(f"  time {size:,}: {row['packet_in_mean_us']} us a packet-in, longest {row['packet_in_longest_ms']} ms")
        before = size
        if time.monotonic() - started > settings.max_seconds:
            log(f"  time pass stopped after {settings.max_seconds} s")
            break
    return rows


def memory_pass(settings: Settings) -> list[dict[str, Any]]:
    """Traced bytes of the core as its table grows, per tracked connection."""
    gc.collect()
    tracemalloc.start()
    growth, rows, started = Growth(settings.checkpoints[-1]), [], time.monotonic()
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    for size in settings.checkpoints:
        growth.grow_to(size, timed=False)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - baseline
        rows.append({"connections": size, "traced_bytes": traced, "bytes_per_connection": round(traced / size, 1)})
        log(f"  memory {size:,}: {traced / 2**20:.1f} MiB, {rows[-1]['bytes_per_connection']} bytes each")
        if time.monotonic() - started > settings.max_seconds:
            log(f"  memory pass stopped after {settings.max_seconds} s")
            break
    tracemalloc.stop()
    del growth
    return rows


def table(report: dict[str, Any]) -> str:
    """Both passes side by side, as Markdown."""
    memory = {row["connections"]: row for row in report["memory"]}
    out = ["| tracked connections | packet-in mean (us) | longest packet-in (ms) | traced MiB | bytes each |"]
    out.append("| ---: | ---: | ---: | ---: | ---: |")
    for row in report["time"]:
        mem = memory.get(row["connections"], {})
        out.append(
            f"| {row['connections']:,} | {row['packet_in_mean_us']} | {row['packet_in_longest_ms']} | "
            + (f"{mem['traced_bytes'] / 2**20:.1f} | {mem['bytes_per_connection']} |" if mem else "- | - |")
        )
    out += ["", "Growth exponents (t ~ N^k from the smallest to the largest size; 0 flat, 1 linear):"]
    out += [f"- {name}: {value}" for name, value in report["growth"].items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run both passes, write the JSON report, print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="to 100,000 connections (about a minute)")
    group.add_argument("--smoke", action="store_true", help="to 4,000 connections (seconds): checks that it works")
    parser.add_argument(
        "--gc",
        choices=GC_POLICIES,
        default="freeze",
        help="freeze: the controller's policy (nlb_sdn.gcpolicy, the default); default: CPython's own, for comparison",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings, started = MODES[mode], time.monotonic()
    if args.gc == "freeze":
        gcpolicy.freeze_survivors()
    else:
        gcpolicy.default_policy()
    report: dict[str, Any] = {
        "benchmark": "scale",
        "mode": mode,
        "environment": lab_report.environment(pydantic=importlib.metadata.version("pydantic")),
        "nlb_sdn": str(Path(nlb_sdn.__file__).parent),
        "settings": asdict(settings),
        "gc_policy": args.gc,
    }
    log("time per packet-in")
    report["time"] = time_pass(settings)
    log("bytes per tracked connection (tracemalloc)")
    report["memory"] = memory_pass(settings)
    sizes = [row["connections"] for row in report["memory"]]
    report["growth"] = {
        "packet-in mean time": exponent(
            [row["connections"] for row in report["time"]], [row["packet_in_mean_us"] for row in report["time"]]
        ),
        "traced bytes": exponent(sizes, [float(row["traced_bytes"]) for row in report["memory"]]),
    }
    largest = report["memory"][-1]
    report["targets"] = [
        {
            "target": f"bytes per tracked connection at {largest['connections']:,}",
            "goal": BYTES_TARGET,
            "measured": largest["bytes_per_connection"],
            "met": largest["bytes_per_connection"] <= BYTES_TARGET,
        },
        {
            "target": "longest packet-in of a new connection (s)",
            "goal": PACKET_IN_TARGET_S,
            "measured": max(row["packet_in_longest_ms"] for row in report["time"]) / 1000,
            "met": max(row["packet_in_longest_ms"] for row in report["time"]) / 1000 <= PACKET_IN_TARGET_S,
        },
    ]
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    if not all(math.isfinite(row["bytes_per_connection"]) for row in report["memory"]):
        raise RuntimeError("a figure is not finite")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"nlb_sdn connection-scale benchmark, {mode} mode, gc {args.gc}, {report['nlb_sdn']}, "
        f"{report['duration_s']} s\n"
    )
    print(table(report))
    for target in report["targets"]:
        verdict = "met" if target["met"] else "NOT met"
        print(f"target {target['target']}: {target['measured']} (goal {target['goal']}) {verdict}")
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
