"""IPv6 VIP services end to end in a dual-stack fabric lab: weights in controller and switch dispatch over real
clients and backends, neighbour discovery answered by the controller, and the connection rates of IPv6 beside IPv4.

Only this lab enables IPv6 on its hosts (``FabricTopo(ipv6=True)``: static fd00::<octet> addresses, no duplicate
address detection); every other lab keeps it off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import counter_delta, needs_lab, open_connections, packet_ins
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
CLIENTS = ("c1", "c2", "c3")
VIPS = {
    # name: (address, dispatch, member port)
    "web6": ("fd00::100", "controller", 80),
    "web6s": ("fd00::101", "switch", 8080),
    "web4": ("10.0.0.100", "controller", 80),
    "web4s": ("10.0.0.101", "switch", 8080),
}
SLOTS = {"h1": 26, "h2": 22, "h3": 16}  # 40/35/25 of 64 buckets
PER_CLIENT = 1000
RATES_FILE = Path(os.environ.get("NLB_IPV6_RATES", "/root/ipv6-rates.json"))
"""Where the measured connection rates go (outside /tmp: ``mn -c`` clears it)."""
RATES: dict[str, float] = {}


def vip(topo: FabricTopo, name: str) -> dict[str, object]:
    """One of VIPS over h1..h3 at 40/35/25, its members of the VIP's family."""
    address, dispatch, port = VIPS[name]
    members = [
        {
            "name": host,
            "address": topo.host_ipv6(host) if ":" in address else topo.host_ip(host),
            "port": port,
            "weight": weight,
        }
        for host, weight in WEIGHTS.items()
    ]
    return {"name": name, "address": address, "port": 80, "dispatch": dispatch, "idle_timeout": 5, "members": members}


@pytest.fixture(scope="module")
def ipv6_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The dual-stack fabric lab with an IPv4 and an IPv6 VIP in each dispatch mode."""
    topo = FabricTopo(clients=3, backends=3, ipv6=True)
    config = lab_config(topo, [vip(topo, name) for name in VIPS], switch_sync_period=0.5)
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("ipv6-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        wait_for(
            lambda: all(
                lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get(name) == SLOTS
                for name, (_address, dispatch, _port) in VIPS.items()
                if dispatch == "switch"
            ),
            timeout=20,
            what="every switch-dispatched VIP's group at its weights",
        )
        yield lab
    RATES_FILE.write_text(json.dumps(RATES, indent=2, sort_keys=True) + "\n")


def load(lab: Lab, name: str) -> dict[str, int]:
    """1,000 connections from each client to VIP ``name``: the members that served them; its rate in RATES."""
    served: dict[str, int] = {}
    rates = []
    for client in CLIENTS:
        summary = open_connections(lab, client, PER_CLIENT, concurrency=8, timeout=120, vip=VIPS[name][0])
        rates.append(summary["rate"])
        for member, hits in summary["served_by"].items():
            served[member] = served.get(member, 0) + hits
    RATES[name] = round(sum(rates) / len(rates), 1)
    return served


def assert_follows_weights(served: dict[str, int]) -> None:
    """Every connection served, each member's share within 3 points of its weight."""
    total = len(CLIENTS) * PER_CLIENT
    assert sum(served.values()) == total, served
    for member, weight in WEIGHTS.items():
        assert abs(100.0 * served.get(member, 0) / total - weight) <= 3.0, served


def test_an_ipv6_vip_in_controller_dispatch_follows_weights(ipv6_lab: Lab):
    before = packet_ins(ipv6_lab)
    assert_follows_weights(load(ipv6_lab, "web6"))
    delta = counter_delta(before, packet_ins(ipv6_lab))
    assert delta["new_connection"] == len(CLIENTS) * PER_CLIENT, delta
    assert delta.get("ndp", 0) >= 1, "the clients found the VIP through the controller's neighbour advertisements"
    assert ipv6_lab.rest("GET", "/v1/stats")["errors"] == {}


def test_an_ipv6_vip_in_switch_dispatch_follows_weights(ipv6_lab: Lab):
    before = packet_ins(ipv6_lab)
    assert_follows_weights(load(ipv6_lab, "web6s"))
    delta = counter_delta(before, packet_ins(ipv6_lab))
    assert delta.get("new_connection", 0) == 0, delta
    assert ipv6_lab.rest("GET", "/v1/stats")["errors"] == {}


@pytest.mark.parametrize("name", ["web4", "web4s"])
def test_ipv4_vips_beside_them_still_follow_weights(ipv6_lab: Lab, name: str):
    assert_follows_weights(load(ipv6_lab, name))
