"""Benchmark: new UDP flows per second beside new TCP connections per second through one controller, same run.

Run as root: ``.venv/bin/python benchmarks/udp_rate.py [--count 600] [--out benchmarks/results/udp_rate.json]``.
One fabric lab (3 clients, 3 backends), VIP web (TCP, 10.0.0.100:80) and VIP dns (UDP, 10.0.0.101:53), both in
``nat`` mode under controller dispatch: every new connection or flow costs one packet-in. Each round sends ``--count``
new TCP connections (``nlb-sdn-client connections``, ``--concurrency`` per client), then as many new UDP flows (one
request each, ``--concurrency`` query processes per client, every flow on its own source port), from all clients at
once; a rate is what all clients completed over the wall time of the round. Figures are medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from nlb_sdn.lab import udp_service
from nlb_sdn.lab.harness import Lab
from nlb_sdn.lab.report import environment
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "udp_rate.json"
TCP_VIP, UDP_VIP = "10.0.0.100", "10.0.0.101"
UDP_PORT, UDP_MEMBER_PORT = 53, 5353
FIRST_SPORT = 20000
COLLECT_TIMEOUT = 180.0


def tcp_round(lab: Lab, per_client: int, concurrency: int) -> dict[str, Any]:
    """``per_client`` new TCP connections from every client at once: completed, failed, rate per second."""
    started = time.monotonic()
    procs = [
        lab.start_client(
            client, ["connections", TCP_VIP, "--count", per_client, "--concurrency", concurrency, "--timeout", 120]
        )
        for client in lab.topo.clients
    ]
    summaries = [lab.collect_client(proc, timeout=COLLECT_TIMEOUT) for proc in procs]
    elapsed = time.monotonic() - started
    ok = sum(summary["ok"] for summary in summaries)
    return {"ok": ok, "failed": sum(s["errors"] for s in summaries), "rate": round(ok / elapsed, 1)}


def udp_round(lab: Lab, per_client: int, concurrency: int, sport: int) -> dict[str, Any]:
    """``per_client`` new UDP flows from every client at once (``concurrency`` query processes each)."""
    share = max(1, per_client // concurrency)
    started = time.monotonic()
    procs = [
        udp_service.start_client(
            lab, client, ["query", UDP_VIP, UDP_PORT, "--count", share, "--sport", sport + index * share]
        )
        for client in lab.topo.clients
        for index in range(concurrency)
    ]
    summaries = [lab.collect_client(proc, timeout=COLLECT_TIMEOUT) for proc in procs]
    elapsed = time.monotonic() - started
    ok = sum(summary["ok"] for summary in summaries)
    return {"ok": ok, "failed": sum(s["lost"] for s in summaries), "rate": round(ok / elapsed, 1)}


def run(count: int, concurrency: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """Every round, TCP then UDP, in one lab; the medians and each round's figures."""
    topo = FabricTopo(clients=3, backends=3)
    members = topo.members()
    udp_members = [member | {"port": UDP_MEMBER_PORT} for member in members]
    vips = [
        {"name": "web", "address": TCP_VIP, "port": 80, "members": members},
        {"name": "dns", "address": UDP_VIP, "port": UDP_PORT, "protocol": "udp", "members": udp_members},
    ]
    config = lab_config(topo, vips)
    per_client = count // len(topo.clients)
    results: dict[str, list[dict[str, Any]]] = {"tcp": [], "udp": []}
    with Lab(topo, config, workdir=str(workdir), ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        udp_service.start_responders(lab, UDP_MEMBER_PORT)
        for index in range(rounds):
            results["tcp"].append(tcp_round(lab, per_client, concurrency))
            # Each round's flows use fresh source ports: an earlier round's entries may not have idled out yet.
            results["udp"].append(udp_round(lab, per_client, concurrency, FIRST_SPORT + index * per_client))
        errors = lab.rest("GET", "/v1/stats")["errors"]
    return {
        "environment": environment(benchmark="udp_rate"),
        "settings": {"count": count, "concurrency": concurrency, "rounds": rounds, "clients": len(topo.clients)},
        "median_rate": {kind: statistics.median(r["rate"] for r in rows) for kind, rows in results.items()},
        "rounds": results,
        "controller_errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write its JSON (and print it)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=600, help="new connections (and flows) per round, all clients")
    parser.add_argument("--concurrency", type=int, default=4, help="connections or query processes per client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, default=Path("/root/nlb-udp-rate"))
    args = parser.parse_args(argv)
    report = run(args.count, args.concurrency, args.rounds, args.workdir)
    text = json.dumps(report, indent=2) + "\n"
    args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
