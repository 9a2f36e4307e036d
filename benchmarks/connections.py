"""Benchmark: new connections per second, connect latency and bulk throughput, VIP vs direct vs a learning switch.

Run as root: ``.venv/bin/python benchmarks/connections.py [--quick] [--out benchmarks/results/connections.json]``.
Every scenario uses the same generator (``nlb-sdn-client``), the same SingleTopo lab (userspace OVS, tx offload off)
and the same load; ``benchmarks/README.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from nlb_sdn.lab import report as lab_report
from nlb_sdn.lab.harness import Lab
from nlb_sdn.lab.report import command_output
from topologies import SWITCH_OPTS, SingleTopo, lab_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "connections.json"
VIP = "10.0.0.100"
PORT = 80
IDLE_TIMEOUT = 15
WARMUP_CONCURRENCY = 4
COLLECT_MARGIN = 30.0
LEARNING_SWITCH_CMD = [
    sys.executable,
    "-m",
    "nlb_sdn.framework",
    "--ofp-tcp-listen-port",
    "{ofp_port}",
    "nlb_sdn.apps.learning_switch",
]
TABLE_MISS = re.compile(r"\bn_packets=(\d+),.*\bpriority=0 actions=CONTROLLER")
SCENARIOS = ("vip", "direct", "learning_switch")
BASELINES = ("direct", "learning_switch")

Counters = Callable[[], dict[str, int]]


@dataclass(frozen=True)
class Settings:
    """The load of one benchmark mode; every scenario runs exactly this."""

    repeats: int  # fresh labs per scenario; figures are medians over these
    clients: int  # client hosts generating load in parallel (and as many backends)
    count: int  # connections per client in the loaded run
    concurrency: int  # connections in flight per client in the loaded run
    run_timeout: float  # bound on every connections run, in seconds
    warmup_count: int  # connections per client before measuring (ARP, learning, code paths)
    idle_count: int  # connections of the one-in-flight latency run (first client only)
    download_bytes: int  # size of the bulk download (first client only)
    download_timeout: float  # bound on the download, in seconds (throughput counts the bytes received)


FULL = Settings(
    repeats=5,
    clients=3,
    count=2000,
    concurrency=32,
    run_timeout=30.0,
    warmup_count=10,
    idle_count=300,
    download_bytes=200_000_000,
    download_timeout=20.0,
)
QUICK = Settings(
    repeats=1,
    clients=3,
    count=300,
    concurrency=32,
    run_timeout=10.0,
    warmup_count=10,
    idle_count=100,
    download_bytes=20_000_000,
    download_timeout=5.0,
)

ROWS: list[tuple[str, str, str]] = [
    ("rate", "new connections/s ({clients} clients x {concurrency} in flight)", "{:.0f}"),
    ("connect_p50_ms", "connect p50 ms, loaded", "{:.2f}"),
    ("connect_p99_ms", "connect p99 ms, loaded", "{:.2f}"),
    ("idle_connect_p50_ms", "connect p50 ms, 1 in flight", "{:.2f}"),
    ("idle_connect_p99_ms", "connect p99 ms, 1 in flight", "{:.2f}"),
    ("download_mbps", "download Mbit/s ({mb} MB, 1 connection)", "{:.0f}"),
    ("packet_ins_per_connection", "packet-ins per connection, loaded", "{:.3f}"),
]


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, Any]:
    """What the figures depend on: OVS, kernel, CPUs, software versions, git commit, date and machine load."""
    return lab_report.environment(
        ovs_version=command_output(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "ovs_version"]).strip('"'),
        os_ken=importlib.metadata.version("os-ken"),
        mininet=importlib.metadata.version("mininet"),
    )


def pool(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pool parallel client summaries: ok over the longest elapsed time, ok-weighted mean p50, highest p99."""
    ok = sum(s["ok"] for s in summaries.values())
    elapsed = max(s["elapsed_s"] for s in summaries.values())
    error_kinds: dict[str, int] = {}
    for summary in summaries.values():
        for kind, n in summary["error_kinds"].items():
            error_kinds[kind] = error_kinds.get(kind, 0) + n
    timed = [s for s in summaries.values() if s["ok"] and s["connect_ms"]["p50"] is not None]
    return {
        "ok": ok,
        "errors": sum(s["errors"] for s in summaries.values()),
        "error_kinds": error_kinds,
        "elapsed_s": elapsed,
        "rate": round(ok / elapsed, 1) if elapsed > 0 else None,
        "connect_p50_ms": round(sum(s["connect_ms"]["p50"] * s["ok"] for s in timed) / sum(s["ok"] for s in timed), 3)
        if timed
        else None,
        "connect_p99_ms": max((s["connect_ms"]["p99"] for s in timed), default=None),
        "clients": summaries,
    }


