"""The demo: bring up the fabric lab with the controller, make a few hundred connections to the VIP, print the shares.

Run as root: ``python -m nlb_sdn.lab.demo [--connections 300]`` (README command 1 wraps it). Teardown leaves no
namespace, bridge or process behind, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from nlb_sdn.lab import udp_service
from nlb_sdn.lab.harness import Lab
from topologies import FabricTopo, lab_config

VIP = "10.0.0.100"
WEIGHTS = {"h1": 1, "h2": 1, "h3": 2}
UDP_VIP = "10.0.0.101"
UDP_PORT, UDP_MEMBER_PORT = 53, 5353


def share_table(served: dict[str, int], weights: dict[str, int]) -> list[str]:
    """Rows comparing each member's share of connections with its share of the weight."""
    total = sum(served.values()) or 1
    weight_total = sum(weights.values())
    rows = [f"{'member':<8}{'weight':>8}{'expected':>10}{'served':>8}{'share':>9}{'delta':>8}"]
    for name, weight in weights.items():
        expected = 100.0 * weight / weight_total
        share = 100.0 * served.get(name, 0) / total
        rows.append(
            f"{name:<8}{weight:>8}{expected:>9.1f}%{served.get(name, 0):>8}{share:>8.1f}%{share - expected:>+7.1f}"
        )
    return rows


def run_demo(connections: int, workdir: str) -> int:
    """Run the demo lab end to end; return an exit status."""
    topo = FabricTopo(clients=3, backends=3)
    members = topo.members()
    for member in members:
        member["weight"] = WEIGHTS[member["name"]]
    udp_members = [member | {"port": UDP_MEMBER_PORT} for member in members]
    udp = {"name": "dns", "address": UDP_VIP, "port": UDP_PORT, "protocol": "udp", "members": udp_members}
    config = lab_config(topo, [{"name": "web", "address": VIP, "port": 80, "members": members}, udp])
    print(
        f"nlb_sdn demo: fabric lab (clients {', '.join(topo.clients)} on s1; backends "
        f"{', '.join(topo.backends)} on s2; cores s3, s4), VIP {VIP}:80, weights {WEIGHTS}"
    )
    with Lab(topo, config, workdir=workdir) as lab:
        lab.wait_switches_connected()
        print(f"controller up, switches connected: {lab.rest('GET', '/v1/stats')['switches']}")
        before = lab.rest("GET", "/v1/stats")["packet_in"]
        per_client = connections // len(topo.clients)
        procs = [
            lab.start_client(client, ["connections", VIP, "--count", per_client, "--concurrency", 4, "--timeout", 120])
            for client in topo.clients
        ]
        served: dict[str, int] = {}
        errors = 0
        for proc in procs:
            summary = lab.collect_client(proc, timeout=180)
            errors += summary["errors"]
            for name, count in summary["served_by"].items():
                served[name] = served.get(name, 0) + count
        stats = lab.rest("GET", "/v1/stats")
        after = stats["packet_in"]
        made = per_client * len(topo.clients)
        new = after.get("new_connection", 0) - before.get("new_connection", 0)
        conn_punts = (after.get("total", 0) - after.get("arp", 0)) - (before.get("total", 0) - before.get("arp", 0))
        print()
        print("\n".join(share_table(served, WEIGHTS)))
        print()
        print(f"connections made: {made}   answered: {sum(served.values())}   errors: {errors}")
        print(
            f"packet-ins for connections: {conn_punts}   new connections classified: {new}   "
            f"packet-ins per connection: {conn_punts / max(made, 1):.3f}"
        )
        print(
            f"flow-mods sent: {stats['flow_mod']}   packet-outs: {stats['packet_out']}   "
            f"controller errors: {sum(stats['errors'].values())}"
        )
        errors += udp_demo(lab, per_client)
        print("tearing down ...")
    print("done: no namespace, bridge or process left behind")
    return 0 if errors == 0 and sum(served.values()) == made else 1


def udp_demo(lab: Lab, per_client: int) -> int:
    """The same table for the UDP VIP: ``per_client`` new flows (one request each) from every client; lost ones."""
    udp_service.start_responders(lab, UDP_MEMBER_PORT)
    before = lab.rest("GET", "/v1/stats")["packet_in"]
    args = ["query", UDP_VIP, UDP_PORT, "--count", per_client, "--sport", 20000]
    procs = [udp_service.start_client(lab, client, args) for client in lab.topo.clients]
    served: dict[str, int] = {}
    lost = 0
    for proc in procs:
        summary = lab.collect_client(proc, timeout=180)
        lost += summary["lost"]
        for name, count in summary["served_by"].items():
            served[name] = served.get(name, 0) + count
    after = lab.rest("GET", "/v1/stats")["packet_in"]
    new = after.get("new_connection", 0) - before.get("new_connection", 0)
    print()
    print(f"UDP VIP {UDP_VIP}:{UDP_PORT} (a DNS-like request/response service, one request per flow)")
    print("\n".join(share_table(served, WEIGHTS)))
    print(f"flows made: {per_client * len(procs)}   answered: {sum(served.values())}   lost: {lost}")
    print(f"new flows classified (one packet-in each): {new}")
    return lost


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=300, help="total new connections (default 300)")
    parser.add_argument("--workdir", help="where to keep config and logs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.workdir:
        return run_demo(args.connections, args.workdir)
    with tempfile.TemporaryDirectory(prefix="nlb-sdn-demo-") as workdir:
        return run_demo(args.connections, workdir)


if __name__ == "__main__":
    sys.exit(main())
