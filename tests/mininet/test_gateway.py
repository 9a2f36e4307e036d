"""Gateway uplinks end to end: a client behind a Linux router (not a fabric host) reaches VIPs through the uplink.

The router gw1 sits on the gateway port s1:2 and forwards between its client network (192.168.99.0/24, client x1)
and the fabric, which it reaches through the gateway's fabric-side address 172.16.0.1. Backends ask ARP for x1 and
get the gateway's MAC; table 3 routes their replies by prefix to the router's MAC (docs/fabric.md, "Gateways").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.gateway import configure_router, neighbour_mac, remote_connections
from tests.lib.lab import connections_of, needs_lab
from tests.lib.net import free_port
from topologies import lab_config
from topologies.gateway import GATEWAY_IP, GATEWAY_MAC, REMOTE_CLIENT_IP, ROUTER, GatewayTopo

pytestmark = [pytest.mark.mininet, needs_lab]

WEB = "10.0.0.100"
SWITCHED = "10.0.0.101"
WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
WEIGHT_SLOTS = {"h1": 26, "h2": 22, "h3": 16}  # 40/35/25 of 64 buckets, largest remainder


@pytest.fixture(scope="module")
def gateway_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The gateway lab: VIP web (controller dispatch) and VIP switched (switch dispatch), both 40/35/25."""
    topo = GatewayTopo(clients=1, backends=3)
    members = [member | {"weight": WEIGHTS[member["name"]]} for member in topo.members()]
    vips = [
        {"name": "web", "address": WEB, "port": 80, "idle_timeout": 5, "members": members},
        {"name": "switched", "address": SWITCHED, "port": 80, "dispatch": "switch", "members": members},
    ]
    config = lab_config(topo, vips)
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("gateway-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        configure_router(lab)
        wait_for(
            lambda: lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get("switched") == WEIGHT_SLOTS,
            timeout=20,
            what="the switched VIP's group at its weights",
        )
        yield lab


def assert_shares(served: dict[str, int], total: int, tolerance: float) -> None:
    """Each member served its weight's share of ``total`` connections, within ``tolerance`` points."""
    assert sum(served.values()) == total, served
    for name, weight in WEIGHTS.items():
        assert abs(100.0 * served.get(name, 0) / total - weight) <= tolerance, served


def test_a_client_behind_the_router_reaches_the_controller_dispatched_vip_by_weight(gateway_lab: Lab):
    summary = remote_connections(gateway_lab, WEB, 200)
    assert_shares(summary["served_by"], 200, 2.0)
    assert neighbour_mac(gateway_lab, ROUTER, GATEWAY_IP) == GATEWAY_MAC, "the router's next hop is the gateway"
    served_members = [name for name in WEIGHTS if neighbour_mac(gateway_lab, name, REMOTE_CLIENT_IP)]
    assert served_members, "members resolve the remote client"
    assert {neighbour_mac(gateway_lab, name, REMOTE_CLIENT_IP) for name in served_members} == {GATEWAY_MAC}
    remote = [row for row in connections_of(gateway_lab) if row["client"].startswith(f"{REMOTE_CLIENT_IP}:")]
    assert remote, "the controller tracks the remote client's connections under its own address"


def test_a_client_behind_the_router_reaches_the_switch_dispatched_vip_by_weight(gateway_lab: Lab):
    served: dict[str, int] = {}
    for _ in range(3):  # 3 x 300: the hash's own noise over 900 is about 1.6 points (one sigma)
        for name, hits in remote_connections(gateway_lab, SWITCHED, 300, concurrency=8)["served_by"].items():
            served[name] = served.get(name, 0) + hits
    assert_shares(served, 900, 5.0)
