"""Benchmark: new connections per second through the VIP with ``client_ip`` affinity against ``none``, in one run.

Run as root: ``.venv/bin/python benchmarks/affinity.py [--quick]``. Both VIP services live in the same SingleTopo lab
(port 80 without affinity, port 8080 with ``client_ip``), so the only difference measured is the session lookup and
bookkeeping on the packet-in path. Results: JSON in ``benchmarks/results/affinity.json`` and a printed table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nlb_sdn.lab.harness import Lab
from topologies import SingleTopo, lab_config

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "affinity.json"
VIP = "10.0.0.100"
PORTS = {"none": 80, "client_ip": 8080}


def run(lab: Lab, port: int, count: int, concurrency: int) -> dict[str, Any]:
    """All clients in parallel, ``count`` new connections each; pooled rate and latency."""
    procs = {
        c: lab.start_client(
            c, ["connections", VIP, "--port", port, "--count", count, "--concurrency", concurrency, "--timeout", 30]
        )
        for c in lab.topo.clients
    }
    summaries = {c: lab.collect_client(p, timeout=60) for c, p in procs.items()}
    ok = sum(s["ok"] for s in summaries.values())
    elapsed = max(s["elapsed_s"] for s in summaries.values())
    return {
        "rate": ok / elapsed if elapsed else 0.0,
        "ok": ok,
        "errors": sum(s["errors"] for s in summaries.values()),
        "connect_p50_ms": statistics.median(s["connect_ms"]["p50"] for s in summaries.values()),
        "connect_p99_ms": max(s["connect_ms"]["p99"] for s in summaries.values()),
    }


def main() -> int:
    """Measure both affinity kinds, alternating, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    repeats, count = (1, 300) if args.quick else (5, 2000)
    topo = SingleTopo(clients=3, backends=3)
    vips = [
        {"name": kind, "address": VIP, "port": port, "affinity": kind, "members": topo.members(port=port)}
        for kind, port in PORTS.items()
    ]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PORTS}
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="nlb-affinity-") as workdir,
        Lab(topo, lab_config(topo, vips), workdir=workdir) as lab,
    ):
        lab.wait_switches_connected()
        for port in PORTS.values():
            run(lab, port, 20, 4)
        for _ in range(repeats):
            for kind, port in PORTS.items():
                results[kind].append(run(lab, port, count, 32))
        stats = lab.rest("GET", "/v1/stats")
    medians = {
        kind: {key: statistics.median(r[key] for r in runs) for key in ("rate", "connect_p50_ms", "connect_p99_ms")}
        for kind, runs in results.items()
    }
    report = {
        "benchmark": "affinity",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repeats": repeats,
        "connections_per_client": count,
        "elapsed_s": round(time.time() - started, 1),
        "medians": medians,
        "ratio_client_ip_to_none": medians["client_ip"]["rate"] / medians["none"]["rate"],
        "sessions": stats["sessions"],
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("| affinity | new connections/s | connect p50 ms | connect p99 ms |")
    print("|---|---:|---:|---:|")
    for kind, figures in medians.items():
        print(f"| {kind} | {figures['rate']:.0f} | {figures['connect_p50_ms']:.2f} | {figures['connect_p99_ms']:.2f} |")
    print(f"\nclient_ip / none rate: {report['ratio_client_ip_to_none']:.2f}")
    print("note: with client_ip, each client's connections stay on one member; the rate is the controller's.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