def connections_run(lab: Lab, targets: dict[str, str], count: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """One ``connections`` client per client host (host to target), all in parallel; their pooled summary."""
    procs = {
        name: lab.start_client(
            name,
            [
                "connections",
                target,
                "--port",
                PORT,
                "--count",
                count,
                "--concurrency",
                concurrency,
                "--timeout",
                timeout,
            ],
        )
        for name, target in targets.items()
    }
    return pool({name: lab.collect_client(proc, timeout + COLLECT_MARGIN) for name, proc in procs.items()})


def measure(lab: Lab, targets: dict[str, str], settings: Settings, counters: Counters, label: str) -> dict[str, Any]:
    """One scenario: warm-up, download and one-at-a-time run from the first client, then the loaded run."""
    connections_run(lab, targets, settings.warmup_count, WARMUP_CONCURRENCY, settings.run_timeout)
    client, target = next(iter(targets.items()))
    download = lab.run_client(
        client,
        [
            "download",
            target,
            "--port",
            PORT,
            "--bytes",
            settings.download_bytes,
            "--timeout",
            settings.download_timeout,
        ],
        timeout=settings.download_timeout + COLLECT_MARGIN,
    )
    idle = connections_run(lab, {client: target}, settings.idle_count, 1, settings.run_timeout)
    before = counters()
    loaded = connections_run(lab, targets, settings.count, settings.concurrency, settings.run_timeout)
    after = counters()
    deltas = {key: after[key] - before[key] for key in after}
    figures = {
        "rate": loaded["rate"],
        "connect_p50_ms": loaded["connect_p50_ms"],
        "connect_p99_ms": loaded["connect_p99_ms"],
        "idle_connect_p50_ms": idle["connect_p50_ms"],
        "idle_connect_p99_ms": idle["connect_p99_ms"],
        "download_mbps": download["mbps"],
        "packet_ins_per_connection": round(deltas["packet_in"] / loaded["ok"], 4) if loaded["ok"] else None,
    }
    log(
        f"  {label}: {loaded['rate']} conn/s, p50 {loaded['connect_p50_ms']} ms, p99 {loaded['connect_p99_ms']} ms, "
        f"idle p50 {idle['connect_p50_ms']} ms, download {download['mbps']} Mbit/s "
        f"({download['bytes']} B), errors {loaded['errors'] + idle['errors']}, packet-ins {deltas['packet_in']}"
    )
    return {"figures": figures, "counter_deltas": deltas, "download": download, "idle": idle, "loaded": loaded}


def nlb_counters(lab: Lab) -> dict[str, int]:
    """The nlb controller's packet-in, flow-mod and packet-out counters from ``GET /v1/stats``."""
    stats = lab.rest("GET", "/v1/stats")
    packet_in = stats["packet_in"]
    return {
        "packet_in": packet_in.get("total", 0),
        "new_connection": packet_in.get("new_connection", 0),
        "arp": packet_in.get("arp", 0),
        "flow_mod": stats["flow_mod"],
        "packet_out": stats["packet_out"],
    }


def table_miss_counters(lab: Lab) -> dict[str, int]:
    """Packets sent to the controller by the learning switch's table-miss entries, summed over the switches."""
    total = 0
    for switch in lab.topo.data_switches():
        for line in lab.dump_flows(switch, table=0):
            match = TABLE_MISS.search(line)
            if match:
                total += int(match.group(1))
    return {"packet_in": total}


def direct_targets(topo: SingleTopo) -> dict[str, str]:
    """Client i connects straight to backend i (as many backends serve as behind the VIP)."""
    return {client: topo.host_ip(backend) for client, backend in zip(topo.clients, topo.backends, strict=True)}


def bench_nlb(settings: Settings, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Direct, then VIP, in a fresh lab with the nlb_sdn controller (direct first: no NAT entry exists yet)."""
    topo = SingleTopo(clients=settings.clients, backends=settings.clients)
    config = lab_config(
        topo,
        [{"name": "web", "address": VIP, "port": PORT, "idle_timeout": IDLE_TIMEOUT, "members": topo.members(PORT)}],
    )
    with Lab(topo, config, workdir=str(workdir), ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        counters = partial(nlb_counters, lab)
        direct = measure(lab, direct_targets(topo), settings, counters, "direct")
        vip = measure(lab, {client: VIP for client in topo.clients}, settings, counters, "vip")
    return vip, direct


def bench_learning_switch(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Direct in a fresh lab with the framework baseline app as the controller."""
    topo = SingleTopo(clients=settings.clients, backends=settings.clients)
    with Lab(
        topo,
        lab_config(topo, []),
        workdir=str(workdir),
        controller_cmd=LEARNING_SWITCH_CMD,
        ofp_port=free_port(),
        rest_port=free_port(),
    ) as lab:
        lab.wait_switches_connected()
        return measure(lab, direct_targets(topo), settings, partial(table_miss_counters, lab), "learning_switch")


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per figure, the median over the repetitions that produced it."""
    result: dict[str, float | None] = {}
    for key, _label, _fmt in ROWS:
        values = [r["figures"][key] for r in runs if r["figures"][key] is not None]
        result[key] = round(statistics.median(values), 4) if values else None
    return result


def ratios(figures: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """VIP figures divided by each baseline's (None where undefined)."""
    result: dict[str, dict[str, float | None]] = {}
    for baseline in BASELINES:
        result[f"vip/{baseline}"] = {}
        for key, _label, _fmt in ROWS:
            top, bottom = figures["vip"][key], figures[baseline][key]
            result[f"vip/{baseline}"][key] = round(top / bottom, 3) if top is not None and bottom else None
    return result


def table(report: dict[str, Any]) -> str:
    """The figures and ratios as a Markdown table."""
    settings = report["settings"]
    names = {
        "clients": settings["clients"],
        "concurrency": settings["concurrency"],
        "mb": settings["download_bytes"] // 1_000_000,
    }

    def cell(value: float | None, fmt: str) -> str:
        """A formatted number, or a dash."""
        return "-" if value is None else fmt.format(value)

    lines = [
        "| figure | VIP | direct | learning switch | VIP/direct | VIP/learning switch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, fmt in ROWS:
        cells = [cell(report["medians"][s][key], fmt) for s in SCENARIOS]
        cells += [cell(report["ratios"][f"vip/{b}"][key], "{:.2f}") for b in BASELINES]
        lines.append(f"| {label.format(**names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problems(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Failed connections and incomplete downloads, one line each."""
    found = []
    for scenario, scenario_runs in runs.items():
        for rep, result in enumerate(scenario_runs, 1):
            for kind in ("loaded", "idle"):
                if result[kind]["errors"]:
                    found.append(
                        f"{scenario} repetition {rep} {kind}: {result[kind]['errors']} failed connections "
                        f"{result[kind]['error_kinds']}"
                    )
            if not result["download"]["ok"]:
                found.append(
                    f"{scenario} repetition {rep} download: {result['download']['bytes']} bytes, "
                    f"{result['download']['error']}"
                )
    return found


def main(argv: list[str] | None = None) -> int:
    """Run every scenario, write the JSON report, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition: a sanity run under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the labs' logs here (default: a temporary directory, removed afterwards)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/connections.py needs root (Mininet and Open vSwitch)", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "connections",
        "mode": "quick" if args.quick else "full",
        "environment": environment(),
        "settings": {
            **asdict(settings),
            "topology": "single",
            "vip_idle_timeout_s": IDLE_TIMEOUT,
            "datapath": SWITCH_OPTS["datapath"],
            "tx_offload": "off",
            "port": PORT,
        },
    }
    workdir_cm = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir is not None
        else tempfile.TemporaryDirectory(prefix="nlb-bench-")
    )
    runs: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario in SCENARIOS}
    with workdir_cm as workdir:
        for rep in range(1, settings.repeats + 1):
            log(f"repetition {rep}/{settings.repeats}")
            vip, direct = bench_nlb(settings, Path(workdir) / f"nlb-{rep}")
            runs["vip"].append(vip)
            runs["direct"].append(direct)
            runs["learning_switch"].append(bench_learning_switch(settings, Path(workdir) / f"learning-switch-{rep}"))
    report["medians"] = {scenario: medians(scenario_runs) for scenario, scenario_runs in runs.items()}
    report["ratios"] = ratios(report["medians"])
    report["problems"] = problems(runs)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"nlb_sdn connections benchmark, {report['mode']} mode: median of {settings.repeats} repetition(s), "
        f"{report['environment']['date']}, commit {report['environment']['git_commit'][:10]}, "
        f"{report['duration_s']} s\n"
    )
    print(table(report))
    for line in report["problems"]:
        print(f"warning: {line}")
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
